"""run(config): the RunConfig JSON round trip, the run directory, results, model building."""

import json
import os

import numpy as np
import pytest

from convlab import load_model
from convlab.classifiers import ConvNet, FullyConnectedNet, ThreeLayerConvNet
from convlab.run import RunConfig, RunDir, build_model, run
from convlab.train import build_parser, config_from_args

TINY = dict(data="builtin", builtin_size=[300, 100, 100], model="fc", hidden_dims=[32],
            batch_size=50, lr=2e-3, epochs=2)


def test_run_config_json_round_trip():
    config = RunConfig(**TINY, weight_scale=None, dropout_keep=0.5)
    again = RunConfig.from_json(config.to_json())
    assert again == config and again.to_dict() == config.to_dict()
    assert json.loads(config.to_json())["hidden_dims"] == [32]
    assert RunConfig.from_dict({}) == RunConfig()


def test_run_config_rejects_unknown_keys_and_reads_legacy_files():
    with pytest.raises(ValueError, match="unknown run configuration keys: colour"):
        RunConfig.from_dict({"colour": "blue"})
    with pytest.raises(ValueError, match="not valid JSON"):
        RunConfig.from_json("{")
    with pytest.raises(ValueError, match="JSON object"):
        RunConfig.from_json("[1, 2]")
    # config.json written by earlier versions held the CLI's run options too
    legacy = {**RunConfig(epochs=3).to_dict(), "out": "runs/x", "resume": False, "quiet": True}
    assert RunConfig.from_dict(legacy) == RunConfig(epochs=3)


def test_cli_defaults_are_the_run_config_defaults():
    assert config_from_args(build_parser().parse_args([])) == RunConfig()


@pytest.mark.parametrize(
    "model, cls", [("fc", FullyConnectedNet), ("threelayer", ThreeLayerConvNet),
                   ("vgg_small", ConvNet), ("conv3-4,relu,gap,fc10", ConvNet)]
)
def test_build_model(model, cls):
    built = build_model(RunConfig(model=model, dtype="float64"), (3, 8, 8), 10)
    assert isinstance(built, cls) and built.dtype == np.float64
    with pytest.raises(ValueError, match="unknown layer 'nosuchnet'"):
        build_model(RunConfig(model="nosuchnet"), (3, 8, 8), 10)
    assert RunConfig(model=" Reference ").model == "reference"
    assert RunConfig(model="VGG_Small").model == "vgg_small"


def test_run_writes_the_run_directory_and_returns_results(tmp_path, capsys):
    out = tmp_path / "run"
    results = run(RunConfig(**TINY), out=out, verbose=False)
    assert capsys.readouterr().out == ""
    run_dir = RunDir(out)
    for name in RunDir.NAMES:
        assert os.path.exists(os.path.join(out, name)), name
    assert run_dir.read_config() == RunConfig(**TINY)
    assert results["epochs"] == 2 and results["out"] == str(out)
    history = results["history"]
    assert len(history["loss_history"]) == 2 * 300 // 50 == len(history["lr_history"])
    assert len(history["val_acc_history"]) == 3  # epoch 0, 1, 2
    assert results["best_val_acc"] == max(history["val_acc_history"])
    assert 0 <= results["test_acc"] <= 1 and results["elapsed_s"] > 0
    model = load_model(run_dir.model_npz)
    assert isinstance(model, FullyConnectedNet)


def test_run_reports_each_epoch_to_extra_callbacks(tmp_path):
    seen = []

    class Report:
        def on_epoch_end(self, solver):
            seen.append((solver.epoch, solver.val_acc_history[-1]))

    results = run(RunConfig(**TINY), out=tmp_path / "r", verbose=False, callbacks=[Report()])
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert [acc for _, acc in seen] == results["history"]["val_acc_history"][1:]


def test_run_needs_a_run_config(tmp_path):
    with pytest.raises(TypeError, match="RunConfig"):
        run(dict(TINY), out=tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        run(None, out=tmp_path / "empty", resume=True)
