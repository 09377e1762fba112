"""Train a classifier from the command line: ``python -m convlab.train`` or ``convlab-train``.

Data (``--data``): ``auto`` (CIFAR-10 when found, else the built-in offline dataset),
``builtin``, ``cifar10`` (the official python-version batches), or a path to an image folder
``root/<class>/<image>`` or a ``.tar``/``.tar.gz`` of one (the last ``--val-per-class``
images of each class are held out for validation).

The output directory receives ``config.json`` (the run's arguments), ``checkpoint.npz``
(full training state, rewritten atomically after every epoch and on Ctrl-C),
``metrics.csv`` (one row per epoch), ``curves.png`` (loss and accuracy) and, at the end,
``model.npz`` (load it with ``convlab.load_model``). ``--resume`` continues a run from its
checkpoint with its saved configuration, to the same final numbers as an uninterrupted run.
"""

import argparse
import csv
import json
import os
import sys
import time
from functools import partial

import numpy as np

from convlab import data_utils
from convlab.classifiers import ConvNet, FullyConnectedNet, ThreeLayerConvNet
from convlab.serialization import save_model
from convlab.solver import SCHEDULES, Solver

METRICS_FIELDS = ["epoch", "train_loss", "train_acc", "val_acc", "learning_rate", "elapsed_s"]


def build_parser():
    p = argparse.ArgumentParser(
        prog="convlab-train",
        description="Train a convlab classifier on CIFAR-10, an image folder, or built-in data.",
    )
    p.add_argument("--data", default="auto",
                   help="auto | builtin | cifar10 | PATH to an image folder or tarball")
    p.add_argument("--cifar10-dir", default=None,
                   help="directory holding cifar-10-batches-py (else $CONVLAB_DATA, cache)")
    p.add_argument("--val-per-class", type=int, default=500,
                   help="images per class held out for validation from an image folder")
    p.add_argument("--num-train", type=int, default=None,
                   help="use only the first N training examples (default: all)")
    p.add_argument("--builtin-size", type=int, nargs=3, default=[10000, 1000, 1000],
                   metavar=("TRAIN", "VAL", "TEST"), help="built-in dataset split sizes")
    p.add_argument("--model", default="threelayer",
                   help="fc | threelayer | a ConvNet preset name or architecture string")
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[512, 256],
                   help="fc: hidden layer sizes")
    p.add_argument("--normalization", choices=["none", "batchnorm", "layernorm"],
                   default="batchnorm", help="fc: normalization after each hidden affine")
    p.add_argument("--dropout-keep", type=float, default=1.0,
                   help="fc: dropout keep probability (1 = no dropout; dropout masks are not "
                        "reproduced exactly by --resume)")
    p.add_argument("--num-filters", type=int, default=32, help="threelayer: conv filters")
    p.add_argument("--filter-size", type=int, default=7, help="threelayer: conv filter size")
    p.add_argument("--hidden-dim", type=int, default=100, help="threelayer: hidden units")
    p.add_argument("--weight-scale", type=float, default=None,
                   help="std of initial weights (default: He initialisation sqrt(2/fan_in))")
    p.add_argument("--reg", type=float, default=0.0, help="L2 regularisation in the loss")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--update-rule", default="adam",
                   help="sgd | sgd_momentum | nesterov_momentum | adagrad | rmsprop | adam")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--lr-schedule", choices=["none", *SCHEDULES], default="cosine")
    p.add_argument("--lr-decay", type=float, default=1.0,
                   help="multiply the learning rate by this after every epoch "
                        "(with --lr-schedule none)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="added weight_decay * w to the gradient of every weight")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random crops (padding 4) and horizontal flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/latest", help="output directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-iteration lines")
    return p


# ----------------------------------------------------------------------------- data


def load_data(args):
    """Returns (data dict with X_/y_ train/val and optionally test, description)."""
    dtype = np.dtype(args.dtype)
    source = args.data
    if source == "auto":
        try:
            data_utils.find_CIFAR10_dir(args.cifar10_dir)
            source = "cifar10"
        except FileNotFoundError:
            print("CIFAR-10 not found; training on the built-in offline dataset "
                  "(see README to use CIFAR-10).")
            source = "builtin"
    if source == "builtin":
        num_train, num_val, num_test = args.builtin_size
        data = data_utils.load_builtin_dataset(num_train, num_val, num_test, seed=args.seed,
                                               dtype=dtype)
        description = "built-in shapes dataset"
    elif source == "cifar10":
        data = data_utils.get_CIFAR10_data(cifar10_dir=args.cifar10_dir, dtype=dtype)
        description = "CIFAR-10"
    else:
        X, y, class_names = data_utils.load_image_folder(source)
        X_train, y_train, X_val, y_val = data_utils.split_per_class(X, y, args.val_per_class)
        X_train, mean, std = data_utils.preprocess_images(X_train, dtype=dtype)
        X_val, _, _ = data_utils.preprocess_images(X_val, mean, std, dtype=dtype)
        data = {"X_train": X_train, "y_train": y_train, "X_val": X_val, "y_val": y_val,
                "class_names": class_names}
        description = f"image folder {source}"
    if args.num_train is not None:
        data["X_train"] = data["X_train"][: args.num_train]
        data["y_train"] = data["y_train"][: args.num_train]
    return data, description


# ----------------------------------------------------------------------------- model


def build_model(args, input_shape, num_classes):
    """The classifier named by --model; weight_scale None means He initialisation."""
    dtype = np.dtype(args.dtype)
    if args.model == "fc":
        model = FullyConnectedNet(
            args.hidden_dims,
            input_dim=int(np.prod(input_shape)),
            num_classes=num_classes,
            dropout_keep_ratio=args.dropout_keep,
            normalization=None if args.normalization == "none" else args.normalization,
            reg=args.reg,
            weight_scale=args.weight_scale,
            dtype=dtype,
            seed=args.seed,
        )
        return unfix_dropout_masks(model, [model.dropout_param])
    if args.model == "threelayer":
        return ThreeLayerConvNet(
            input_dim=input_shape,
            num_filters=args.num_filters,
            filter_size=args.filter_size,
            hidden_dim=args.hidden_dim,
            num_classes=num_classes,
            weight_scale=args.weight_scale,
            reg=args.reg,
            dtype=dtype,
            seed=args.seed,
        )
    model = ConvNet(
        args.model,
        input_dim=input_shape,
        num_classes=num_classes,
        weight_scale=args.weight_scale,
        reg=args.reg,
        dtype=dtype,
        seed=args.seed,
    )
    return unfix_dropout_masks(model, model.dropout_params)


def unfix_dropout_masks(model, dropout_params):
    """A model's seed also fixes its dropout masks (cs231n's gradient-check behaviour);
    training wants a fresh mask every step, so runs with dropout are not bit-reproducible
    on resume."""
    for param in dropout_params:
        param.pop("seed", None)
    return model


# ----------------------------------------------------------------------------- outputs


def write_metrics_row(path, solver, start_time, previous_elapsed):
    """Append this epoch's row to metrics.csv (header first when the file is new)."""
    per_epoch = solver.iterations_per_epoch
    losses = solver.loss_history[-per_epoch:]
    row = {
        "epoch": solver.epoch,
        "train_loss": f"{np.mean(losses):.6f}",
        "train_acc": f"{solver.train_acc_history[-1]:.6f}",
        "val_acc": f"{solver.val_acc_history[-1]:.6f}",
        "learning_rate": f"{solver.lr_history[-1]:.6g}",
        "elapsed_s": f"{previous_elapsed + time.perf_counter() - start_time:.1f}",
    }
    new_file = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS_FIELDS)
        if new_file:
            writer.writeheader()
        writer.writerow(row)


def read_metrics(path, up_to_epoch):
    """Rows of metrics.csv for epochs <= up_to_epoch (a resumed run drops later ones)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["epoch"]) <= up_to_epoch]


def rewrite_metrics(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def save_curves(path, solver):
    # Imported lazily: matplotlib is slow to import and only needed once per epoch.
    from convlab.vis_utils import plot_solver_history

    fig = plot_solver_history(solver)
    fig.savefig(path, dpi=100)


# ----------------------------------------------------------------------------- main


def run(args, resume=False):
    os.makedirs(args.out, exist_ok=True)
    paths = {name: os.path.join(args.out, name) for name in
             ("config.json", "checkpoint.npz", "metrics.csv", "curves.png", "model.npz")}

    data, description = load_data(args)
    input_shape = data["X_train"].shape[1:]
    num_classes = int(max(data["y_train"].max(), data["y_val"].max())) + 1
    model = build_model(args, input_shape, num_classes)
    print(f"Training {args.model} on {description}: {len(data['X_train'])} train, "
          f"{len(data['X_val'])} val examples of shape {input_shape}, {num_classes} classes")

    start_time = time.perf_counter()
    previous_elapsed = 0.0

    def end_of_epoch(solver):
        write_metrics_row(paths["metrics.csv"], solver, start_time, previous_elapsed)
        solver.save(paths["checkpoint.npz"])
        save_curves(paths["curves.png"], solver)

    solver = Solver(
        model,
        data,
        update_rule=args.update_rule,
        optim_config={"learning_rate": args.lr},
        lr_decay=args.lr_decay,
        lr_schedule=None if args.lr_schedule == "none" else args.lr_schedule,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        num_epochs=args.epochs,
        num_train_samples=1000,
        num_val_samples=None,
        augment=partial(data_utils.random_crop_flip, pad=4) if args.augment else None,
        shuffle=True,
        seed=args.seed,
        verbose=not args.quiet,
        print_every=max(len(data["X_train"]) // args.batch_size // 4, 1),
        on_epoch_end=end_of_epoch,
    )
    if resume:
        solver.load(paths["checkpoint.npz"])
        rows = read_metrics(paths["metrics.csv"], solver.epoch)
        rewrite_metrics(paths["metrics.csv"], rows)
        previous_elapsed = float(rows[-1]["elapsed_s"]) if rows else 0.0
        print(f"Resuming from epoch {solver.epoch} of {args.epochs}")
    else:
        with open(paths["config.json"], "w") as f:
            json.dump(vars(args), f, indent=2)
        for name in ("metrics.csv", "checkpoint.npz"):
            if os.path.exists(paths[name]):
                os.remove(paths[name])

    try:
        solver.train()
    except KeyboardInterrupt:
        solver.save(paths["checkpoint.npz"])
        print(f"\nInterrupted at epoch {solver.epoch}; state saved to {paths['checkpoint.npz']}."
              f"\nContinue with: convlab-train --out {args.out} --resume")
        return 130

    save_model(model, paths["model.npz"])
    # The Solver measured it on the whole validation set (num_val_samples=None) and kept
    # those parameters, so there is nothing to recompute.
    print(f"Best validation accuracy: {solver.best_val_acc:.4f}")
    if "X_test" in data:
        test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
        print(f"Test accuracy: {test_acc:.4f}")
    else:
        print("Test accuracy: n/a (this dataset has no test split)")
    elapsed = previous_elapsed + time.perf_counter() - start_time
    print(f"Wall time {elapsed:.0f} s. Model saved to {paths['model.npz']}; "
          f"curves in {paths['curves.png']}, metrics in {paths['metrics.csv']}")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    resume = args.resume
    if resume:
        config_path = os.path.join(args.out, "config.json")
        if not os.path.exists(config_path):
            parser.error(f"--resume: no run to continue in {args.out} (no config.json)")
        with open(config_path) as f:
            saved = json.load(f)
        # The run continues with the arguments it started with, so it ends where it would have.
        args = argparse.Namespace(**{**saved, "out": args.out, "resume": True})
    try:
        return run(args, resume=resume)
    except (FileNotFoundError, ValueError) as err:
        print(f"convlab-train: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
