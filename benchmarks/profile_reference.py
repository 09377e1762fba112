"""Where a reference-net training step spends its time: convlab's step split by layer kind,
next to the whole PyTorch step, each library in a fresh process of its own with its own
defaults, alternated over rounds, medians.

    python benchmarks/profile_reference.py [--threads 1] [--batch 64] [--rounds 3] [--reps 7]

The step is forward + backward + Adam on ConvNet('reference') (six conv3-bn-relu blocks,
three max pools, one affine layer) and the same network in PyTorch. convlab's layer kinds
are timed with ConvNet.layer_times (a fused bn+relu pair counts as 'bn+relu'); the rest of
its step (loss, Adam, glue) is the step's time minus theirs.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

from reference_steps import convlab_reference_step, median_time, thread_env, torch_reference_step


def _convlab(batch, reps):
    from convlab.classifiers.convnet import LayerTimes

    model, step = convlab_reference_step(batch)
    result = {"step": median_time(step, reps)}
    # The split comes from its own profiled steps: their total, not the median above, is
    # what the layer kinds' times add up to.
    model.layer_times = LayerTimes()
    start = time.perf_counter()
    for _ in range(reps):
        step()
    result["profiled step"] = (time.perf_counter() - start) / reps
    for (kind, phase), seconds in model.layer_times.seconds.items():
        result[f"{kind} {phase}"] = seconds / reps
    return result


def _torch(batch, reps, threads):
    _, step = torch_reference_step(batch, threads)
    return {"step": median_time(step, reps)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--worker", choices=["convlab", "torch"])
    args = parser.parse_args()
    if args.worker:
        result = (_convlab(args.batch, args.reps) if args.worker == "convlab"
                  else _torch(args.batch, args.reps, args.threads))
        print("RESULT " + json.dumps(result))
        return
    env = thread_env(args.threads)
    env.pop("OMP_WAIT_POLICY", None)
    runs = {"convlab": [], "torch": []}
    for r in range(args.rounds):
        for library in ("convlab", "torch") if r % 2 == 0 else ("torch", "convlab"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", library, "--threads", str(args.threads),
                 "--batch", str(args.batch), "--reps", str(args.reps)],
                env=env, capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if not lines:
                sys.exit(f"{library} worker failed:\n{out.stderr[-3000:]}")
            runs[library].append(json.loads(lines[0][7:]))

    def median_ms(library, key):
        return statistics.median(run.get(key, 0.0) for run in runs[library]) * 1e3

    convlab_step, torch_step = median_ms("convlab", "step"), median_ms("torch", "step")
    print(f"reference-net step, batch {args.batch}, {args.threads} thread(s), "
          f"{args.rounds} rounds, medians (ms)")
    print(f"| step | convlab {convlab_step:.1f} | PyTorch {torch_step:.1f} | ratio "
          f"{convlab_step / torch_step:.2f}x |")
    profiled = median_ms("convlab", "profiled step")
    print(f"| convlab layer kind | ms | share of a profiled step ({profiled:.1f} ms) |\n"
          "|---|---|---|")
    kinds = sorted((key for key in runs["convlab"][0] if key not in ("step", "profiled step")),
                   key=lambda key: -median_ms("convlab", key))
    for key in kinds:
        ms = median_ms("convlab", key)
        print(f"| {key} | {ms:.1f} | {ms / profiled:.0%} |")
    rest = profiled - sum(median_ms("convlab", key) for key in kinds)
    print(f"| loss, Adam and glue | {rest:.1f} | {rest / profiled:.0%} |")


if __name__ == "__main__":
    main()
