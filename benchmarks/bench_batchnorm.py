"""batchnorm_backward (node by node) against batchnorm_backward_alt (closed form).

    python benchmarks/bench_batchnorm.py [--shape 256 1024] [--repeats 50]

Prints the median time of each and the speedup of the closed form, measured in one run.
"""

import argparse
import timeit

import numpy as np

from convlab.layers import batchnorm_backward, batchnorm_backward_alt, batchnorm_forward


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=[256, 1024], metavar=("N", "D"))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    N, D = args.shape
    x = rng.standard_normal((N, D)).astype(args.dtype)
    gamma = rng.standard_normal(D).astype(args.dtype)
    beta = rng.standard_normal(D).astype(args.dtype)
    dout = rng.standard_normal((N, D)).astype(args.dtype)
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})

    medians = {}
    for fn in (batchnorm_backward, batchnorm_backward_alt):
        times = timeit.repeat(lambda fn=fn: fn(dout, cache), number=1, repeat=args.repeats)
        medians[fn.__name__] = float(np.median(times))
    step, alt = medians["batchnorm_backward"], medians["batchnorm_backward_alt"]
    print(f"shape ({N}, {D}) {args.dtype}, median of {args.repeats}")
    print(f"batchnorm_backward      {step * 1e3:8.3f} ms")
    print(f"batchnorm_backward_alt  {alt * 1e3:8.3f} ms")
    print(f"speedup                 {step / alt:8.2f}x")


if __name__ == "__main__":
    main()
