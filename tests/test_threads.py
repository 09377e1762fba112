"""The kernels' thread policy (convlab._threads): decided where the kernels load, no change
to the process environment, single-threaded under a foreign busy-waiting OpenMP runtime."""

import json
import os
import subprocess
import sys

import pytest

from convlab import _threads

PROBE = """
import json, os, sys
before = dict(os.environ)
for name in sys.argv[1:]:
    __import__(name)
import convlab
after_convlab = dict(os.environ)
from convlab import fast_layers
print(json.dumps({
    "convlab_changed_env": after_convlab != before,
    "kernels_changed_env": dict(os.environ) != before,
    "threads": fast_layers._kernels.get_num_threads(),
    "openmp": fast_layers._kernels.openmp_enabled(),
}))
"""


def probe(*first_imports, **env):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    environment.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE, *first_imports], env=environment,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_import_leaves_the_environment_alone():
    result = probe(OMP_NUM_THREADS="3")
    assert not result["convlab_changed_env"] and not result["kernels_changed_env"]
    # Nothing else started an OpenMP runtime: the kernels' own waits passively.
    assert result["threads"] == (3 if result["openmp"] else 1)


def test_user_choices_are_honoured():
    result = probe(OMP_WAIT_POLICY="passive", OMP_NUM_THREADS="2")
    assert result["threads"] == (2 if result["openmp"] else 1)


def test_a_foreign_openmp_runtime_keeps_the_kernels_serial():
    pytest.importorskip("torch")
    # torch exports its libgomp globally, started with the default (spinning) wait policy.
    assert probe("torch", OMP_NUM_THREADS="2")["threads"] == 1
    result = probe("torch", OMP_NUM_THREADS="2", OMP_WAIT_POLICY="passive")
    assert result["threads"] == (2 if result["openmp"] else 1)


def test_requested_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5,2")
    assert _threads.requested_threads() == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")
    assert _threads.requested_threads() == _threads._cpu_count()
