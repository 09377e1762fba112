"""Solver: overfitting, kwargs and rules, best params, divergence, checkpoints and resume."""

import os
import signal

import numpy as np
import pytest

from convlab import optim, schedules
from convlab.callbacks import Callback, Checkpoint, EarlyStopping, StepTimer
from convlab.classifiers import FullyConnectedNet, TwoLayerNet
from convlab.serialization import load_model, load_npz, save_model
from convlab.solver import Solver


def small_data(rng, N=50, D=20, C=5):
    X = rng.standard_normal((N + 20, D))
    y = rng.integers(C, size=N + 20)
    return {"X_train": X[:N], "y_train": y[:N], "X_val": X[N:], "y_val": y[N:]}


@pytest.mark.parametrize("update_rule", ["sgd_momentum", "adam"])
def test_three_layer_net_overfits_50_examples(update_rule, rng):
    data = small_data(rng, D=300, C=10)
    model = FullyConnectedNet(
        [100, 100], input_dim=300, num_classes=10, weight_scale=1e-1, dtype=np.float64, seed=0
    )
    lr = 1e-2 if update_rule == "sgd_momentum" else 1e-3
    solver = Solver(
        model,
        data,
        update_rule=update_rule,
        optim_config={"learning_rate": lr},
        num_epochs=20,
        batch_size=25,
        verbose=False,
        seed=0,
    )
    solver.train()
    assert solver.train_acc_history[-1] == 1.0
    assert len(solver.train_acc_history) == 21
    assert solver.epoch == 20


def test_prints_familiar_lines(rng, capsys):
    data = small_data(rng)
    model = TwoLayerNet(input_dim=20, hidden_dim=10, num_classes=5, seed=0)
    Solver(model, data, num_epochs=2, batch_size=25, print_every=1, progress=False, seed=0).train()
    out = capsys.readouterr().out
    assert "(Iteration 1 / 4) loss: " in out
    assert "(Epoch 2 / 2) train acc: " in out and "; val_acc: " in out


def test_rejects_unknown_kwargs_and_rules(rng):
    data = small_data(rng)
    model = TwoLayerNet(input_dim=20, num_classes=5, seed=0)
    with pytest.raises(ValueError, match="Unrecognized arguments"):
        Solver(model, data, learning_rate=1e-3)
    with pytest.raises(ValueError, match="Invalid update_rule"):
        Solver(model, data, update_rule="adamw")
    with pytest.raises(ValueError, match="lr_schedule"):
        Solver(model, data, lr_schedule="linear", optim_config={"learning_rate": 1.0})
    with pytest.raises(ValueError, match="X_train"):
        Solver(
            model,
            {
                "X_train": data["X_train"],
                "y_train": data["y_train"][:3],
                "X_val": data["X_val"],
                "y_val": data["y_val"],
            },
        )


def test_accepts_callable_update_rule(rng):
    data = small_data(rng)
    model = TwoLayerNet(input_dim=20, num_classes=5, seed=0)
    calls = []

    def rule(w, dw, config=None):
        calls.append(1)
        return optim.sgd(w, dw, config)

    Solver(model, data, update_rule=rule, num_epochs=1, batch_size=50, verbose=False).train()
    assert len(calls) == len(model.params)


def test_restores_best_params(rng):
    data = small_data(rng)
    model = FullyConnectedNet(
        [30],
        input_dim=20,
        num_classes=5,
        normalization="batchnorm",
        weight_scale=1e-1,
        dtype=np.float64,
        seed=0,
    )
    solver = Solver(
        model,
        data,
        update_rule="adam",
        optim_config={"learning_rate": 1e-2},
        num_epochs=8,
        batch_size=10,
        verbose=False,
        seed=1,
    )
    solver.train()
    best_epoch = int(np.argmax(solver.val_acc_history))
    assert solver.best_val_acc == solver.val_acc_history[best_epoch]
    for name, value in solver.best_params.items():
        np.testing.assert_array_equal(model.params[name], value)
    assert solver.check_accuracy(data["X_val"], data["y_val"]) == solver.best_val_acc


def test_divergence_stops_with_iteration(rng):
    data = small_data(rng)
    model = TwoLayerNet(input_dim=20, num_classes=5, weight_scale=1.0, seed=0)
    solver = Solver(
        model,
        data,
        optim_config={"learning_rate": 1e30},
        num_epochs=5,
        batch_size=10,
        verbose=False,
        seed=0,
    )
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match=r"iteration \d+"):
        solver.train()


def test_writes_checkpoint_without_pickle(rng, tmp_path):
    data = small_data(rng)
    model = FullyConnectedNet([10], input_dim=20, num_classes=5, normalization="batchnorm", seed=0)
    name = str(tmp_path / "ckpt")
    Solver(
        model, data, num_epochs=2, batch_size=25, checkpoint_name=name, verbose=False, seed=0
    ).train()
    arrays, meta = load_npz(f"{name}_epoch_2.npz")  # allow_pickle=False inside
    assert (
        meta["epoch"] == 2 and "model.W1" in arrays and "model.bn_params.0.running_mean" in arrays
    )
    assert not list(tmp_path.glob(".tmp-*"))


def _resumable_solver(data, seed=0, **kwargs):
    model = FullyConnectedNet(
        [16],
        input_dim=20,
        num_classes=5,
        normalization="batchnorm",
        weight_scale=1e-1,
        dtype=np.float64,
        seed=seed,
    )
    return Solver(
        model,
        data,
        update_rule="adam",
        optim_config={"learning_rate": 1e-2},
        batch_size=10,
        num_epochs=4,
        verbose=False,
        seed=seed,
        shuffle=True,
        lr_schedule="cosine",
        **kwargs,
    )


def _assert_same_run(a, b):
    assert a.loss_history == b.loss_history
    assert a.val_acc_history == b.val_acc_history
    for name in a.model.params:
        np.testing.assert_array_equal(a.model.params[name], b.model.params[name])
    np.testing.assert_array_equal(
        a.model.bn_params[0]["running_mean"], b.model.bn_params[0]["running_mean"]
    )


def test_resume_from_epoch_checkpoint_matches_uninterrupted_run(rng, tmp_path):
    data = small_data(rng)
    full = _resumable_solver(data, checkpoint_name=str(tmp_path / "run"))
    full.train()

    resumed = _resumable_solver(data, seed=99)  # different init: everything must come from file
    resumed.load(tmp_path / "run_epoch_2.npz")
    assert resumed.epoch == 2
    resumed.train()
    _assert_same_run(resumed, full)


def test_ctrl_c_stops_at_iteration_boundary_and_resumes_exactly(rng, tmp_path):
    data = small_data(rng)
    full = _resumable_solver(data)
    full.train()

    calls = []

    def interrupt_on_seventh_batch(X, rng):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return X

    interrupted = _resumable_solver(data, augment=interrupt_on_seventh_batch)
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    assert len(interrupted.loss_history) == 7  # the seventh iteration finished first
    interrupted.save(tmp_path / "state.npz")

    resumed = _resumable_solver(data, seed=5, augment=lambda X, rng: X)
    resumed.load(tmp_path / "state.npz")
    resumed.train()
    _assert_same_run(resumed, full)


def test_load_rejects_other_files(rng, tmp_path):
    data = small_data(rng)
    solver = _resumable_solver(data)
    path = tmp_path / "bad.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match="metadata"):
        solver.load(path)
    with pytest.raises(FileNotFoundError):
        solver.load(tmp_path / "missing.npz")
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable"):
        solver.load(path)


@pytest.mark.parametrize("schedule", ["step", "cosine", "onecycle"])
def test_lr_schedules(schedule, rng):
    data = small_data(rng)
    solver = _resumable_solver(data)
    solver.lr_schedule = schedule
    solver.train()
    lrs = np.array(solver.lr_history)
    assert len(lrs) == solver.num_iterations
    assert lrs.max() == pytest.approx(1e-2, rel=0.05)
    assert lrs[-1] < 0.5 * lrs.max()


def test_lr_decay_applies_after_each_epoch(rng):
    data = small_data(rng)
    model = TwoLayerNet(input_dim=20, num_classes=5, seed=0)
    solver = Solver(
        model,
        data,
        optim_config={"learning_rate": 1.0},
        lr_decay=0.5,
        num_epochs=3,
        batch_size=25,
        verbose=False,
    )
    solver.train()
    assert solver.lr_history == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_weight_decay_and_augment_hook(rng):
    data = small_data(rng)
    seen = []

    def augment(X, rng):
        seen.append(X.shape)
        return X

    model = TwoLayerNet(input_dim=20, num_classes=5, seed=0)
    Solver(
        model, data, num_epochs=1, batch_size=25, verbose=False, augment=augment, weight_decay=1e-2
    ).train()
    assert seen == [(25, 20), (25, 20)]


def test_save_and_load_model(rng, tmp_path):
    model = FullyConnectedNet([7], input_dim=6, num_classes=3, normalization="batchnorm", seed=0)
    X = rng.standard_normal((5, 6))
    model.loss(X, np.array([0, 1, 2, 0, 1]))  # fills running statistics
    save_model(model, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert type(loaded) is FullyConnectedNet
    np.testing.assert_array_equal(loaded.loss(X), model.loss(X))


# ----------------------------------------------------------------------------- callbacks


def _tiny_solver(rng, **kwargs):
    data = small_data(rng)
    model = FullyConnectedNet([10], input_dim=20, num_classes=5, seed=0)
    kwargs = {"update_rule": "adam", "optim_config": {"learning_rate": 1e-2}, "num_epochs": 3,
              "batch_size": 10, "verbose": False, "seed": 0, **kwargs}
    return Solver(model, data, **kwargs)


def test_callbacks_are_called_in_order_at_each_hook(rng):
    calls = []

    class Recorder(Callback):
        def __init__(self, name):
            self.name = name

        def on_train_begin(self, solver):
            calls.append((self.name, "begin", solver.iteration, len(solver.val_acc_history)))

        def on_step_end(self, solver):
            calls.append((self.name, "step", solver.iteration))

        def on_epoch_end(self, solver):
            calls.append((self.name, "epoch", solver.epoch, len(solver.val_acc_history)))

        def on_train_end(self, solver):
            calls.append((self.name, "end", solver.iteration))

    solver = _tiny_solver(rng, callbacks=[Recorder("a"), Recorder("b")])
    solver.train()
    per_epoch = solver.iterations_per_epoch  # 50 examples / 10
    assert calls[:2] == [("a", "begin", 0, 0), ("b", "begin", 0, 0)]  # epoch 0 follows step 1
    steps = [c for c in calls if c[1] == "step"]
    assert [c[2] for c in steps[::2]] == list(range(1, 3 * per_epoch + 1))
    epochs = [c for c in calls if c[1] == "epoch"]
    assert epochs == [(n, "epoch", e, e + 1) for e in (1, 2, 3) for n in ("a", "b")]
    assert calls[-2:] == [("a", "end", 15), ("b", "end", 15)]


def test_train_end_runs_when_training_fails(rng):
    ended = []

    class Boom(Callback):
        def on_step_end(self, solver):
            raise RuntimeError("boom")

        def on_train_end(self, solver):
            ended.append(solver.iteration)

    with pytest.raises(RuntimeError, match="boom"):
        _tiny_solver(rng, callbacks=[Boom()]).train()
    assert ended == [1]


def test_early_stopping_stops_and_keeps_best(rng):
    solver = _tiny_solver(rng, num_epochs=50, optim_config={"learning_rate": 0.0},
                          callbacks=[EarlyStopping(patience=2)])
    solver.train()  # a zero learning rate never improves: stop after 2 more epochs
    assert solver.epoch == 2 and len(solver.val_acc_history) == 3
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)


def test_checkpoint_and_step_timer_callbacks(rng, tmp_path):
    timer = StepTimer()
    path = str(tmp_path / "ckpt_{epoch}.npz")
    solver = _tiny_solver(rng, callbacks=[Checkpoint(path), timer])
    solver.train()
    assert sorted(os.listdir(tmp_path)) == [f"ckpt_{e}.npz" for e in (1, 2, 3)]
    assert len(timer.times) == solver.num_iterations and min(timer.times) > 0
    other = _tiny_solver(rng)
    other.load(str(tmp_path / "ckpt_2.npz"))
    assert other.epoch == 2 and other.iteration == 2 * solver.iterations_per_epoch


def test_state_dict_round_trip(rng):
    solver = _tiny_solver(rng, num_epochs=1)
    solver.train()
    arrays, meta = solver.state_dict()
    other = _tiny_solver(rng, num_epochs=1)
    other.load_state_dict(arrays, meta)
    assert other.state_dict()[1] == meta
    for name, value in other.state_dict()[0].items():
        np.testing.assert_array_equal(value, arrays[name])
    with pytest.raises(ValueError, match="not a convlab solver checkpoint"):
        other.load_state_dict(arrays, {"format": "other"})


def test_schedules_are_pure_functions_of_the_position():
    assert schedules.cosine(0, 100) == 1 and schedules.cosine(100, 100) == pytest.approx(0)
    assert schedules.cosine(50, 100) == pytest.approx(0.5)
    step = schedules.make_schedule("step", num_epochs=9, iterations_per_epoch=10)
    assert [step(i, 90) for i in (0, 29, 30, 60)] == pytest.approx([1, 1, 0.1, 0.01])
    one = schedules.make_schedule("onecycle", 10, 10, warmup_frac=0.5)
    assert one(0, 100) == pytest.approx(1 / 25) and one(50, 100) == pytest.approx(1)
    assert one(100, 100) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        schedules.make_schedule("linear", 10, 10)
