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

from convlab._threads import set_num_threads
from convlab.callbacks import TensorBoard
from convlab.run import RunConfig, RunDir, TrainingInterrupted, run
from convlab.schedules import SCHEDULES


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other failure."""

    def error(self, message):
        # One line, like every other failure of the command.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    """The command line; every RunConfig field is an option, with RunConfig's default."""
    p = OneLineErrorParser(
        prog="convlab-train",
        description="Train a convlab classifier on CIFAR-10, an image folder, or built-in data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arguments(p)
    run_opts = p.add_argument_group("run")
    run_opts.add_argument("--out", default="runs/latest",
                          help="output directory: config.json, checkpoint.npz, metrics.csv, "
                               "curves.png, model.npz")
    run_opts.add_argument("--resume", action="store_true",
                          help="continue the run in --out from its checkpoint, with its saved "
                               "configuration; of the other options only --epochs may change")
    run_opts.add_argument("--force", action="store_true",
                          help="start a new run in --out even if it holds one (deleting it)")
    run_opts.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                          help="0: silent but for the result; 1: a progress bar per epoch and "
                               "loss lines; 2: one line per epoch")
    run_opts.add_argument("--quiet", action="store_const", const=0, dest="verbose",
                          help="the same as --verbose 0")
    run_opts.add_argument("--threads", type=int, default=None, metavar="N",
                          help="CPU threads for the kernels and the BLAS (default: "
                               "OMP_NUM_THREADS, else every CPU this process may use)")
    run_opts.add_argument("--device", default="cpu",
                          help="where to train: cpu, cuda (the current GPU) or cuda:K; a GPU "
                               "needs pip install 'convlab[gpu]'. Not part of the run's "
                               "configuration: a run may be resumed on another device")
    run_opts.add_argument("--tensorboard", metavar="LOGDIR", default=None,
                          help="also write TensorBoard logs (losses, accuracies, learning rate, "
                               "weight and gradient histograms) to LOGDIR; needs "
                               "pip install 'convlab[tensorboard]'")
    return p


def add_config_arguments(p):
    """Add every RunConfig field to parser ``p`` as an option (groups data, model, training),
    with RunConfig's default (convlab-tune uses them for the base configuration)."""
    d = RunConfig()
    data = p.add_argument_group("data")
    data.add_argument("--data", default=d.data,
                      help="auto (CIFAR-10 when found, else builtin) | builtin | cifar10 | PATH "
                           "of an image folder <class>/<image> or a .tar/.tar.gz of one")
    data.add_argument("--cifar10-dir", default=d.cifar10_dir,
                      help="directory holding cifar-10-batches-py (else $CONVLAB_DATA, then "
                           "~/.cache/convlab)")
    data.add_argument("--val-per-class", type=int, default=d.val_per_class,
                      help="images per class an image folder holds out for validation")
    data.add_argument("--num-train", type=int, default=d.num_train,
                      help="train on N examples drawn per class (None: all)")
    data.add_argument("--builtin-size", type=int, nargs=3, default=d.builtin_size,
                      metavar=("TRAIN", "VAL", "TEST"), help="built-in dataset split sizes")
    data.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.augment,
                      help="random crops (padding 4) and horizontal flips")
    model = p.add_argument_group("model")
    model.add_argument("--model", default=d.model,
                       help="fc | threelayer | a ConvNet preset (reference, vgg_small, "
                            "resnet_small) | an architecture string such as "
                            "'[conv3-32,bn,relu]x2,pool,fc10' (case-insensitive)")
    model.add_argument("--hidden-dims", type=int, nargs="+", default=d.hidden_dims,
                       help="fc: hidden layer sizes")
    model.add_argument("--normalization", type=str.lower, default=d.normalization,
                       choices=["none", "batchnorm", "layernorm"],
                       help="fc: normalization after each hidden affine layer")
    model.add_argument("--dropout-keep", type=float, default=d.dropout_keep,
                       help="fc: dropout keep probability (1: no dropout)")
    model.add_argument("--num-filters", type=int, default=d.num_filters,
                       help="threelayer: conv filters")
    model.add_argument("--filter-size", type=int, default=d.filter_size,
                       help="threelayer: conv filter size (odd)")
    model.add_argument("--hidden-dim", type=int, default=d.hidden_dim,
                       help="threelayer: hidden units")
    model.add_argument("--weight-scale", type=float, default=d.weight_scale,
                       help="std of the initial weights (None: He initialisation "
                            "sqrt(2/fan_in), the scores layer scaled down)")
    model.add_argument("--dtype", type=str.lower, default=d.dtype,
                       choices=["float32", "float64"], help="parameter and data dtype")
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=d.epochs, help="epochs to train")
    train.add_argument("--batch-size", type=int, default=d.batch_size, help="minibatch size")
    train.add_argument("--update-rule", type=str.lower, default=d.update_rule,
                       help="sgd | sgd_momentum | nesterov_momentum | adagrad | rmsprop | adam")
    train.add_argument("--lr", type=float, default=d.lr, help="(base) learning rate")
    train.add_argument("--lr-schedule", type=str.lower, default=d.lr_schedule,
                       choices=["none", *SCHEDULES],
                       help="learning-rate schedule over the run (convlab.schedules)")
    train.add_argument("--lr-decay", type=float, default=d.lr_decay,
                       help="multiply the learning rate by this after every epoch "
                            "(with --lr-schedule none)")
    train.add_argument("--reg", type=float, default=d.reg,
                       help="L2 regularisation 0.5 * reg * sum(W^2) in the loss")
    train.add_argument("--weight-decay", type=float, default=d.weight_decay,
                       help="adds weight_decay * w to the gradient of every weight")
    train.add_argument("--seed", type=int, default=d.seed,
                       help="seeds the built-in data, the initial weights, batches, "
                            "augmentation and dropout masks")


def error_text(err):
    """An expected failure in words for its one line: an OSError's reason and file (not
    its errno tuple), else the exception's message."""
    if isinstance(err, OSError) and err.filename:
        return f"{err.strerror}: {err.filename}"
    return str(err)


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
    """The convlab-train command: parse ``argv`` (default sys.argv[1:]), train, print the
    result; returns the exit status (0 done, 2 an expected error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.threads is not None:
            set_num_threads(args.threads)
        if args.resume:
            # The saved configuration, with the changes a resumed run accepts; run() refuses
            # any other change instead of silently ignoring it.
            saved = RunDir(args.out).read_config().to_dict()
            config = RunConfig.from_dict({**saved, **explicit_options(build_parser(), argv)})
        else:
            config = config_from_args(args)
        callbacks = [] if args.tensorboard is None else [TensorBoard(args.tensorboard)]
        results = run(config, out=args.out, resume=args.resume, force=args.force,
                      verbose=args.verbose, callbacks=callbacks, device=args.device)
    except TrainingInterrupted as stop:
        print(f"\nInterrupted at epoch {stop.epoch}; state saved to {stop.checkpoint}."
              f"\nContinue with: convlab-train --out {args.out} --resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"\nInterrupted; {args.out} keeps its last checkpoint, if any.", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, FloatingPointError, ImportError) as err:
        # Expected failures (bad options or data, a busy or full output directory, a
        # diverging run) are one line, not a traceback.
        print(f"convlab-train: error: {error_text(err)}", file=sys.stderr)
        return 2
    print(f"Best validation accuracy: {results['best_val_acc']:.4f}")
    if results["test_acc"] is None:
        print("Test accuracy: n/a (this dataset has no test split)")
    else:
        print(f"Test accuracy: {results['test_acc']:.4f}")
    out = results["out"]
    print(f"Wall time {results['elapsed_s']:.0f} s. Written to {out}: model.npz (the best "
          "epoch's model), curves.png, metrics.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
