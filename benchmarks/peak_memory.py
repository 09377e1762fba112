"""Peak memory of one reference-net training step (batch 64 by default), convlab next to
PyTorch, each measured in a fresh process of its own: the growth of the process's peak
resident set (ru_maxrss) over a few steps, after the model and the batch exist.

    python benchmarks/peak_memory.py [--batch 64] [--threads 1]
"""

import argparse
import json
import os
import resource
import subprocess
import sys


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _convlab_steps(batch, steps):
    import numpy as np

    from convlab import optim
    from convlab.classifiers import ConvNet

    model = ConvNet("reference", seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(10, size=batch)
    configs = {name: {"learning_rate": 1e-3} for name in model.params}
    before = _peak_mib()
    for _ in range(steps):
        _, grads = model.loss(X, y)
        for name, w in model.params.items():
            model.params[name], configs[name] = optim.adam(w, grads[name], configs[name])
    return before, _peak_mib()


def _torch_steps(batch, steps):
    import torch
    import torch.nn.functional as F
    from torch import nn

    def block(ci, co):
        return [nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU()]

    net = nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2),
                        *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
                        *block(64, 128), *block(128, 128), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(128 * 16, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    X, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    before = _peak_mib()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(X), y).backward()
        opt.step()
    return before, _peak_mib()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", choices=["convlab", "torch"])
    args = parser.parse_args()
    if args.worker:
        if args.worker == "torch":
            import torch

            torch.set_num_threads(args.threads)
        run = _convlab_steps if args.worker == "convlab" else _torch_steps
        before, after = run(args.batch, args.steps)
        print("RESULT " + json.dumps({"before": before, "after": after}))
        return
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
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
