# cython: boundscheck=False, wraparound=False, cdivision=True
"""Placeholder while the kernels are written."""
