"""Training runs from plain configurations: ``run(RunConfig(...), out=DIR)``.

``RunConfig`` is everything that decides what a run computes (data, model, optimisation),
as a dataclass that round-trips through JSON; ``RunDir`` is the run's directory
(``config.json``, ``checkpoint.npz``, ``metrics.csv``, ``curves.png``, ``model.npz``);
``run`` trains and returns the results. The command line (convlab.train) and
hyperparameter search build a RunConfig and call ``run``; nothing else trains from a config.
"""

import csv
import dataclasses
import difflib
import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from convlab import optim
from convlab._checks import check_count
from convlab.backend import check_device
from convlab.callbacks import Checkpoint, Curves, MetricsCSV
from convlab.classifiers import ConvNet, FullyConnectedNet, ThreeLayerConvNet
from convlab.classifiers.convnet_grammar import expand_spec
from convlab.classifiers.convnet_layers import VALID_KINDS, parse_layer
from convlab.data import SOURCES, load_dataset, random_crop_flip
from convlab.schedules import SCHEDULES
from convlab.serialization import remove_stale_temporaries, save_model
from convlab.solver import Solver, StopNow

__all__ = ["DATA_FIELDS", "RESUMABLE", "RunConfig", "RunDir", "TrainingInterrupted", "build_model",
           "load_config_dataset", "run"]

MODEL_NAMES = tuple(dict.fromkeys(("fc", "threelayer", *ConvNet.PRESETS)))

# What a resumed run may change: the rest decides what the checkpoint's numbers mean.
RESUMABLE = ("epochs",)

# The RunConfig fields that decide the dataset (load_config_dataset reads these only).
DATA_FIELDS = ("data", "cifar10_dir", "val_per_class", "num_train", "builtin_size", "seed",
               "dtype")

# Keys of config.json files written before RunConfig existed (the CLI's flags); they are
# run options, not configuration, and are dropped when such a file is read.
_LEGACY_KEYS = ("out", "resume", "quiet")


@dataclass
class RunConfig:
    """What a training run computes. Field names match convlab-train's flags.

    data: 'auto' | 'builtin' | 'cifar10' | path of an image folder or tarball.
    model: 'fc' | 'threelayer' | a ConvNet preset name or architecture string.
    fc uses hidden_dims, normalization ('none' | 'batchnorm' | 'layernorm') and
    dropout_keep; threelayer uses num_filters, filter_size, hidden_dim. weight_scale None
    is He initialisation. lr_schedule is 'none' or a name in convlab.schedules; lr_decay
    applies only with 'none'. seed seeds the built-in data, the initial weights and the
    Solver (batches, augmentation, dropout masks).
    """

    data: str = "auto"
    cifar10_dir: str | None = None
    val_per_class: int = 500
    num_train: int | None = None
    builtin_size: list = field(default_factory=lambda: [10000, 1000, 1000])
    model: str = "threelayer"
    hidden_dims: list = field(default_factory=lambda: [512, 256])
    normalization: str = "batchnorm"
    dropout_keep: float = 1.0
    num_filters: int = 32
    filter_size: int = 7
    hidden_dim: int = 100
    weight_scale: float | None = None
    reg: float = 0.0
    epochs: int = 5
    batch_size: int = 64
    update_rule: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    lr_decay: float = 1.0
    weight_decay: float = 0.0
    dtype: str = "float32"
    augment: bool = True
    seed: int = 0

    def __post_init__(self):
        # Model and preset names are case-insensitive ("Reference" is "reference").
        if isinstance(self.model, str) and self.model.strip().lower() in MODEL_NAMES:
            self.model = self.model.strip().lower()

    def to_dict(self):
        """The fields as a plain dict (JSON-ready: numbers, strings, lists, None)."""
        return dataclasses.asdict(self)

    def validate(self):
        """Check everything that needs no data (names, sizes, the architecture string), so a
        mistake fails in milliseconds instead of after loading; ValueError/TypeError say what
        was expected, FileNotFoundError names a data path that does not exist."""
        if self.data not in SOURCES and not os.path.exists(self.data):
            raise FileNotFoundError(
                f"data {self.data!r} is neither one of {', '.join(SOURCES)} nor an existing "
                f"image folder or archive{_did_you_mean(self.data, SOURCES)}"
            )
        if self.model not in ("fc", "threelayer"):
            try:
                for token in expand_spec(ConvNet.PRESETS.get(self.model, self.model)):
                    parse_layer(token)
            except ValueError:
                if any(c in self.model for c in ",[]"):
                    raise  # an architecture string: the grammar's message says what is wrong
                raise ValueError(
                    f"unknown model {self.model!r}{_did_you_mean(self.model, MODEL_NAMES)}; "
                    f"models: {', '.join(MODEL_NAMES)}, or an architecture string of "
                    f"{VALID_KINDS}"
                ) from None
        choices = {
            "normalization": ("none", "batchnorm", "layernorm"),
            "update_rule": tuple(optim.UPDATE_RULES),
            "lr_schedule": ("none", *SCHEDULES),
            "dtype": ("float32", "float64"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        check_count("batch_size", self.batch_size, allow_zero=False)
        check_count("epochs", self.epochs)
        for size in self.builtin_size:
            check_count("builtin_size", size)
        if self.num_train is not None:
            check_count("num_train", self.num_train, allow_zero=False)
        for name in ("lr", "reg", "weight_decay", "lr_decay"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        return self

    @classmethod
    def from_dict(cls, values):
        """A RunConfig from a dict such as to_dict() gives; ValueError on unknown keys.
        Missing keys take their defaults."""
        values = {k: v for k, v in values.items() if k not in _LEGACY_KEYS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown run configuration keys: {', '.join(unknown)}")
        return cls(**values)

    def to_json(self):
        """The config as the JSON text config.json holds."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text):
        """The RunConfig of JSON text from :meth:`to_json`; ValueError when it is not one."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"run configuration is not valid JSON: {err}") from None
        if not isinstance(values, dict):
            raise ValueError("run configuration must be a JSON object")
        return cls.from_dict(values)


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def build_model(config, input_shape, num_classes):
    """The classifier ``config.model`` names, for inputs of ``input_shape``."""
    dtype = np.dtype(config.dtype)
    common = dict(num_classes=num_classes, weight_scale=config.weight_scale, reg=config.reg,
                  dtype=dtype, seed=config.seed)
    if config.model == "fc":
        return FullyConnectedNet(
            config.hidden_dims,
            input_dim=int(np.prod(input_shape)),
            dropout_keep_ratio=config.dropout_keep,
            normalization=None if config.normalization == "none" else config.normalization,
            **common,
        )
    if config.model == "threelayer":
        return ThreeLayerConvNet(
            input_dim=input_shape,
            num_filters=config.num_filters,
            filter_size=config.filter_size,
            hidden_dim=config.hidden_dim,
            **common,
        )
    return ConvNet(config.model, input_dim=input_shape, **common)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training between two steps; the state was saved to ``checkpoint``."""

    def __init__(self, checkpoint, epoch):
        super().__init__(f"interrupted at epoch {epoch}; state saved to {checkpoint}")
        self.checkpoint, self.epoch = checkpoint, epoch


class RunDirBusy(ValueError):
    """Another process is writing this run directory."""


class RunDir:
    """A run's directory and the files in it.

    ``with run_dir.lock():`` holds an exclusive lock (flock on ``.lock``, which holds the
    owner's pid) while a run writes the directory: a second process is refused with an error
    naming the owner, and the lock vanishes with its process, so a killed run leaves no
    stale lock behind.
    """

    NAMES = ("config.json", "checkpoint.npz", "metrics.csv", "curves.png", "model.npz")

    def __init__(self, path):
        self.path = os.fspath(path)
        for name in self.NAMES:
            setattr(self, name.replace(".", "_"), os.path.join(self.path, name))
        self.lock_path = os.path.join(self.path, ".lock")

    @contextmanager
    def lock(self):
        """Context manager holding the directory's lock (an flock on ``.lock``, which dies
        with the process); RunDirBusy, naming the holder's pid, when another run holds it."""
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                raise RunDirBusy(
                    f"{self.path} is in use by another run (process {owner}); wait for it "
                    "to finish or choose another --out"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            # Only a killed writer leaves temporaries, and none can be writing now.
            remove_stale_temporaries(self.path)
            yield self
        finally:
            os.close(fd)  # releases the lock

    def existing(self):
        """Names of the run files already in the directory."""
        return [name for name in self.NAMES if os.path.exists(os.path.join(self.path, name))]

    def write_config(self, config):
        """Write ``config`` to config.json atomically (a temporary file, then a rename)."""
        os.makedirs(self.path, exist_ok=True)
        tmp = self.config_json + ".tmp"
        with open(tmp, "w") as f:
            f.write(config.to_json())
        os.replace(tmp, self.config_json)

    def read_config(self):
        """The RunConfig saved in config.json; FileNotFoundError when there is none."""
        if not os.path.exists(self.config_json):
            raise FileNotFoundError(f"no run to continue in {self.path} (no config.json)")
        with open(self.config_json) as f:
            return RunConfig.from_json(f.read())

    def start_fresh(self, force=False):
        """Make the directory ready for a new run. A directory holding an earlier run is
        refused (FileExistsError) unless ``force``, which deletes that run's files."""
        found = self.existing()
        if found and not force:
            raise FileExistsError(
                f"{self.path} already holds a run ({', '.join(found)}); continue it with "
                "--resume, replace it with --force, or choose another --out"
            )
        for name in found:
            os.remove(os.path.join(self.path, name))

    def truncate_metrics(self, up_to_epoch):
        """Keep the metrics rows of epochs <= up_to_epoch (a resumed run rewrites later
        ones); returns the wall time the kept epochs took."""
        if not os.path.exists(self.metrics_csv):
            return 0.0
        with open(self.metrics_csv, newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["epoch"]) <= up_to_epoch]
        tmp = self.metrics_csv + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=MetricsCSV.FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_csv)
        return float(rows[-1]["elapsed_s"]) if rows else 0.0


def run(config, out="runs/latest", resume=False, force=False, verbose=1, callbacks=(),
        dataset=None, device=None):
    """Train the run ``config`` describes, writing its directory ``out``.

    A new run refuses a directory that holds an earlier run unless ``force=True`` (which
    deletes that run's files). ``resume=True`` continues the run in ``out`` from its
    checkpoint with its saved configuration; ``config`` may then be None, or a RunConfig
    that differs from the saved one only in the fields in RESUMABLE (e.g. more epochs:
    the learning-rate schedule then spans the new length). While it runs, ``out`` is locked
    against other processes. ``callbacks`` are extra Solver callbacks (e.g. to report each
    epoch to a tuner). ``dataset``: what ``load_config_dataset(config)`` returns, when the
    caller already has it (a tuning worker loads it once for all its trials). ``device``:
    'cpu', 'cuda' or 'cuda:K' to train on (None: the CPU); where a run trains is not part
    of its configuration, so a run started on a GPU may be resumed on a CPU and back, and
    its files are the same either way.

    Returns a dict: ``best_val_acc``, ``test_acc`` (None without a test split),
    ``epochs`` (completed), ``elapsed_s``, ``history`` (loss_history, train_acc_history,
    val_acc_history, lr_history) and ``out``. ``verbose``: 0 (silent), 1 (a progress bar per
    epoch and loss lines; True means 1), 2 (one line per epoch). A Ctrl-C during training
    saves the checkpoint, then raises TrainingInterrupted (a KeyboardInterrupt); a second
    Ctrl-C (the Solver's StopNow) or one while loading data stops without saving.
    """
    run_dir = RunDir(out)
    device = check_device("cpu" if device is None else device)  # before any data loads
    if config is not None and not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    if not resume and config is None:
        raise TypeError("a new run needs a RunConfig")
    if resume:
        config = _resumed_config(run_dir, config)
    config.validate()
    with run_dir.lock():
        if resume and not os.path.exists(run_dir.checkpoint_npz):
            raise FileNotFoundError(f"no checkpoint to resume in {run_dir.path}")
        if not resume:
            run_dir.start_fresh(force)
        run_dir.write_config(config)
        return _train(config, run_dir, resume, verbose, callbacks, dataset, device)


def load_config_dataset(config, progress=False):
    """The dataset ``config`` trains on (load_dataset of its DATA_FIELDS)."""
    return load_dataset(config.data, sizes=config.builtin_size, seed=config.seed,
                        dtype=config.dtype, cifar10_dir=config.cifar10_dir,
                        val_per_class=config.val_per_class, num_train=config.num_train,
                        progress=progress)


def _resumed_config(run_dir, requested):
    saved = run_dir.read_config()
    if requested is None:
        return saved
    changed = {name: (old, getattr(requested, name)) for name, old in saved.to_dict().items()
               if getattr(requested, name) != old}
    refused = {name: pair for name, pair in changed.items() if name not in RESUMABLE}
    if refused:
        detail = "; ".join(f"{name}: saved {old!r}, asked {new!r}"
                           for name, (old, new) in refused.items())
        raise ValueError(
            f"--resume continues the run in {run_dir.path} as it was configured and cannot "
            f"change {detail}. A resumed run may change only: {', '.join(RESUMABLE)}"
        )
    return requested


def _train(config, run_dir, resume, verbose, callbacks, dataset, device):
    say = print if verbose else (lambda *args: None)

    data = dataset if dataset is not None else load_config_dataset(config, bool(verbose))
    if config.data == "auto" and data["source"] == "builtin":
        say("CIFAR-10 not found; training on the built-in offline dataset "
            "(see README to use CIFAR-10).")
    input_shape = data["X_train"].shape[1:]
    num_classes = int(max(data["y_train"].max(), data["y_val"].max())) + 1
    model = build_model(config, input_shape, num_classes)
    say(f"Training {config.model} on {data['description']}: {len(data['X_train'])} train, "
        f"{len(data['X_val'])} val examples of shape {input_shape}, {num_classes} classes")

    metrics = MetricsCSV(run_dir.metrics_csv)
    solver = Solver(
        model,
        data,
        update_rule=config.update_rule,
        optim_config={"learning_rate": config.lr},
        lr_decay=config.lr_decay,
        lr_schedule=None if config.lr_schedule == "none" else config.lr_schedule,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        num_epochs=config.epochs,
        num_train_samples=1000,
        num_val_samples=None,
        augment=partial(random_crop_flip, pad=4) if config.augment else None,
        shuffle=True,
        seed=config.seed,
        verbose=bool(verbose),
        progress=verbose == 1,
        print_every=max(len(data["X_train"]) // config.batch_size // 4, 1) if verbose == 1
        else None,
        callbacks=[metrics, Checkpoint(run_dir.checkpoint_npz), Curves(run_dir.curves_png),
                   *callbacks],
        device=device,
    )
    if resume:
        solver.load(run_dir.checkpoint_npz)
        metrics.elapsed_offset = run_dir.truncate_metrics(solver.epoch)
        say(f"Resuming from epoch {solver.epoch} of {config.epochs}")

    try:
        solver.train()
    except StopNow:
        raise
    except KeyboardInterrupt:
        solver.save(run_dir.checkpoint_npz)
        raise TrainingInterrupted(run_dir.checkpoint_npz, solver.epoch) from None

    save_model(model, run_dir.model_npz)
    test_acc = None
    if "X_test" in data:
        test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
    return {
        "best_val_acc": solver.best_val_acc,
        "test_acc": test_acc,
        "epochs": solver.epoch,
        "elapsed_s": metrics.elapsed(),
        "history": {key: list(getattr(solver, key)) for key in
                    ("loss_history", "train_acc_history", "val_acc_history", "lr_history")},
        "out": run_dir.path,
    }
