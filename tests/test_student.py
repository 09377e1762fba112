"""What a student meets first: the README's commands, the CLI's help and verbosity, logs,
TensorBoard, Ctrl-C, the initial loss, model.save / load, and docstrings for everything."""

import argparse
import csv
import importlib
import inspect
import math
import os
import pkgutil
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convlab.classifiers import ConvNet, FullyConnectedNet, ThreeLayerConvNet
from convlab.data import load_builtin_dataset
from convlab.run import RunConfig, build_model, run
from convlab.solver import StopNow
from convlab.train import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--data", "builtin", "--builtin-size", "300", "100", "100", "--model", "fc",
        "--hidden-dims", "16", "--batch-size", "50", "--epochs", "2"]


# ----------------------------------------------------------------------------- the first run


def test_default_model_starts_at_log_num_classes_without_a_spike():
    data = load_builtin_dataset(640, 10, 10, seed=0)
    config = RunConfig()
    model = build_model(config, data["X_train"].shape[1:], 10)
    X, y = data["X_train"][:64], data["y_train"][:64]
    assert model.loss(X, y)[0] == pytest.approx(math.log(10), abs=0.05)
    from convlab.solver import Solver

    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": config.lr},
                    batch_size=64, num_epochs=1, verbose=False, seed=0, shuffle=True)
    solver.train()
    assert max(solver.loss_history) < math.log(10) + 0.5  # no early spike


@pytest.mark.parametrize("model", [
    lambda: FullyConnectedNet([32, 32], input_dim=3 * 16 * 16, weight_scale=None, seed=0),
    lambda: ThreeLayerConvNet(input_dim=(3, 16, 16), weight_scale=None, seed=0),
    lambda: ConvNet("reference", input_dim=(3, 16, 16), seed=0),
    lambda: ConvNet("resnet_small", input_dim=(3, 16, 16), seed=0),
])
def test_he_initialised_models_start_at_log_num_classes(model, rng):
    X = rng.standard_normal((32, 3, 16, 16))
    assert model().loss(X, rng.integers(10, size=32))[0] == pytest.approx(math.log(10), abs=0.05)


# ----------------------------------------------------------------------------- the CLI


def test_help_documents_every_option_with_its_default():
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"
               and a.default is not argparse.SUPPRESS and a.const is None]
    assert text.count("(default:") >= len(options)
    assert "(default: threelayer)" in text and "(default: 0.001)" in text


def _run_cli(flags, tmp_path, capsys):
    assert main([*TINY, *flags, "--out", str(tmp_path / "run")]) == 0
    return capsys.readouterr().out


def test_verbosity_modes_and_clean_output_when_not_a_terminal(tmp_path, capsys):
    silent = _run_cli(["--verbose", "0"], tmp_path / "v0", capsys)
    assert "(Epoch" not in silent and "(Iteration" not in silent
    assert "Best validation accuracy" in silent
    per_epoch = _run_cli(["--verbose", "2"], tmp_path / "v2", capsys)
    epoch_lines = [line for line in per_epoch.splitlines() if line.startswith("(Epoch")]
    assert len(epoch_lines) == 3 and "(Iteration" not in per_epoch
    assert re.search(r"\(Epoch 2 / 2\) train acc: [\d.]+; val_acc: [\d.]+ - train_loss [\d.]+ - "
                     r"val_loss [\d.]+ - lr [\d.e-]+ - [\d.]+s", per_epoch)
    bar = _run_cli(["--verbose", "1"], tmp_path / "v1", capsys)
    assert "(Iteration 1 / 12)" in bar
    for out in (silent, per_epoch, bar):  # captured output is not a TTY: no bar redraws
        assert "\r" not in out and max(map(len, out.splitlines())) < 200


def test_metrics_have_val_loss_learning_rate_and_epoch_time(tmp_path, capsys):
    _run_cli(["--quiet"], tmp_path, capsys)
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for row in rows:
        assert float(row["val_loss"]) > 0 and float(row["learning_rate"]) > 0
        assert float(row["epoch_s"]) >= 0


def test_tensorboard_logs_are_readable_by_tensorboard(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    logdir = tmp_path / "tb"
    _run_cli(["--quiet", "--tensorboard", str(logdir)], tmp_path, capsys)
    events = accumulator.EventAccumulator(str(logdir), size_guidance={"histograms": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/acc", "val/acc", "val/loss", "learning_rate"} <= set(
        tags["scalars"])
    assert len(events.Scalars("train/loss")) == 12 and len(events.Scalars("val/acc")) == 2
    assert "weights/W1" in tags["histograms"] and "gradients/W1" in tags["histograms"]


def test_live_curves_rewrite_one_png_per_epoch(tmp_path, rng):
    from convlab.callbacks import LiveCurves
    from convlab.solver import Solver

    data = load_builtin_dataset(100, 50, 0, seed=0)
    model = FullyConnectedNet([8], input_dim=3 * 32 * 32, seed=0)
    seen = []

    class Watch:
        def on_epoch_end(self, solver):
            seen.append(os.path.getmtime(tmp_path / "live.png"))

    Solver(model, data, num_epochs=2, batch_size=50, verbose=False, seed=0,
           callbacks=[LiveCurves(tmp_path / "live.png"), Watch()]).train()
    assert len(seen) == 2 and (tmp_path / "live.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- Ctrl-C


def _start(args, tmp_path):
    return subprocess.Popen([sys.executable, "-m", "convlab.train", *args,
                             "--out", str(tmp_path / "run"), "--verbose", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_line(proc, prefix, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return
        assert line or proc.poll() is None, "the run ended early"
    raise AssertionError(f"no line starting with {prefix!r}")


def test_ctrl_c_while_evaluating_stops_after_the_current_batch():
    # Responsiveness without a wall-clock bound: the interrupt is checked after every
    # evaluation batch (and training step), so however large the validation set, a Ctrl-C
    # costs at most one batch. Here the first evaluation batch sends it.
    from convlab.solver import Solver

    data = load_builtin_dataset(300, 1000, 0, seed=0)
    model = FullyConnectedNet([8], input_dim=3 * 32 * 32, seed=0)
    scored = []

    def loss(X, y=None):
        if y is None:
            scored.append(len(X))
            if len(scored) == 1:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler runs: acknowledged, not yet acted on
        return FullyConnectedNet.loss(model, X, y)

    model.loss = loss
    solver = Solver(model, data, num_epochs=1, batch_size=50, verbose=False, seed=0,
                    num_train_samples=None)
    with pytest.raises(KeyboardInterrupt):
        solver.train()
    # The epoch-0 check would score 3 + 10 batches of 100 (train, val); it stopped after one.
    assert scored == [100]


@pytest.mark.slow
def test_ctrl_c_from_outside_saves_the_run_and_says_how_to_resume(tmp_path):
    proc = _start(["--data", "builtin", "--builtin-size", "200", "20000", "10",
                   "--model", "fc", "--hidden-dims", "512", "512", "--batch-size", "100"],
                  tmp_path)
    _wait_for_line(proc, "Training fc")  # data loaded; the epoch-0 evaluation runs now
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    err = proc.stderr.read()
    assert "state saved" in err and "--resume" in err
    assert (tmp_path / "run" / "checkpoint.npz").exists()


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    # Two SIGINTs sent together from outside may merge into one (POSIX does not queue them),
    # so the run interrupts itself: the first Ctrl-C asks to stop after this step, the second,
    # inside the same step, must stop at once, before the Checkpoint callback saves anything.
    class CtrlCTwice:
        def on_step_end(self, solver):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs: "stopping after this step"
            assert solver._interrupt.requested
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler raises StopNow here
            raise AssertionError("the second Ctrl-C did not stop training")

    config = RunConfig(data="builtin", builtin_size=(200, 50, 0), model="fc", hidden_dims=(8,),
                       batch_size=50, epochs=1)
    with pytest.raises(StopNow):
        run(config, out=tmp_path / "run", verbose=0, callbacks=[CtrlCTwice()])
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


# ----------------------------------------------------------------------------- models


def test_models_save_and_load_themselves(tmp_path, rng):
    model = ConvNet("conv3-4,bn,relu,fc10", input_dim=(3, 8, 8), seed=0)
    X = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    model.loss(X, np.array([1, 2]))  # move the batchnorm statistics
    model.save(tmp_path / "m.npz")
    fresh = ConvNet("conv3-4,bn,relu,fc10", input_dim=(3, 8, 8), seed=1)
    assert fresh.load(tmp_path / "m.npz") is fresh
    np.testing.assert_array_equal(fresh.loss(X), model.loss(X))
    np.testing.assert_array_equal(ConvNet.from_file(tmp_path / "m.npz").loss(X), model.loss(X))
    other = ConvNet("conv3-8,relu,fc10", input_dim=(3, 8, 8), seed=0)
    with pytest.raises(ValueError, match="not this ConvNet"):
        other.load(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="not a FullyConnectedNet"):
        FullyConnectedNet.from_file(tmp_path / "m.npz")


# ----------------------------------------------------------------------------- README


def _readme_command(title):
    text = (ROOT / "README.md").read_text()
    block = text.split(f"## {title}", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return block.strip()


def test_readme_usage_example_runs_as_printed(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example saves fc.npz
    text = (ROOT / "README.md").read_text()
    example = text.split("## Usage", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(example, "README.md usage", "exec"), namespace)
    out = capsys.readouterr().out
    # The lines the README shows are printed in that form. Their digits depend on the BLAS
    # (summation order, threads) and drift apart over 200 float32 steps: the first loss
    # is compared to 3 decimals, the rest only in form, and the model must have learnt.
    shown = [line[2:] for line in example.splitlines() if line.startswith("# (")]
    assert len(shown) == 4
    first_loss = float(shown[0].rsplit(" ", 1)[1])
    printed_first = re.search(r"\(Iteration 1 / 200\) loss: ([\d.]+)", out)
    assert float(printed_first[1]) == pytest.approx(first_loss, abs=1e-3)
    number = r"[\d.e-]+"
    form = (rf"\(Epoch (\d+) / 10\) train acc: ({number}); val_acc: {number} - train_loss "
            rf"{number} - val_loss {number} - lr {number} - {number}s")
    epoch_zero = rf"\(Epoch 0 / 10\) train acc: {number}; val_acc: {number} - val_loss {number}"
    assert re.fullmatch(epoch_zero, shown[1]), shown[1]
    assert re.search(r"\(Iteration 1 / 200\).*\n" + epoch_zero + r"\n", out)  # after step 1
    for line in shown[2:]:
        assert re.fullmatch(form, line), line
    epochs = re.findall(form, out)
    assert [int(e) for e, _ in epochs] == list(range(1, 11))
    assert float(epochs[-1][1]) > 0.5  # 1,000 images learnt well beyond chance
    assert namespace["scores"].shape == (200, 10)
    assert FullyConnectedNet.from_file(tmp_path / "fc.npz").params.keys() == \
        namespace["model"].params.keys()
    # The example's model is seeded (fixed masks for gradient checks); the Solver lent it
    # its own generator while training (tests/test_train.py checks masks change per step).
    assert namespace["model"].dropout_param["p"] == 0.8


@pytest.mark.readme
def test_readme_commands_compose_into_one_editable_install(tmp_path):
    """The install parts of the README's two lines, in order, in a fresh virtual
    environment: one convlab, the working tree's, visible to the CLI."""
    test_line = _readme_command("Install and test (one line)")
    train_line = _readme_command("Train (one line)")
    installs = [line.split(" && ")[0] for line in (test_line, train_line)]
    assert all("pip install -e" in cmd for cmd in installs), installs
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "v")], check=True)
    python = tmp_path / "v" / "bin" / "python3"
    env = {**os.environ, "PATH": f"{tmp_path / 'v' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    for cmd in installs:
        subprocess.run(cmd.replace("python3", str(python), 1) + " -q", shell=True, cwd=ROOT,
                       env=env, check=True, capture_output=True)
    where = subprocess.run([str(python), "-c", "import convlab; print(convlab.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip() == str(ROOT / "convlab" / "__init__.py")
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                            env=env, capture_output=True, text=True, check=True).stdout
    assert sum(line.lower().startswith("convlab") for line in listed.splitlines()) == 1
    assert subprocess.run([str(tmp_path / "v" / "bin" / "convlab-train"), "--help"], env=env,
                          capture_output=True).returncode == 0


# ----------------------------------------------------------------------------- docstrings


def _public_objects():
    """(qualified name, object) for every public function, class and method of convlab."""
    import convlab

    names = ["convlab"] + [m.name for m in pkgutil.walk_packages(convlab.__path__, "convlab.")
                           if not m.name.rsplit(".", 1)[-1].startswith("_")]
    for module_name in names:
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            if inspect.isfunction(obj):
                yield f"{module_name}.{name}", obj
            elif inspect.isclass(obj):
                yield f"{module_name}.{name}", obj
                for attr, member in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if isinstance(member, (classmethod, staticmethod)):
                        member = member.__func__
                    elif isinstance(member, property):
                        member = member.fget
                    if inspect.isfunction(member):
                        yield f"{module_name}.{name}.{attr}", member


def test_every_public_function_class_and_method_has_a_docstring():
    objects = dict(_public_objects())
    assert {"convlab.layers.relu_backward", "convlab.solver.Solver.train",
            "convlab.callbacks.TensorBoard.on_epoch_end"} <= set(objects)
    # inspect.getdoc also finds a docstring an overriding method inherits (callback hooks).
    missing = [name for name, obj in objects.items() if not inspect.getdoc(obj)]
    assert not missing, f"no docstring: {missing}"


def test_solver_help_lists_its_keywords():
    from convlab.solver import Solver

    doc = inspect.getdoc(Solver)  # what help(Solver) and Solver? show
    for keyword in ("update_rule", "optim_config", "lr_decay", "batch_size", "num_epochs",
                    "print_every", "verbose", "lr_schedule", "weight_decay", "augment",
                    "progress", "callbacks", "seed", "shuffle"):
        assert f"``{keyword}``" in doc, keyword
