"""Time per epoch of the ``reference`` ConvNet preset: convlab against PyTorch CPU (if installed).

Usage:
    python benchmarks/bench_convnet.py [--batch 64] [--threads 2] [--repeats 10]

One training iteration is forward + backward + an Adam update on a random batch; the time per
epoch is the median iteration times the iterations in an epoch of ``--train-size`` examples
(45,000: the CIFAR-10 recipe). Both libraries are measured in the same run, and convlab's
time is broken down by layer kind to show where the epoch goes.
"""

import argparse
import os
import time
from collections import defaultdict


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=45000)
    return parser.parse_args()


ARGS = parse_args()
# Thread pools read these when they start, so they are set before numpy or torch load.
for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[name] = str(ARGS.threads)

import numpy as np  # noqa: E402

from convlab import optim  # noqa: E402
from convlab.classifiers import ConvNet  # noqa: E402
from convlab.classifiers.convnet import LayerTimes  # noqa: E402

try:
    import torch
    from torch import nn
except ImportError:
    torch = None


def median_ms(step, repeats, warmup=2):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def convlab_step(batch):
    rng = np.random.default_rng(0)
    model = ConvNet("reference", seed=0)
    X = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(10, size=batch)
    configs = {name: {"learning_rate": 1e-3} for name in model.params}

    def step():
        _, grads = model.loss(X, y)
        for name, w in model.params.items():
            model.params[name], configs[name] = optim.adam(w, grads[name], configs[name])

    return step, model


def torch_step(batch):
    torch.set_num_threads(ARGS.threads)
    torch.manual_seed(0)

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU()]

    net = nn.Sequential(
        *block(3, 32), *block(32, 32), nn.MaxPool2d(2),
        *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
        *block(64, 128), *block(128, 128), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 4 * 4, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    X = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        opt.step()

    return step


def layer_breakdown(batch, repeats):
    """Share of convlab's iteration spent in each layer kind, forward and backward together,
    measured through the model's LayerTimes hook."""
    step, model = convlab_step(batch)
    step()  # warm up
    model.layer_times = LayerTimes()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    total = time.perf_counter() - start
    spent = defaultdict(float)
    for (kind, _phase), seconds in model.layer_times.seconds.items():
        spent[kind] += seconds
    spent["loss, update and glue"] = total - sum(spent.values())
    return {kind: seconds / total for kind, seconds in sorted(spent.items(), key=lambda kv: -kv[1])}


def main():
    iterations = -(-ARGS.train_size // ARGS.batch)
    print(f"reference preset, float32, batch {ARGS.batch}, {ARGS.threads} threads, "
          f"{iterations} iterations per epoch of {ARGS.train_size}, median of {ARGS.repeats}\n")
    ours = median_ms(convlab_step(ARGS.batch)[0], ARGS.repeats)
    print("| library | iteration (ms) | epoch (s) | ratio to PyTorch |")
    print("|---|---|---|---|")
    theirs = median_ms(torch_step(ARGS.batch), ARGS.repeats) if torch is not None else None
    ratio = f"{ours / theirs:.2f}x" if theirs else "n/a"
    print(f"| convlab | {ours:.1f} | {ours * iterations / 1e3:.0f} | {ratio} |")
    if theirs:
        print(f"| PyTorch {torch.__version__} CPU | {theirs:.1f} | {theirs * iterations / 1e3:.0f} "
              "| 1.00x |")
    else:
        print("| PyTorch | not installed (pip install torch) | | |")

    print("\n| convlab layer kind | share of iteration |\n|---|---|")
    for kind, share in layer_breakdown(ARGS.batch, ARGS.repeats).items():
        print(f"| {kind} | {100 * share:.1f}% |")


if __name__ == "__main__":
    main()
