"""The course's compiled ``cs231n/im2col_cython`` module path; the kernels live in
:mod:`convlab.fast_layers` (and ``convlab._kernels``)."""

from convlab.fast_layers import col2im_cython, im2col_cython

__all__ = ["col2im_cython", "im2col_cython"]
