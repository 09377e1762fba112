"""The training command: outputs, bad arguments, and resume after a kill or Ctrl-C."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from convlab import load_model
from convlab.train import main

TINY_RUN = [
    "--data", "builtin", "--builtin-size", "600", "100", "100", "--model", "fc",
    "--hidden-dims", "64", "--batch-size", "50", "--lr", "2e-3", "--quiet",
]


def read_metrics(out):
    with open(os.path.join(out, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_cli_writes_checkpoint_model_metrics_and_curves(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main([*TINY_RUN, "--epochs", "2", "--out", out]) == 0
    for name in ("config.json", "checkpoint.npz", "metrics.csv", "curves.png", "model.npz"):
        assert os.path.exists(os.path.join(out, name)), name
    rows = read_metrics(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    printed = capsys.readouterr().out
    assert "Best validation accuracy" in printed and "Test accuracy" in printed
    model = load_model(os.path.join(out, "model.npz"))
    assert model.params["W1"].shape == (3 * 32 * 32, 64)


def test_cli_reports_bad_arguments(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main([*TINY_RUN, "--update-rule", "adamw", "--out", str(tmp_path / "r")]) == 2
    assert "adamw" in capsys.readouterr().err
    assert main([*TINY_RUN, "--model", "nosuchnet", "--out", str(tmp_path / "r")]) == 2
    assert "nosuchnet" in capsys.readouterr().err
    assert main(["--resume", "--out", str(tmp_path / "empty")]) == 2
    assert "no config.json" in capsys.readouterr().err


def _start_run(out, epochs):
    return subprocess.Popen(
        [sys.executable, "-m", "convlab.train", *TINY_RUN, "--epochs", str(epochs), "--out", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_epochs(out, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    path = os.path.join(out, "metrics.csv")
    while time.monotonic() < deadline:
        if os.path.exists(path) and len(read_metrics(out)) >= n:
            return
        assert proc.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError("training made no progress")


def _assert_same_final_state(out_a, out_b):
    keep = ("epoch", "train_loss", "train_acc", "val_acc")
    assert [{k: r[k] for k in keep} for r in read_metrics(out_a)] == [
        {k: r[k] for k in keep} for r in read_metrics(out_b)
    ]
    a = load_model(os.path.join(out_a, "model.npz"))
    b = load_model(os.path.join(out_b, "model.npz"))
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl_c"])
def test_interrupted_run_resumes_to_same_numbers(how, tmp_path):
    epochs = 6
    reference = str(tmp_path / "reference")
    assert main([*TINY_RUN, "--epochs", str(epochs), "--out", reference]) == 0

    out = str(tmp_path / "interrupted")
    proc = _start_run(out, epochs)
    _wait_for_epochs(out, 2, proc)
    proc.send_signal(how)
    code = proc.wait(timeout=60)
    assert code == (130 if how == signal.SIGINT else -signal.SIGKILL)
    assert len(read_metrics(out)) < epochs

    assert main(["--resume", "--out", out]) == 0
    _assert_same_final_state(reference, out)


@pytest.mark.parametrize(
    "flags", [["--model", "fc", "--dropout-keep", "0.5"],
              ["--model", "conv3-4,relu,dropout0.5,gap,fc10"]], ids=["fc", "convnet"]
)
def test_cli_models_train_with_fresh_dropout_masks(flags, rng):
    from convlab.run import build_model
    from convlab.solver import Solver
    from convlab.train import build_parser, config_from_args

    model = build_model(config_from_args(build_parser().parse_args(flags)), (3, 8, 8), 10)
    X, y = rng.standard_normal((8, 3, 8, 8)), np.arange(8) % 10
    fixed = {model.loss(X, y)[0] for _ in range(3)}
    assert len(fixed) == 1  # the model's seed fixes its masks, for gradient checks

    class Losses:
        def __init__(self):
            self.losses = []

        def on_step_end(self, solver):
            self.losses.append(model.loss(X, y)[0])

    losses = Losses()
    data = {"X_train": X, "y_train": y, "X_val": X, "y_val": y}
    Solver(model, data, optim_config={"learning_rate": 0.0}, num_epochs=3, batch_size=8,
           verbose=False, seed=0, callbacks=[losses]).train()
    assert len(set(losses.losses)) == 3  # while the Solver trains, every step draws a mask
    assert {model.loss(X, y)[0] for _ in range(2)} == fixed  # and afterwards they are fixed
