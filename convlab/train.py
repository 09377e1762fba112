"""Train a classifier from the command line: ``python -m convlab.train`` or ``convlab-train``.

Data (``--data``): ``auto`` (CIFAR-10 when found, else the built-in offline dataset),
``builtin``, ``cifar10`` (the official python-version batches), or a path to an image folder
``root/<class>/<image>`` or a ``.tar``/``.tar.gz`` of one (the last ``--val-per-class``
images of each class are held out for validation).

The output directory receives ``config.json`` (the run's arguments), ``checkpoint.npz``
(full training state, rewritten atomically after every epoch and on Ctrl-C),
``metrics.csv`` (one row per epoch), ``curves.png`` (loss and accuracy) and, at the end,
``model.npz`` (load it with ``convlab.load_model``).

Run directories are never lost or mixed: while a run writes ``--out`` it holds a lock
(a second run there is refused, naming the process; a killed run's lock dies with it), a new
run refuses a directory holding an earlier run unless ``--force`` is given, and ``--resume``
continues a run from its checkpoint with its saved configuration, to the same final numbers
as an uninterrupted run. On resume only ``--epochs`` may change (more epochs extend the
learning-rate schedule); any other changed option is refused, not ignored. Expected
failures print one line on stderr and exit with status 2.
"""

import argparse
import sys

from convlab.run import RunConfig, RunDir, run
from convlab.schedules import SCHEDULES


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
                   help="continue the run in --out from its checkpoint, with its saved "
                        "configuration; of the other options only --epochs may change")
    p.add_argument("--force", action="store_true",
                   help="start a new run in --out even if it holds one (deleting that run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-iteration lines")
    return p


def config_from_args(args):
    """The RunConfig of parsed arguments (every RunConfig field is a flag)."""
    return RunConfig.from_dict({name: getattr(args, name) for name in RunConfig().to_dict()})


def explicit_options(parser, argv):
    """The RunConfig fields given on the command line (not left at their defaults)."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    given = vars(parser.parse_args(argv))
    return {name: value for name, value in given.items() if name in RunConfig().to_dict()}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.resume:
            # The saved configuration, with the changes a resumed run accepts; run() refuses
            # any other change instead of silently ignoring it.
            saved = RunDir(args.out).read_config().to_dict()
            config = RunConfig.from_dict({**saved, **explicit_options(build_parser(), argv)})
        else:
            config = config_from_args(args)
        results = run(config, out=args.out, resume=args.resume, force=args.force,
                      verbose=not args.quiet)
    except KeyboardInterrupt:
        print(f"\nInterrupted; state saved to {args.out}/checkpoint.npz."
              f"\nContinue with: convlab-train --out {args.out} --resume")
        return 130
    except (OSError, ValueError, TypeError, FloatingPointError) as err:
        # Expected failures (bad options or data, a busy or full output directory, a
        # diverging run) are one line, not a traceback.
        message = str(err) if not isinstance(err, OSError) or not err.filename else (
            f"{err.strerror}: {err.filename}")
        print(f"convlab-train: error: {message}", file=sys.stderr)
        return 2
    print(f"Best validation accuracy: {results['best_val_acc']:.4f}")
    if results["test_acc"] is None:
        print("Test accuracy: n/a (this dataset has no test split)")
    else:
        print(f"Test accuracy: {results['test_acc']:.4f}")
    out = results["out"]
    print(f"Wall time {results['elapsed_s']:.0f} s. Model saved to {out}/model.npz; "
          f"curves in {out}/curves.png, metrics in {out}/metrics.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
