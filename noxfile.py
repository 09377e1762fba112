"""The version matrix CI runs after the README's test command: ``python3 -m nox``.

Every session builds convlab from source into its own virtual environment (a wheel, not an
editable install, so the sessions never overwrite each other's compiled extension or the one
in the working tree) and runs the whole suite from a scratch directory, so the installed
package is what gets tested.

| session                      | Python | NumPy  | OpenMP | threads |
|------------------------------|--------|--------|--------|---------|
| tests-3.10 ... tests-3.13    | each   | newest | yes    | 1 on 3.10 and 3.12, 2 on 3.11 and 3.13 |
| oldest_numpy                 | 3.10   | 1.26   | yes    | 2       |
| no_openmp                    | 3.12   | newest | no     | 2       |

The interpreters come from pyenv (``pyenv root``/versions) when it is installed, else PATH.
"""

import glob
import os
import shutil
import subprocess
import tempfile

import nox

nox.options.sessions = ["tests", "oldest_numpy", "no_openmp"]
nox.options.error_on_missing_interpreters = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
THREADS = {"3.10": 1, "3.11": 2, "3.12": 1, "3.13": 2}
OLDEST_NUMPY = "1.26.*"  # pyproject's lower bound


def _pyenv_interpreters_on_path():
    """Put each pyenv version's bin directory on PATH so nox finds python3.X by name."""
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return
    root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
    dirs = []
    for version in PYTHONS:
        found = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin")))
        dirs += found[-1:]
    os.environ["PATH"] = os.pathsep.join([*dirs, os.environ.get("PATH", "")])


_pyenv_interpreters_on_path()


def _run_suite(session, threads, *pins):
    """Install convlab (built with the session's environment) and ``pins``, run every test."""
    # setuptools keeps build/ between builds; a module built by an older tree would be
    # packed into this session's wheel.
    shutil.rmtree("build", ignore_errors=True)
    session.install(".[test]", *pins)
    env = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    root = os.getcwd()
    scratch = tempfile.mkdtemp(prefix=f"convlab-{session.name}-")
    with session.chdir(scratch):
        session.run("python", "-c", "import convlab, numpy; print('convlab from', "
                    "convlab.__file__, 'with NumPy', numpy.__version__)")
        session.run("pytest", "-c", os.path.join(root, "pyproject.toml"), "--rootdir", root,
                    "-p", "no:cacheprovider", "-m", "not readme", os.path.join(root, "tests"),
                    env=env)
    shutil.rmtree(scratch, ignore_errors=True)


@nox.session(python=PYTHONS)
def tests(session):
    _run_suite(session, THREADS[session.python])


@nox.session(python="3.10")
def oldest_numpy(session):
    # The extension is built against the newest NumPy in pip's build environment; NumPy 2's
    # headers target the 1.x ABI too, which is what this session proves.
    _run_suite(session, 2, f"numpy=={OLDEST_NUMPY}")


@nox.session(python="3.12")
def no_openmp(session):
    session.env["CONVLAB_NO_OPENMP"] = "1"
    _run_suite(session, 2)
