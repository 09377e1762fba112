"""The ``convlab-tune`` command: ``argparse -> tune()`` (convlab.tune).

    convlab-tune --study cs231n --n-trials 16 --workers 2 --out runs/tune \\
        --search lr=loguniform:1e-4:1e-2 --search model=choice:threelayer,vgg_small \\
        --data builtin --epochs 4

Every convlab-train option sets the base configuration the searched fields are drawn
into. Run the same command again to continue the study. With ``--storage
postgresql://user@host/db`` the same command on several machines shares one study.
Expected failures print one line on stderr and exit with status 2.
"""

import argparse
import json
import sys

from convlab.train import OneLineErrorParser, add_config_arguments, config_from_args, error_text


def build_parser():
    """The command line: study options, then every RunConfig field for the base config."""
    p = OneLineErrorParser(
        prog="convlab-tune",
        description="Hyperparameter search over convlab-train's options, on Optuna.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    study = p.add_argument_group("study")
    study.add_argument("--search", action="append", default=[], metavar="NAME=SPEC",
                       help="a searched option, repeatable: loguniform:LOW:HIGH, "
                            "uniform:LOW:HIGH, int:LOW:HIGH, logint:LOW:HIGH or choice:A,B,..."
                            " (e.g. lr=loguniform:1e-4:1e-2, model=choice:threelayer,vgg_small)")
    study.add_argument("--n-trials", type=int, default=20, help="trials in the whole study")
    study.add_argument("--study", default="convlab", help="the study's name in its storage")
    study.add_argument("--out", default="runs/tune",
                       help="output directory: study.journal, trials/, trials.csv, best/, "
                            "plots/")
    study.add_argument("--storage", default=None,
                       help="where the study lives: a journal file (default OUT/study.journal)"
                            " or a postgresql://user@host/db URL shared by several machines")
    study.add_argument("--workers", type=int, default=1,
                       help="worker processes on this machine")
    study.add_argument("--threads", type=int, default=None,
                       help="BLAS/OpenMP threads per worker (default: cores // workers with "
                            "several workers, else the usual default)")
    study.add_argument("--sampler", choices=["tpe", "random"], default="tpe",
                       help="Optuna sampler")
    study.add_argument("--pruner", choices=["median", "asha", "none"], default="median",
                       help="stops trials whose per-epoch validation accuracy lags")
    study.add_argument("--pruner-startup", type=int, default=5,
                       help="completed trials before the median pruner stops any (it never "
                            "stops a trial at its first epoch)")
    study.add_argument("--sampler-seed", type=int, default=None,
                       help="seed of the sampler (worker i uses seed + i)")
    study.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    study.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    add_config_arguments(p)
    return p


def main(argv=None):
    """The convlab-tune command; returns the exit status (0 done, 2 an expected error,
    130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        if args.worker is not None:  # one of the processes a --workers launcher started
            from convlab.tune import tune_worker

            with open(args.worker) as f:
                tune_worker(json.load(f), args.worker_index)
            return 0
        from convlab.tune import tune

        results = tune(args.search, args.n_trials, study=args.study, out=args.out,
                       storage=args.storage, workers=args.workers, threads=args.threads,
                       base=config_from_args(args), sampler=args.sampler, pruner=args.pruner,
                       pruner_startup=args.pruner_startup, sampler_seed=args.sampler_seed)
    except KeyboardInterrupt:
        print("\nInterrupted; run the same command again to continue the study.",
              file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, ImportError, RuntimeError) as err:
        print(f"convlab-tune: error: {error_text(err)}", file=sys.stderr)
        return 2
    return 0 if results["best"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
