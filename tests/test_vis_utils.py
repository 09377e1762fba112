"""convlab.vis_utils: grid helpers (exact shapes and values) and figures rendered with Agg."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from convlab.vis_utils import (  # noqa: E402
    confusion_matrix,
    plot_confusion_matrix,
    plot_predictions,
    plot_solver_history,
    show_conv_filters,
    vis_grid,
    vis_nn,
    visualize_grid,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def save_png(fig, path):
    fig.savefig(path)
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    return data


def legend_texts(ax):
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


class FakeSolver:
    def __init__(self, num_iterations, num_epochs, offset=0.0):
        self.loss_history = list(np.linspace(2.3, 1.0, num_iterations) + offset)
        self.train_acc_history = list(np.linspace(0.1, 0.8, num_epochs + 1))
        self.val_acc_history = list(np.linspace(0.1, 0.5, num_epochs + 1))


# ------------------------------------------------------------------------------ grids


def test_visualize_grid_shape_and_values():
    rng = np.random.default_rng(0)
    Xs = rng.standard_normal((5, 4, 3, 2))
    grid = visualize_grid(Xs, ubound=255.0, padding=1)
    # G = ceil(sqrt(5)) = 3: 3 * 4 + 2 rows, 3 * 3 + 2 columns
    assert grid.shape == (14, 11, 2)
    assert grid.min() == 0.0 and grid.max() == 255.0
    for n in range(5):
        r, c = divmod(n, 3)
        tile = grid[r * 5 : r * 5 + 4, c * 4 : c * 4 + 3]
        assert tile.min() == 0.0 and tile.max() == 255.0
        x = Xs[n]
        np.testing.assert_allclose(tile, 255.0 * (x - x.min()) / (x.max() - x.min()))
    # padding rows/columns and the empty cell stay zero
    assert np.all(grid[4] == 0) and np.all(grid[:, 3] == 0)
    assert np.all(grid[10:, 8:] == 0)


def test_visualize_grid_ubound_padding_and_constant_tile():
    Xs = np.zeros((4, 2, 2, 3))
    Xs[1] = np.arange(12).reshape(2, 2, 3)
    grid = visualize_grid(Xs, ubound=1.0, padding=0)
    assert grid.shape == (4, 4, 3)
    assert grid.max() == 1.0 and grid.min() == 0.0
    assert np.all(grid[0:2, 0:2] == 0)  # constant tile maps to zero, not NaN
    assert np.all(np.isfinite(grid))


@pytest.mark.parametrize(
    "bad, error",
    [
        (np.zeros((2, 3, 3)), ValueError),
        (np.zeros((0, 3, 3, 3)), ValueError),
        (np.full((1, 2, 2, 1), np.nan), ValueError),
        (np.array([["a"]]), TypeError),
    ],
)
def test_visualize_grid_rejects_bad_images(bad, error):
    with pytest.raises(error):
        visualize_grid(bad)


def test_visualize_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="padding"):
        visualize_grid(np.ones((1, 2, 2, 1)), padding=-1)
    with pytest.raises(ValueError, match="ubound"):
        visualize_grid(np.ones((1, 2, 2, 1)), ubound=0)


def test_vis_grid_shape_and_range():
    rng = np.random.default_rng(1)
    Xs = rng.uniform(-3, 5, size=(7, 4, 5, 3))
    G = vis_grid(Xs)
    assert G.shape == (3 * 5, 3 * 6, 3)
    assert G.min() == 0.0 and G.max() == 1.0
    lo, hi = Xs.min(), Xs.max()
    np.testing.assert_allclose(G[5:9, 6:11], (Xs[4] - lo) / (hi - lo))
    assert np.all(G[4] == 0)  # gaps take the minimum, i.e. 0 after rescaling


def test_vis_nn_shape_and_range():
    rng = np.random.default_rng(2)
    rows = [[rng.uniform(size=(3, 4, 1)) for _ in range(4)] for _ in range(2)]
    G = vis_nn(rows)
    assert G.shape == (2 * 4, 4 * 5, 1)
    assert G.min() == 0.0 and G.max() == 1.0
    with pytest.raises(ValueError, match="same shape"):
        vis_nn([[np.zeros((3, 4, 1)), np.zeros((4, 4, 1))]])
    with pytest.raises(ValueError):
        vis_nn([])


# ------------------------------------------------------------------------------ figures


def test_plot_solver_history_single(tmp_path):
    solver = FakeSolver(num_iterations=30, num_epochs=3)
    fig = plot_solver_history(solver, title="run")
    assert isinstance(fig, Figure)
    save_png(fig, tmp_path / "history.png")
    ax_loss, ax_acc = fig.axes
    assert ax_loss.get_xlabel() == "Iteration" and ax_loss.get_ylabel() == "Loss"
    assert ax_acc.get_xlabel() == "Epoch" and ax_acc.get_ylabel() == "Accuracy"
    np.testing.assert_allclose(ax_loss.lines[0].get_ydata(), solver.loss_history)
    assert legend_texts(ax_acc) == ["train", "val"]
    np.testing.assert_array_equal(ax_acc.lines[1].get_xdata(), [0, 1, 2, 3])
    np.testing.assert_allclose(ax_acc.lines[1].get_ydata(), solver.val_acc_history)
    assert fig._suptitle.get_text() == "run"


def test_plot_solver_history_accepts_history_dict(tmp_path):
    hist = {"loss_history": [3.0, 2.0, 1.5], "train_acc_history": [0.1, 0.4],
            "val_acc_history": [0.1, 0.3]}
    fig = plot_solver_history(hist)
    save_png(fig, tmp_path / "dict.png")
    assert len(fig.axes) == 2
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [3.0, 2.0, 1.5])


def test_plot_solver_history_overlays_runs(tmp_path):
    runs = {"sgd": FakeSolver(20, 2, 0.5), "adam": FakeSolver(20, 2)}
    fig = plot_solver_history(runs, smooth=5)
    save_png(fig, tmp_path / "runs.png")
    ax_loss, ax_acc = fig.axes
    assert legend_texts(ax_loss) == ["sgd", "adam"]
    assert legend_texts(ax_acc) == ["sgd train", "sgd val", "adam train", "adam val"]


@pytest.mark.parametrize(
    "bad, error",
    [
        ({}, ValueError),
        ([1, 2, 3], TypeError),
        ({"a": object()}, TypeError),
        ({"loss_history": [1.0]}, TypeError),
        ({"loss_history": [[1.0]], "train_acc_history": [0.1], "val_acc_history": [0.1]},
         ValueError),
    ],
)
def test_plot_solver_history_rejects_bad_input(bad, error):
    with pytest.raises(error):
        plot_solver_history(bad)


def test_show_conv_filters(tmp_path):
    rng = np.random.default_rng(3)
    W = rng.standard_normal((10, 3, 5, 5))
    fig = show_conv_filters(W)
    save_png(fig, tmp_path / "filters.png")
    assert len(fig.axes) == 1
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (4 * 5 + 3, 4 * 5 + 3, 3)
    assert image.min() == 0.0 and image.max() == 1.0
    assert fig.axes[0].get_title() == "10 filters, 3x5x5"

    grey = show_conv_filters(rng.standard_normal((4, 1, 3, 3)), padding=0)
    assert grey.axes[0].images[0].get_array().shape == (6, 6)


def test_show_conv_filters_rejects_bad_shapes():
    with pytest.raises(ValueError, match="F, C, HH, WW"):
        show_conv_filters(np.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match="channels"):
        show_conv_filters(np.zeros((3, 16, 5, 5)))


def test_confusion_matrix_counts():
    cm = confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], num_classes=4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = expected[1, 2] = expected[1, 1] = 1
    expected[2, 2] = 2
    np.testing.assert_array_equal(cm, expected)


@pytest.mark.parametrize("normalize", [False, True])
def test_plot_confusion_matrix(tmp_path, normalize):
    y_true = [0, 0, 1, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 2, 2]
    names = ["cat", "dog", "ship"]
    fig = plot_confusion_matrix(y_true, y_pred, names, normalize=normalize)
    save_png(fig, tmp_path / f"cm-{normalize}.png")
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # matrix and colour bar
    assert ax.get_xlabel() == "Predicted label" and ax.get_ylabel() == "True label"
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    counts = np.array([[1, 1, 0], [0, 2, 1], [0, 0, 1]])
    expected = counts / counts.sum(axis=1, keepdims=True) if normalize else counts
    np.testing.assert_allclose(ax.images[0].get_array(), expected)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 9
    assert texts[4] == ("0.67" if normalize else "2")  # row 1, column 1
    assert "accuracy 0.667" in ax.get_title()


def test_plot_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        plot_confusion_matrix([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match="out of range"):
        plot_confusion_matrix([0, 3], [0, 1], ["a", "b"])
    with pytest.raises(TypeError, match="integers"):
        plot_confusion_matrix([0.5], [0], ["a"])
    with pytest.raises(TypeError):
        plot_confusion_matrix([0], [0], "ab")


def test_plot_predictions(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((7, 3, 8, 8))  # convlab layout (N, C, H, W)
    y_true = np.array([0, 1, 2, 0, 1, 2, 0])
    y_pred = np.array([0, 1, 1, 0, 1, 2, 2])
    names = ["a", "b", "c"]
    fig = plot_predictions(X, y_true, y_pred, names)
    save_png(fig, tmp_path / "predictions.png")
    assert len(fig.axes) == 9  # 3 x 3 grid
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 7
    titles = [ax.get_title() for ax in visible]
    assert titles[0] == "a"
    assert titles[2] == "b\n(true: c)"
    assert titles[6] == "c\n(true: a)"
    assert visible[2].title.get_color() == "red" and visible[0].title.get_color() == "green"
    image = visible[0].images[0].get_array()
    assert image.shape == (8, 8, 3) and image.min() == 0.0 and image.max() == 1.0


def test_plot_predictions_only_wrong_and_channels_last(tmp_path):
    X = np.random.default_rng(5).uniform(size=(6, 8, 8, 3))
    fig = plot_predictions(X, [0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 1, 0], ["x", "y"],
                           only_wrong=True, ncols=4)
    save_png(fig, tmp_path / "wrong.png")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 2 and len(visible) == 2
    assert all("true:" in ax.get_title() for ax in visible)


def test_plot_predictions_rejects_bad_input():
    X = np.zeros((2, 3, 4, 4))
    with pytest.raises(ValueError, match="labels"):
        plot_predictions(X, [0], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="class_names"):
        plot_predictions(X, [0, 5], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        plot_predictions(np.zeros((2, 4, 4)), [0, 1], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="no mistakes"):
        plot_predictions(X, [0, 1], [0, 1], ["a", "b"], only_wrong=True)


def test_plotting_leaves_rcparams_and_pyplot_alone():
    import matplotlib.pyplot as plt

    before = dict(matplotlib.rcParams)
    open_before = plt.get_fignums()
    plot_solver_history(FakeSolver(5, 1))
    plot_confusion_matrix([0, 1], [1, 1], ["a", "b"])
    assert dict(matplotlib.rcParams) == before
    assert plt.get_fignums() == open_before
