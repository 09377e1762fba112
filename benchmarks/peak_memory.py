"""Peak memory of one reference-net training step (batch 64 by default), convlab next to
PyTorch, each measured in a fresh process of its own: the growth of the process's peak
resident set (ru_maxrss) over a few steps, after the model and the batch exist.

    python benchmarks/peak_memory.py [--batch 64] [--threads 1]
"""

import argparse
import json
import resource
import subprocess
import sys

from reference_steps import convlab_reference_step, thread_env, torch_reference_step


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _steps(library, batch, threads, steps):
    """(peak before, peak after) ``steps`` reference steps of ``library``, in MiB."""
    if library == "convlab":
        _, step = convlab_reference_step(batch)
    else:
        _, step = torch_reference_step(batch, threads)
    before = _peak_mib()
    for _ in range(steps):
        step()
    return before, _peak_mib()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", choices=["convlab", "torch"])
    args = parser.parse_args()
    if args.worker:
        before, after = _steps(args.worker, args.batch, args.threads, args.steps)
        print("RESULT " + json.dumps({"before": before, "after": after}))
        return
    env = thread_env(args.threads)
    print(f"reference net, batch {args.batch}, {args.threads} thread(s): peak RSS growth "
          "over the steps (MiB)")
    for library in ("convlab", "torch"):
        out = subprocess.run([sys.executable, __file__, "--worker", library, "--batch",
                              str(args.batch), "--threads", str(args.threads), "--steps",
                              str(args.steps)], env=env, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            print(f"{library}: failed\n{out.stderr[-2000:]}")
            continue
        result = json.loads(lines[0][7:])
        print(f"| {library} | {result['after'] - result['before']:.0f} | "
              f"(process peak {result['after']:.0f}) |")


if __name__ == "__main__":
    main()
