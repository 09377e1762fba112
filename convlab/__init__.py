"""convlab: a readable NumPy deep-learning library in the style of CS231n."""

import os

# The compiled kernels alternate with OpenBLAS GEMMs; OpenMP's default busy-waiting idle
# threads would steal the GEMM's cores, so convlab.fast_layers only runs its loops in
# parallel under a passive wait policy. It must be in the environment before the OpenMP
# runtime loads; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from convlab.serialization import load_model, save_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["load_model", "save_model"]
