"""convlab.tune: search specs, a study through a journal file with several workers, resume
after SIGKILL, pruning, and the multi-machine path on a real PostgreSQL server.

The PostgreSQL test needs ``$CONVLAB_TEST_POSTGRES`` (a server URL; ``source
.ci/postgres.sh`` starts one): it skips without it locally and fails without it in CI."""

import csv
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from convlab import load_model  # noqa: E402
from convlab.run import RunConfig  # noqa: E402
from convlab.tune import make_storage, parse_search, search_space, tune  # noqa: E402
from convlab.tune_cli import main  # noqa: E402

# Small enough for seconds per trial, large enough that 30 steps beat an untrained model.
BASE = ["--data", "builtin", "--builtin-size", "1500", "300", "0", "--model", "threelayer",
        "--num-filters", "8", "--filter-size", "5", "--hidden-dim", "32", "--batch-size", "50"]
BASE_CONFIG = RunConfig(data="builtin", builtin_size=[1500, 300, 0], model="threelayer",
                        num_filters=8, filter_size=5, hidden_dim=32, batch_size=50, epochs=2)


# ----------------------------------------------------------------------------- search specs


def test_search_specs_parse_into_dimensions():
    space = search_space(["lr=loguniform:1e-4:1e-2", "batch-size=int:32:128",
                          "model=choice:Reference,vgg_small", "hidden_dims=choice:512-256,1024",
                          "augment=choice:true,false", "dropout_keep=uniform:0.5:1"])
    assert space["lr"].kind == "loguniform" and (space["lr"].low, space["lr"].high) == (1e-4, 1e-2)
    assert space["batch_size"].kind == "int"
    assert space["model"].choices == ("reference", "vgg_small")  # RunConfig's spelling
    assert space["hidden_dims"].choices == ([512, 256], [1024])
    assert space["augment"].choices == (True, False)
    assert search_space({"lr": ("loguniform", 1e-4, 1e-2)})["lr"] == space["lr"]
    assert parse_search(space["hidden_dims"].spec()) == space["hidden_dims"]


@pytest.mark.parametrize("spec, message", [
    ("lr", "must look like NAME=KIND:ARGS"),
    ("colour=choice:red", "cannot search 'colour'"),
    ("data=choice:builtin,cifar10", "cannot search 'data'"),
    ("lr=gaussian:0:1", "not one of loguniform, uniform, int, logint, choice"),
    ("lr=loguniform:1e-2:1e-4", "needs finite LOW < HIGH"),
    ("lr=loguniform:0:1e-2", "needs LOW > 0"),
    ("lr=loguniform:1e-4", "needs LOW:HIGH"),
    ("lr=uniform:a:b", "must be numbers"),
    ("model=loguniform:1:2", "needs a numeric field"),
    ("batch_size=int:1.5:4", "must be integers"),
    ("batch_size=int:0:4", "batch_size must be an integer >= 1"),
    ("update_rule=choice:adam,adamw", "update_rule must be one of"),
    ("model=choice:refrence", "did you mean 'reference'"),
    ("hidden_dims=choice:512x256", "write lists as 512-256"),
    ("model=choice:", "lists no values"),
])
def test_bad_search_specs_fail_before_any_trial(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        search_space([spec])


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--search", "lr=loguniform:1e-2:1e-4", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convlab-tune: error:") and "\n" not in err
    assert main(["--search", "lr=loguniform:1e-4:1e-2", "--n-trials", "0",
                 "--out", str(tmp_path)]) == 2
    assert "n_trials must be an integer >= 1" in capsys.readouterr().err
    for flag in ("--workers", "--threads", "--pruner-startup"):
        value = "-1" if flag == "--pruner-startup" else "0"
        assert main(["--search", "lr=loguniform:1e-4:1e-2", flag, value,
                     "--out", str(tmp_path)]) == 2
        assert "must be an integer >=" in capsys.readouterr().err
    # No server on port 1: one line, not SQLAlchemy's traceback.
    assert main(["--search", "lr=loguniform:1e-4:1e-2", "--out", str(tmp_path),
                 "--storage", "postgresql://nobody@127.0.0.1:1/none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot open the study storage" in err and "\n" not in err


# ----------------------------------------------------------------------------- a local study


def test_study_with_two_workers_writes_results(tmp_path, capsys):
    out = tmp_path / "study"
    code = main([*BASE, "--epochs", "2", "--study", "two", "--n-trials", "4", "--workers", "2",
                 "--search", "lr=loguniform:1e-3:1e-2", "--search", "reg=loguniform:1e-5:1e-2",
                 "--sampler", "random", "--sampler-seed", "0", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rank trial state" in printed and "best: trial" in printed
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert 4 <= len(rows) <= 5  # two workers may both start the last trial
    assert {row["state"] for row in rows} <= {"COMPLETE", "PRUNED"}
    assert set(rows[0]) >= {"trial", "state", "best_val_acc", "epochs", "lr", "reg"}
    study = optuna.load_study(study_name="two", storage=make_storage(str(out / "study.journal")))
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2  # both processes ran trials
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    model = load_model(out / "best" / "model.npz")
    assert model.params.keys() == load_model(out / "trials" / f"trial-{best.number:04d}" /
                                             "model.npz").params.keys()
    assert RunConfig.from_json((out / "best" / "config.json").read_text()).lr == \
        pytest.approx(best.params["lr"])
    for name in ("optimization_history", "intermediate_values"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_pruning_stops_an_obviously_bad_trial_at_its_first_check(tmp_path):
    # Two good trials first, then a learning rate that cannot move the weights: at epoch 2
    # (the median pruner leaves epoch 1 alone) it is still the untrained model (same seed),
    # below the median of the good ones, and stops there instead of running epoch 3.
    base = RunConfig(**{**BASE_CONFIG.to_dict(), "epochs": 3})
    results = tune({"lr": ("choice", [2e-3, 1e-9])}, n_trials=3, out=tmp_path, base=base,
                   sampler="random", pruner="median", pruner_startup=2, verbose=False,
                   enqueue=[{"lr": 2e-3}, {"lr": 2e-3}, {"lr": 1e-9}])
    states = {row["trial"]: (row["state"], row["epochs"]) for row in results["leaderboard"]}
    assert states == {0: ("COMPLETE", 3), 1: ("COMPLETE", 3), 2: ("PRUNED", 2)}
    assert results["counts"] == {"COMPLETE": 2, "PRUNED": 1}


def test_a_continued_study_must_search_the_same_space(tmp_path):
    tune({"lr": "loguniform:1e-3:1e-2"}, n_trials=1, out=tmp_path, verbose=False,
         base=RunConfig(**{**BASE_CONFIG.to_dict(), "epochs": 1}))
    with pytest.raises(ValueError, match="was created with search"):
        tune({"lr": "loguniform:1e-4:1e-2"}, n_trials=2, out=tmp_path, verbose=False,
             base=RunConfig(**{**BASE_CONFIG.to_dict(), "epochs": 1}))


def _tune_command(out, n_trials, *extra):
    return [sys.executable, "-m", "convlab.tune_cli", *BASE, "--epochs", "2", "--study", "k",
            "--n-trials", str(n_trials), "--search", "lr=loguniform:1e-3:1e-2",
            "--sampler", "random", "--out", str(out), *extra]


def _finished(out, study="k"):
    storage = make_storage(str(out / "study.journal"))
    trials = optuna.load_study(study_name=study, storage=storage).trials
    return {t.number: (t.state.name, t.value) for t in trials}


@pytest.mark.slow
def test_resume_after_sigkill_keeps_every_finished_trial(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.Popen(_tune_command(out, 6), stdout=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300

    def two_finished_and_one_running():
        if not (out / "study.journal").exists():
            return False
        states = [v[0] for v in _finished(out).values()]
        return (sum(s in ("COMPLETE", "PRUNED") for s in states) >= 2
                and "RUNNING" in states)

    # Kill only once a trial is RUNNING: between one trial's end and the next one's start
    # there is nothing to abandon, and the resume would have nothing to report.
    while not two_finished_and_one_running():
        assert proc.poll() is None, "convlab-tune ended early"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {n: v for n, v in _finished(out).items() if v[0] in ("COMPLETE", "PRUNED")}
    assert len(before) >= 2

    again = subprocess.run(_tune_command(out, 6), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    after = _finished(out)
    for number, value in before.items():
        assert after[number] == value  # no finished trial lost or changed
    finished = [v for v in after.values() if v[0] in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6
    abandoned = [n for n, v in after.items() if v[0] == "FAIL"]
    assert len(abandoned) == 1 and "left running by a stopped worker" in again.stdout


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres_url():
    url = os.environ.get("CONVLAB_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide a PostgreSQL server: .ci/run sources .ci/postgres.sh")
        pytest.skip("no PostgreSQL server: source .ci/postgres.sh to start one")
    return url


@pytest.mark.slow
def test_two_machines_share_one_study_on_postgresql(tmp_path, postgres_url):
    """Two independent convlab-tune commands (as on two machines: their own --out) on one
    PostgreSQL study: both contribute trials, and their trials add up to the study's."""
    study = f"pg-{uuid.uuid4().hex[:12]}"
    n_trials = 6
    commands = [[sys.executable, "-m", "convlab.tune_cli", *BASE, "--epochs", "1",
                 "--study", study, "--n-trials", str(n_trials), "--storage", postgres_url,
                 "--search", "lr=loguniform:1e-3:1e-2", "--sampler", "random",
                 "--pruner", "none", "--out", str(tmp_path / f"machine{i}")] for i in (1, 2)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in commands]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    trials = optuna.load_study(study_name=study, storage=make_storage(postgres_url)).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    by_worker = {}
    for t in complete:
        by_worker[t.user_attrs["worker"]] = by_worker.get(t.user_attrs["worker"], 0) + 1
    assert len(by_worker) == 2, by_worker  # both machines contributed
    assert sum(by_worker.values()) == len(complete) == len(trials)
    assert n_trials <= len(complete) <= n_trials + 1  # the last trial may start on both
    for i, (printed, _) in enumerate(outputs, start=1):
        assert "rank trial state" in printed  # each prints the whole study's leaderboard
        trials_csv = (tmp_path / f"machine{i}" / "trials.csv").read_text().splitlines()
        assert len(trials_csv) == len(trials) + 1
    assert np.isfinite([t.value for t in complete]).all()
