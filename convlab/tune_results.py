"""What a finished (or stopped) study leaves in its output directory: a leaderboard,
``trials.csv``, the best trial's ``config.json`` and ``model.npz`` in ``best/``, and PNG
plots from Optuna's matplotlib visualisation in ``plots/``."""

import csv
import os
import shutil
import warnings

from convlab.run import RunConfig, RunDir

__all__ = ["format_leaderboard", "leaderboard", "write_results"]


def leaderboard(study):
    """One dict per trial, best first: completed trials by best validation accuracy, then
    pruned ones by their last reported accuracy, then failed and running ones."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values \
            else None
        value = t.value if state == "COMPLETE" else last
        rows.append({
            "trial": t.number, "state": state, "best_val_acc": value,
            "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)),
            "seconds": t.user_attrs.get("seconds"), "host": t.user_attrs.get("host"),
            "out": t.user_attrs.get("out"), "error": t.user_attrs.get("error"),
            "params": dict(t.params),
        })
    order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 2, "FAIL": 3}
    rows.sort(key=lambda r: (order.get(r["state"], 4),
                             -(r["best_val_acc"] if r["best_val_acc"] is not None else -1),
                             r["trial"]))
    return rows


def format_leaderboard(rows, top=None):
    """The leaderboard as aligned text lines (rank, trial, state, val acc, epochs, params)."""
    lines = [f"{'rank':>4} {'trial':>5} {'state':<8} {'val acc':>7} {'epochs':>6}  params"]
    for rank, row in enumerate(rows[:top] if top else rows, start=1):
        acc = "-" if row["best_val_acc"] is None else f"{row['best_val_acc']:.4f}"
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in row["params"].items())
        lines.append(f"{rank:>4} {row['trial']:>5} {row['state']:<8} {acc:>7} "
                     f"{row['epochs']:>6}  {params}")
    return "\n".join(lines)


def write_results(study, out, say=print):
    """Write trials.csv, best/ and plots/ into ``out`` and print the leaderboard.

    Returns a dict: ``leaderboard`` (rows), ``best`` (the best row, or None),
    ``best_config`` (a RunConfig, or None), ``counts`` (trials per state) and ``files``."""
    rows = leaderboard(study)
    files = [_write_trials_csv(rows, os.path.join(out, "trials.csv"))]
    complete = [row for row in rows if row["state"] == "COMPLETE"]
    best = complete[0] if complete else None
    best_config = None
    if best is not None:
        best_config = RunConfig.from_dict(
            next(t for t in study.get_trials(deepcopy=False)
                 if t.number == best["trial"]).user_attrs["config"])
        files += _copy_best(best, best_config, os.path.join(out, "best"), say)
    files += _write_plots(study, os.path.join(out, "plots"), say)
    counts = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    say(format_leaderboard(rows))
    say("trials: " + ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())))
    if best is not None:
        say(f"best: trial {best['trial']}, val acc {best['best_val_acc']:.4f}; "
            f"results in {out}")
    return {"leaderboard": rows, "best": best, "best_config": best_config, "counts": counts,
            "files": files}


def _write_trials_csv(rows, path):
    names = sorted({name for row in rows for name in row["params"]})
    fields = ["trial", "state", "best_val_acc", "epochs", "seconds", "host", "out", "error"]
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields + names)
        for row in sorted(rows, key=lambda r: r["trial"]):
            writer.writerow([("" if row[k] is None else row[k]) for k in fields]
                            + [row["params"].get(name, "") for name in names])
    os.replace(path + ".tmp", path)
    return path


def _copy_best(best, config, directory, say):
    """The best trial's config.json, and its model.npz when it was trained on this machine
    (a trial of another machine keeps its model there; its path is in trials.csv)."""
    best_dir = RunDir(directory)  # the files a run directory holds, under their usual names
    best_dir.write_config(config)
    written = [best_dir.config_json]
    model = os.path.join(best["out"] or "", "model.npz")
    if best["out"] and os.path.isfile(model):
        shutil.copyfile(model, best_dir.model_npz)
        written.append(best_dir.model_npz)
    else:
        say(f"the best trial's model.npz is on {best['host']} in {best['out']}")
    return written


def _write_plots(study, directory, say):
    """Optimisation history, intermediate values (where pruning shows), parameter
    importances and slices, each as a PNG; a plot the study cannot make yet (too few
    completed trials) is left out with a note."""
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    os.makedirs(directory, exist_ok=True)
    written = []
    for name in ("optimization_history", "intermediate_values", "param_importances", "slice"):
        # rc_context: Optuna's plots switch matplotlib to its ggplot style; a notebook's
        # later figures keep theirs.
        with matplotlib.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks these plots experimental
            try:
                axes = getattr(plots, f"plot_{name}")(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as err:
                say(f"plot {name} left out: {err}")
                continue
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            figure = first.figure
            path = os.path.join(directory, f"{name}.png")
            figure.savefig(path, dpi=90, bbox_inches="tight")
            plt.close(figure)
        written.append(path)
    return written
