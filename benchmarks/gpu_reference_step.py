"""The reference-net training step on a GPU: convlab on CuPy next to PyTorch cuDNN (same
net, Adam, float32) and next to convlab on the CPU, each library in a fresh process of its
own, alternated over rounds, medians; with the peak GPU memory of each.

    python benchmarks/gpu_reference_step.py [--batches 64 128 512] [--rounds 3]
        [--cpu-threads 2] [--cpu-batch 128]

convlab's peak is what CuPy's memory pool holds after the steps (the pool keeps freed blocks,
so it is the most ever in use, rounded up to its block sizes); PyTorch's is
torch.cuda.max_memory_allocated(). Needs CuPy (pip install "convlab[gpu]") and, for the
comparison, a CUDA build of torch.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from reference_steps import (
    convlab_reference_step,
    median_time,
    thread_env,
    torch_reference_step,
)


def _worker(library, device, batch, reps):
    if library == "convlab":
        _, step = convlab_reference_step(batch, device)
    else:
        _, step = torch_reference_step(batch, threads=1, device=device)
    seconds = median_time(step, reps, warmup=3)
    peak = None
    if device != "cpu" and library == "convlab":
        import cupy

        peak = cupy.get_default_memory_pool().total_bytes()
    elif device != "cpu":
        import torch

        peak = torch.cuda.max_memory_allocated()
    return {"ms": seconds * 1e3, "peak_mib": None if peak is None else peak / 2**20}


def _run(library, device, batch, reps, threads):
    env = thread_env(threads) if device == "cpu" else dict(os.environ)
    out = subprocess.run([sys.executable, __file__, "--worker", library, "--device", device,
                          "--batch", str(batch), "--reps", str(reps)],
                         env=env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"{library} on {device} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[0][len("RESULT "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 512])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--cpu-batch", type=int, default=128,
                        help="the batch of the convlab CPU run (0: none)")
    parser.add_argument("--worker", choices=["convlab", "torch"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(_worker(args.worker, args.device, args.batch, args.reps)))
        return

    print("| batch | convlab GPU ms | PyTorch cuDNN ms | ratio | convlab peak MiB | "
          "PyTorch peak MiB |")
    print("|---|---|---|---|---|---|")
    gpu_ms = {}
    for batch in args.batches:
        runs = {"convlab": [], "torch": []}
        for _ in range(args.rounds):  # alternating, each in a fresh process
            for library in runs:
                runs[library].append(_run(library, "cuda", batch, args.reps, None))
        ms = {lib: statistics.median(r["ms"] for r in rs) for lib, rs in runs.items()}
        gpu_ms[batch] = ms["convlab"]
        print(f"| {batch} | {ms['convlab']:.1f} | {ms['torch']:.1f} | "
              f"{ms['convlab'] / ms['torch']:.2f} | {runs['convlab'][-1]['peak_mib']:.0f} | "
              f"{runs['torch'][-1]['peak_mib']:.0f} |")
    if args.cpu_batch:
        cpu = _run("convlab", "cpu", args.cpu_batch, 5, args.cpu_threads)["ms"]
        line = f"convlab CPU ({args.cpu_threads} threads), batch {args.cpu_batch}: {cpu:.0f} ms"
        if args.cpu_batch in gpu_ms:
            line += f"; the GPU step is {cpu / gpu_ms[args.cpu_batch]:.0f}x faster"
        print(line)


if __name__ == "__main__":
    main()
