"""Hyperparameter search over RunConfig fields, on Optuna: ``tune(...)`` and ``convlab-tune``.

A trial is one ``run(config)`` (convlab.run) whose config is a base RunConfig with some
fields drawn from a search space; it reports each epoch's validation accuracy to Optuna,
whose pruner may stop it at once. The study lives in a storage that any number of worker
processes share: by default a journal file in the output directory (one machine, no
server), or a PostgreSQL database named by URL (many machines). Running the same command
again continues the study: finished trials are kept, trials a killed worker left running
are run again.

Search spaces, in the CLI as ``--search NAME=SPEC`` and in Python as a dict NAME -> SPEC:

    loguniform:LOW:HIGH   a float drawn log-uniformly (learning rates, regularisation)
    uniform:LOW:HIGH      a float drawn uniformly (dropout keep probability)
    int:LOW:HIGH          an integer, LOW and HIGH included (widths, batch sizes)
    logint:LOW:HIGH       an integer drawn log-uniformly
    choice:A,B,...        one of the values (models, update rules; lists as 512-256)

``pip install "convlab[tune]"`` brings Optuna (and the PostgreSQL driver); the rest of
convlab does not need it.
"""

import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager

from convlab._checks import check_count
from convlab.run import DATA_FIELDS, RunConfig, load_config_dataset, run
from convlab.tune_space import Dimension, parse_search, search_space

__all__ = ["Dimension", "TrialReporter", "make_storage", "parse_search", "search_space", "tune",
           "tune_worker"]

def import_optuna():
    """The optuna module, or ImportError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ImportError('hyperparameter search needs Optuna: pip install "convlab[tune]"') \
            from None
    return optuna


def make_storage(storage):
    """An Optuna storage: a ``postgresql://`` (or other SQLAlchemy) URL, shared by workers
    on many machines, with heartbeats so a killed worker's trial is failed and run again;
    else the path of a journal file, shared by the workers of one machine."""
    optuna = import_optuna()
    if "://" in storage:
        # psycopg (3) for postgresql:// whatever SQLAlchemy's default driver for it is.
        url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", storage)
        for attempt in range(3):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # Optuna calls heartbeats experimental
                    return optuna.storages.RDBStorage(url, heartbeat_interval=10,
                                                      grace_period=30)
            except Exception as err:  # SQLAlchemy's (no server, bad login, no driver, ...)
                error = err
                # Workers started together on an empty database race to create its tables;
                # the loser finds them made on its next try.
                time.sleep(0.5 * (attempt + 1))
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ValueError(f"cannot open the study storage {storage}: {first}")
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    path = os.fspath(storage)
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


class TrialReporter:
    """Solver callback: reports each epoch's validation accuracy to an Optuna trial and
    stops training at once (optuna.TrialPruned) when the pruner says so."""

    def __init__(self, trial):
        self.trial = trial

    def on_epoch_end(self, solver):
        """Report ``val_acc`` at step ``epoch``; raise TrialPruned if the trial should stop."""
        self.trial.report(solver.val_acc_history[-1], solver.epoch)
        self.trial.set_user_attr("epochs", solver.epoch)
        if self.trial.should_prune():
            raise import_optuna().TrialPruned(f"pruned after epoch {solver.epoch}")


def counted_trials(study):
    """Trials that count towards n_trials: finished (complete, pruned, or failed with a
    recorded error such as divergence) or running. A trial a killed worker left behind
    is marked failed without an error and does not count: it is run again. Enqueued
    trials not yet started do not count either."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (states.COMPLETE, states.PRUNED, states.RUNNING)
               or (t.state == states.FAIL and "error" in t.user_attrs))


def tune_worker(plan, worker=0, say=print):
    """Run trials of the study ``plan`` describes until it has ``n_trials``.

    ``plan`` is a dict: study, storage, n_trials, search (a list of NAME=SPEC), base (a
    RunConfig dict), out, sampler ('tpe' | 'random'), pruner ('median' | 'asha' | 'none'),
    pruner_startup (completed trials before the median pruner acts),
    sampler_seed (None or an int; worker i uses seed + i). Returns the trials it ran."""
    optuna = import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = search_space(plan["search"])
    base = RunConfig.from_dict(plan["base"])
    seed = plan.get("sampler_seed")
    seed = None if seed is None else seed + worker
    sampler = (optuna.samplers.RandomSampler(seed=seed) if plan["sampler"] == "random"
               else optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))
    study = optuna.load_study(study_name=plan["study"], storage=make_storage(plan["storage"]),
                              sampler=sampler,
                              pruner=make_pruner(plan["pruner"], plan.get("pruner_startup", 5)))
    datasets = {}  # the data of each distinct DATA_FIELDS combination, loaded once
    host = socket.gethostname()

    def objective(trial):
        values = {name: dim.suggest(trial) for name, dim in space.items()}
        config = RunConfig.from_dict({**base.to_dict(), **values})
        out = os.path.join(plan["out"], "trials", f"trial-{trial.number:04d}")
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("out", out)
        trial.set_user_attr("host", host)
        trial.set_user_attr("worker", f"{host}:{os.getpid()}")
        key = tuple(repr(getattr(config, name)) for name in DATA_FIELDS)
        if key not in datasets:
            datasets[key] = load_config_dataset(config)
        start = time.perf_counter()
        try:
            results = run(config, out=out, force=True, verbose=0,
                          callbacks=[TrialReporter(trial)], dataset=datasets[key])
        except (ValueError, FloatingPointError) as err:
            # A configuration that cannot train (a diverging learning rate, a layer that
            # does not fit): recorded, counted, and the search goes on.
            trial.set_user_attr("error", str(err))
            say(f"trial {trial.number} failed: {err}")
            raise
        except optuna.TrialPruned:
            say(f"trial {trial.number} pruned after epoch {trial.user_attrs.get('epochs')}"
                f" ({_params_text(trial.params)})")
            raise
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 1))
        say(f"trial {trial.number} complete: best val acc {results['best_val_acc']:.4f} in "
            f"{time.perf_counter() - start:.0f} s ({_params_text(trial.params)})")
        return results["best_val_acc"]

    ran = 0
    while counted_trials(study) < plan["n_trials"]:
        study.optimize(objective, n_trials=1, catch=(ValueError, FloatingPointError))
        ran += 1
    return ran


def make_pruner(name, startup=5):
    """Optuna pruner by name: 'median' (stop a trial whose accuracy falls below the median
    of earlier trials at the same epoch), 'asha' (successive halving), or 'none'."""
    optuna = import_optuna()
    pruners = {
        # Not before ``startup`` trials completed, nor on a first epoch: too few or too noisy
        # values make the median a high bar that prunes nearly everything.
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=startup,
                                                      n_warmup_steps=2),  # steps: epochs
        "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1,
                                                               reduction_factor=2),
        "none": optuna.pruners.NopPruner,
    }
    if name not in pruners:
        raise ValueError(f"pruner {name!r} is not one of {', '.join(pruners)}")
    return pruners[name]()


def _params_text(params):
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())


def safe_study_name(name):
    """``name`` if it is a usable study name (letters, digits, '-', '_', '.'), else
    ValueError."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name or ""):
        raise ValueError(f"study name {name!r}: use 1 to 100 letters, digits, '-', '_' or '.'")
    return name


def tune(search, n_trials, study="convlab", out="tune", storage=None, workers=1, threads=None,
         base=None, sampler="tpe", pruner="median", pruner_startup=5, sampler_seed=None,
         enqueue=(), verbose=True):
    """Search ``search`` (see the module docstring) for the RunConfig with the best
    validation accuracy, in a study of ``n_trials`` trials, and write the results to ``out``.

    - ``base``: the RunConfig the searched fields are drawn into (default RunConfig()).
    - ``storage``: None (a journal file ``out/study.journal``), a journal file's path, or a
      ``postgresql://user@host/db`` URL that workers on other machines share.
    - ``workers``: processes on this machine; each runs trials until the study has
      ``n_trials`` (``threads`` BLAS/OpenMP threads each; default cores // workers, so
      they never oversubscribe the cores).
    - ``sampler``: 'tpe' or 'random' (``sampler_seed`` makes it repeatable); ``pruner``:
      'median' (from epoch 2 on, once ``pruner_startup`` trials completed), 'asha' or
      'none'. ``enqueue``: params dicts tried first in a new study (a list field as its
      text, "512-256").

    Calling it again with the same study and storage continues the study. Returns the
    results dict of :func:`convlab.tune_results.write_results` (leaderboard rows, best
    trial, files written)."""
    optuna = import_optuna()
    from convlab.tune_results import write_results

    safe_study_name(study)
    check_count("n_trials", n_trials, allow_zero=False)
    check_count("workers", workers, allow_zero=False)
    if threads is not None:
        check_count("threads", threads, allow_zero=False)
    space = search_space(search)
    base = RunConfig() if base is None else base
    if not isinstance(base, RunConfig):
        raise TypeError(f"base must be a RunConfig, got {type(base).__name__}")
    base.validate()
    check_count("pruner_startup", pruner_startup)
    make_pruner(pruner, pruner_startup)
    if sampler not in ("tpe", "random"):
        raise ValueError(f"sampler {sampler!r} is not one of tpe, random")
    for params in enqueue:
        unknown = set(params) - set(space)
        if unknown:
            raise ValueError(f"enqueued params {sorted(unknown)} are not searched")
    out = os.path.abspath(os.fspath(out))
    os.makedirs(out, exist_ok=True)
    storage = os.path.join(out, "study.journal") if storage is None else os.fspath(storage)
    plan = {"study": study, "storage": storage, "n_trials": n_trials,
            "search": [dim.spec() for dim in space.values()], "base": base.to_dict(),
            "out": out, "sampler": sampler, "pruner": pruner, "pruner_startup": pruner_startup,
            "sampler_seed": sampler_seed}
    say = print if verbose else (lambda *args: None)
    with _journal_lock(storage):
        storage_obj = make_storage(storage)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study_obj = optuna.create_study(study_name=study, storage=storage_obj,
                                        direction="maximize", load_if_exists=True)
        _check_same_search(study_obj, plan)
        if "://" not in storage:
            _fail_abandoned(study_obj, storage_obj, say)
        if not study_obj.trials:
            for params in enqueue:
                study_obj.enqueue_trial(params)
        done = counted_trials(study_obj)
        say(f"study {study!r}: {done} of {n_trials} trials done; {workers} worker(s)"
            + (f", {threads} thread(s) each" if threads else ""))
        if workers == 1 and threads is None:
            tune_worker(plan, 0, say)
        else:
            _run_worker_processes(plan, workers, threads)
    return write_results(study_obj, out, say)


def _check_same_search(study, plan):
    """A continued study must search what it searched when it was created."""
    # One attribute, written in one call: a second machine starting at the same moment
    # sees all of it or none of it (and then writes the same value).
    wanted = {"search": plan["search"], "base": plan["base"]}
    saved = study.user_attrs.get("plan")
    if saved is None:
        study.set_user_attr("plan", wanted)
    elif saved != wanted:
        changed = "search space" if saved["search"] != wanted["search"] else "base configuration"
        raise ValueError(
            f"study {plan['study']!r} in {plan['storage']} was created with search "
            f"{' '.join(saved['search'])} and another {changed}; continue it with the same "
            "options, or give a new --study"
        )


@contextmanager
def _journal_lock(storage):
    """For a journal file: one launcher at a time (so any trial found running was left by
    a killed worker). A database storage needs none: heartbeats find abandoned trials."""
    if "://" in storage:
        yield
        return
    fd = os.open(storage + ".launcher-lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another convlab-tune is running on {storage}; add workers "
                             "with --workers instead of a second command") from None
        yield
    finally:
        os.close(fd)


def _fail_abandoned(study, storage, say):
    optuna = import_optuna()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # The study's own storage call: FrozenTrial keeps its storage id private.
        storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
        say(f"trial {trial.number} was left running by a stopped worker: it will be run again")


def _run_worker_processes(plan, workers, threads):
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    plan_path = os.path.join(plan["out"], "plan.json")
    with open(plan_path + ".tmp", "w") as f:
        json.dump(plan, f, indent=2)
    os.replace(plan_path + ".tmp", plan_path)
    env = {**os.environ, **{name: str(threads) for name in
                            ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    procs = [subprocess.Popen([sys.executable, "-m", "convlab.tune_cli", "--worker", plan_path,
                               "--worker-index", str(i)], env=env) for i in range(workers)]
    try:
        codes = [proc.wait() for proc in procs]
    except KeyboardInterrupt:
        for proc in procs:  # a terminal's Ctrl-C reached them too; wait for their cleanup
            proc.wait()
        raise
    failed = [i for i, code in enumerate(codes) if code != 0]
    if failed:
        raise RuntimeError(f"tuning worker(s) {failed} exited with status "
                           f"{[codes[i] for i in failed]}")
