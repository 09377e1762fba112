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
import os
import statistics
import subprocess
import sys
import time


def _median_time(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _convlab(batch, reps):
    import numpy as np

    from convlab import optim
    from convlab.classifiers import ConvNet
    from convlab.classifiers.convnet import LayerTimes

    model = ConvNet("reference", seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(10, size=batch)
    configs = {name: {"learning_rate": 1e-3} for name in model.params}

    def step():
        _, grads = model.loss(X, y)
        for name, w in model.params.items():
            model.params[name], configs[name] = optim.adam(w, grads[name], configs[name])

    result = {"step": _median_time(step, reps)}
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
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def block(ci, co):
        return [nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU()]

    net = nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2),
                        *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
                        *block(64, 128), *block(128, 128), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(128 * 16, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    X, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        F.cross_entropy(net(X), y).backward()
        opt.step()

    return {"step": _median_time(step, reps)}


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
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
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
