"""The reference-net training step (forward + backward + Adam) in convlab and in PyTorch,
shared by the benchmarks that run each library in a process of its own: ConvNet('reference')
(six conv3-bn-relu blocks, three 2x2 max pools, one affine layer) and the same network and
optimiser in PyTorch. Each builder returns (model, step) with step() one training step;
on device 'cuda' step() waits for the GPU to finish, so wall time measures the work."""

import os
import statistics
import time


def thread_env(threads):
    """The environment for a benchmark process of ``threads`` threads: the OpenMP, OpenBLAS
    and MKL pools read these when they start."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


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


def convlab_reference_step(batch, device="cpu"):
    import numpy as np

    from convlab import optim
    from convlab.backend import to_device
    from convlab.classifiers import ConvNet

    model = ConvNet("reference", seed=0).to(device)
    rng = np.random.default_rng(0)
    # The batch is made on the host and copied once: the step measures the training work.
    X = to_device(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), device)
    y = to_device(rng.integers(10, size=batch), device)
    configs = {name: {"learning_rate": 1e-3} for name in model.params}
    synchronize = lambda: None  # noqa: E731 (the CPU computes in the call)
    if device != "cpu":
        import cupy

        synchronize = cupy.cuda.get_current_stream().synchronize

    def step():
        _, grads = model.loss(X, y)
        for name, w in model.params.items():
            model.params[name], configs[name] = optim.adam(w, grads[name], configs[name])
        synchronize()

    return model, step


def torch_reference_step(batch, threads, device="cpu"):
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
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    X = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    synchronize = torch.cuda.synchronize if device != "cpu" else (lambda: None)

    def step():
        opt.zero_grad()
        F.cross_entropy(net(X), y).backward()
        opt.step()
        synchronize()

    return net, step
