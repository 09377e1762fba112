"""Build the Cython extension; everything else lives in pyproject.toml.

OpenMP is used when the compiler accepts it (gcc, clang with libomp) and silently
dropped otherwise (e.g. Apple clang), because the kernels are correct either way.
"""

import glob
import os
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_FLAGS = ["-fopenmp"]


def _compiler_accepts_openmp(compiler):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=OPENMP_FLAGS)
            compiler.link_executable(
                objects, "omp_probe", output_dir=tmp, extra_postargs=OPENMP_FLAGS
            )
        except Exception:
            return False
    return True


class BuildExtMaybeOpenMP(build_ext):
    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        use_openmp = os.environ.get("CONVLAB_NO_OPENMP") != "1" and (
            msvc or _compiler_accepts_openmp(self.compiler)
        )
        for ext in self.extensions:
            if msvc:
                ext.extra_compile_args += ["/O2"] + (["/openmp"] if use_openmp else [])
            else:
                # -fno-trapping-math lets gcc turn float compares into selects
                # (the branchless 2x2 max pool); it does not reassociate or drop NaN/inf.
                # -fno-math-errno lets it vectorise sqrt (the optimizer updates): no
                # kernel reads errno.
                ext.extra_compile_args += ["-O3", "-fno-trapping-math", "-fno-math-errno"]
                ext.extra_compile_args += OPENMP_FLAGS if use_openmp else []
                ext.extra_link_args += OPENMP_FLAGS if use_openmp else []
        super().build_extensions()


# Builds before 0.2 compiled convlab/fast_layers.pyx in place; such a leftover
# fast_layers*.so would shadow convlab/fast_layers.py on import, so it is removed.
for stale in glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "convlab",
                                    "fast_layers*.so")):
    os.remove(stale)

extensions = [
    Extension(
        "convlab._kernels",
        ["convlab/_kernels.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3"},
    ),
    cmdclass={"build_ext": BuildExtMaybeOpenMP},
)
