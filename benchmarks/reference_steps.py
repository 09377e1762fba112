"""The reference-net training step (forward + backward + Adam) in convlab and in PyTorch,
shared by the benchmarks that run each library in a process of its own: ConvNet('reference')
(six conv3-bn-relu blocks, three 2x2 max pools, one affine layer) and the same network and
optimiser in PyTorch. Each builder returns (model, step) with step() one training step."""

import statistics
import time


def median_time(fn, reps, warmup=2):
    """Median wall time (s) of fn() over reps calls, after warmup calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def convlab_reference_step(batch):
    import numpy as np

    from convlab import optim
    from convlab.classifiers import ConvNet

    model = ConvNet("reference", seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(10, size=batch)
    configs = {name: {"learning_rate": 1e-3} for name in model.params}

    def step():
        _, grads = model.loss(X, y)
        for name, w in model.params.items():
            model.params[name], configs[name] = optim.adam(w, grads[name], configs[name])

    return model, step


def torch_reference_step(batch, threads):
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

    return net, step
