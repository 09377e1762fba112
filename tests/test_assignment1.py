# ruff: noqa: NPY002  (the course seeds and draws from NumPy's global state; so do these tests)
"""CS231n assignment 1: kNN, the SVM and softmax losses, the linear classifiers, the
2017-2019 two-layer network, image features, im2col by indexing and blob gradients, each
against an independent reference (numerical gradients, the other implementation, loops,
closed forms, the compiled layout) and the course's published values."""

import numpy as np
import pytest

from convlab.classifiers.fc_net import FullyConnectedNet
from convlab.classifiers.k_nearest_neighbor import KNearestNeighbor
from convlab.classifiers.linear_classifier import LinearSVM, Softmax
from convlab.classifiers.linear_svm import svm_loss_naive, svm_loss_vectorized
from convlab.classifiers.neural_net import TwoLayerNet
from convlab.classifiers.softmax import softmax_loss_naive, softmax_loss_vectorized
from convlab.fast_layers import col2im_cython, im2col_cython
from convlab.features import color_histogram_hsv, extract_features, hog_feature
from convlab.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_blobs,
    rel_error,
)
from convlab.im2col import col2im_indices, im2col_indices

LOSSES = {"svm": (svm_loss_naive, svm_loss_vectorized),
          "softmax": (softmax_loss_naive, softmax_loss_vectorized)}


def _linear_problem(rng, N=40, D=12, C=5):
    X = rng.standard_normal((N, D))
    X[:, -1] = 1.0  # the course's bias trick
    return rng.standard_normal((D, C)) * 0.1, X, rng.integers(C, size=N)


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("kind", sorted(LOSSES))
@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_naive_and_vectorized_losses_agree_and_match_numerical_gradients(kind, reg, rng):
    naive, vectorized = LOSSES[kind]
    W, X, y = _linear_problem(rng)
    loss_n, grad_n = naive(W, X, y, reg)
    loss_v, grad_v = vectorized(W, X, y, reg)
    assert loss_v == pytest.approx(loss_n, rel=1e-12)
    assert rel_error(grad_n, grad_v) < 1e-10
    numeric = eval_numerical_gradient(lambda w: vectorized(w, X, y, reg)[0], W.copy(),
                                      verbose=False)
    _assert_gradient_close(grad_v, numeric)


def _assert_gradient_close(analytic, numeric):
    # Centred differences of a float64 loss L ~ 1-10 carry ~eps |L| / h = 1e-10 absolute
    # round-off (h = 1e-5): atol 1e-8 leaves 100x, rtol 1e-6 covers the truncation; a 1%
    # error fails (test_a_wrong_gradient_fails_the_same_check).
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_a_wrong_gradient_fails_the_same_check(rng):
    W, X, y = _linear_problem(rng)
    numeric = eval_numerical_gradient(lambda w: svm_loss_vectorized(w, X, y, 0.0)[0], W.copy(),
                                      verbose=False)
    wrong = svm_loss_vectorized(W, X, y, 0.0)[1] * 1.01
    with pytest.raises(AssertionError):
        _assert_gradient_close(wrong, numeric)


def test_closed_forms_at_zero_weights(rng):
    _, X, y = _linear_problem(rng, C=10)
    W = np.zeros((X.shape[1], 10))
    # All scores equal: each of the 9 wrong classes has margin 1; softmax is uniform.
    assert svm_loss_vectorized(W, X, y, 0.0)[0] == pytest.approx(9.0)
    assert softmax_loss_vectorized(W, X, y, 0.0)[0] == pytest.approx(np.log(10))
    assert softmax_loss_naive(W, X, y, 1.0)[0] == pytest.approx(np.log(10))  # reg * 0


def test_losses_accept_integer_inputs_like_numpy(rng):
    W, X, y = _linear_problem(rng)
    Xi = np.rint(X * 10).astype(np.int64)
    loss_i, grad_i = svm_loss_vectorized(W, Xi, y, 0.1)
    loss_f, grad_f = svm_loss_vectorized(W, Xi.astype(np.float64), y, 0.1)
    assert loss_i == loss_f and grad_i.dtype == np.float64
    np.testing.assert_array_equal(grad_i, grad_f)


@pytest.mark.parametrize("fn", [svm_loss_naive, svm_loss_vectorized, softmax_loss_naive,
                                softmax_loss_vectorized])
def test_losses_refuse_mismatched_shapes_and_labels(fn, rng):
    W, X, y = _linear_problem(rng)
    with pytest.raises(ValueError, match=r"expected W \(D, C\)"):
        fn(W, X[:, :-1], y, 0.0)
    with pytest.raises(ValueError, match="must lie in"):
        fn(W, X, y + W.shape[1], 0.0)


# ----------------------------------------------------------------------------- classifiers


def _blobs(rng, n_per_class=60, D=8, C=4):
    centres = rng.standard_normal((C, D)) * 4
    X = np.concatenate([c + rng.standard_normal((n_per_class, D)) for c in centres])
    X = np.hstack([X, np.ones((len(X), 1))])
    return X, np.repeat(np.arange(C), n_per_class)


@pytest.mark.parametrize("cls", [LinearSVM, Softmax])
def test_linear_classifiers_learn_separable_data(cls, rng):
    X, y = _blobs(rng)
    model = cls(seed=0)
    history = model.train(X, y, learning_rate=1e-2, reg=1e-4, num_iters=300, batch_size=50)
    assert len(history) == 300 and np.mean(history[-20:]) < history[0] / 3
    assert np.mean(model.predict(X) == y) > 0.95
    again = cls(seed=0)
    assert again.train(X, y, learning_rate=1e-2, reg=1e-4, num_iters=300, batch_size=50) == history


def test_without_a_seed_draws_come_from_numpys_global_state(rng):
    X, y = _blobs(rng)
    runs = []
    for _ in range(2):
        np.random.seed(231)
        model = LinearSVM()
        runs.append((model.train(X, y, num_iters=20, batch_size=10), model.W.copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    # The course's first draw: W = 0.001 * randn(D, C) from the seeded global state.
    np.random.seed(231)
    model = LinearSVM()
    model.train(X, y, num_iters=0)
    np.testing.assert_array_equal(model.W, 0.001 * np.random.RandomState(231).randn(9, 4))


def test_linear_classifier_errors(rng):
    X, y = _blobs(rng)
    with pytest.raises(ValueError, match="train"):
        Softmax().predict(X)
    model = Softmax(seed=0)
    with np.errstate(over="ignore", invalid="ignore"), \
            pytest.raises(FloatingPointError, match="iteration"):
        model.train(X * 1e200, y, learning_rate=1e10, num_iters=5)
    with pytest.raises(ValueError, match=r"X must be \(N, 9\)"):
        model.predict(X[:, :3])


# ----------------------------------------------------------------------------- kNN


def test_knn_distances_agree_with_broadcasting(rng):
    knn = KNearestNeighbor()
    X_train = rng.integers(0, 256, size=(30, 20)).astype(np.float32)  # pixel-like values
    knn.train(X_train, rng.integers(3, size=30))
    X_test = rng.integers(0, 256, size=(7, 20)).astype(np.float32)
    reference = np.linalg.norm(X_test[:, None, :].astype(np.float64) - X_train[None], axis=2)
    for dists in (knn.compute_distances_two_loops(X_test), knn.compute_distances_one_loop(X_test),
                  knn.compute_distances_no_loops(X_test)):
        np.testing.assert_allclose(dists, reference, rtol=1e-6)


def test_knn_votes_and_ties():
    knn = KNearestNeighbor()
    knn.train(np.array([[0.0], [1.0], [2.0], [10.0]]), np.array([2, 1, 1, 0]))
    np.testing.assert_array_equal(knn.predict(np.array([[0.1], [9.0]]), k=1), [2, 0])
    np.testing.assert_array_equal(knn.predict(np.array([[0.1]]), k=3, num_loops=1), [1])
    # k=2 near 0.5: labels 2 and 1 tie; the smaller label wins, as np.argmax of bincount.
    np.testing.assert_array_equal(knn.predict(np.array([[0.5]]), k=2, num_loops=2), [1])
    with pytest.raises(ValueError, match="num_loops"):
        knn.predict(np.zeros((1, 1)), num_loops=3)


# ----------------------------------------------------------------------------- TwoLayerNet


def _toy():
    """The course's two_layer_net notebook: its toy model and data, in its call order."""
    np.random.seed(1)
    X = 10 * np.random.randn(5, 4)
    y = np.array([0, 1, 2, 2, 1])
    np.random.seed(0)
    return TwoLayerNet(4, 10, 3, std=1e-1), X, y


def test_two_layer_net_reproduces_the_published_values():
    net, X, y = _toy()
    correct_scores = np.array([[-0.81233741, -1.27654624, -0.70335995],
                               [-0.17129677, -1.18803311, -0.47310444],
                               [-0.51590475, -1.01354314, -0.8504215],
                               [-0.15419291, -0.48629638, -0.52901952],
                               [-0.00618733, -0.12435261, -0.15226949]])
    assert np.abs(net.loss(X) - correct_scores).max() < 1e-7
    assert net.loss(X, y, reg=0.05)[0] == pytest.approx(1.30378789133, abs=1e-10)
    net, X, y = _toy()
    stats = net.train(X, y, X, y, learning_rate=1e-1, reg=5e-6, num_iters=100)
    assert stats["loss_history"][-1] == pytest.approx(0.017149607938732093, rel=1e-9)


def test_two_layer_net_gradients(rng):
    net = TwoLayerNet(6, 7, 4, std=0.5, seed=3)
    X, y = rng.standard_normal((9, 6)), rng.integers(4, size=9)
    _, grads = net.loss(X, y, reg=0.05)
    for name in net.params:
        numeric = eval_numerical_gradient(lambda _: net.loss(X, y, reg=0.05)[0],
                                          net.params[name], verbose=False)
        assert rel_error(grads[name], numeric) < 1e-7, name
    grads["W1"] *= 1.01
    numeric = eval_numerical_gradient(lambda _: net.loss(X, y, reg=0.05)[0], net.params["W1"],
                                      verbose=False)
    assert rel_error(grads["W1"], numeric) > 1e-3  # the check sees a 1% error


def test_two_layer_net_trains_and_checks_its_input(rng):
    X, y = _blobs(rng)
    net = TwoLayerNet(X.shape[1], 20, 4, std=1e-1, seed=0)
    stats = net.train(X, y, X, y, learning_rate=5e-2, num_iters=200, batch_size=40)
    assert stats["val_acc_history"][-1] > 0.9 and len(stats["train_acc_history"]) >= 30
    with pytest.raises(ValueError, match=r"X must be \(N, 9\)"):
        net.loss(X[:, :2])
    with pytest.raises(ValueError, match="must lie in"):
        net.loss(X, y + 4)


# ----------------------------------------------------------------------------- features


def _hog_by_loops(image, orientations=9, cell=8):
    """HOG as the definition reads, pixel by pixel: an independent reference."""
    gray = image @ np.array([0.299, 0.587, 0.144])
    H, W = gray.shape
    out = np.zeros((W // cell, H // cell, orientations))
    for r in range(H // cell * cell):
        for c in range(W // cell * cell):
            gx = gray[r, c + 1] - gray[r, c] if c + 1 < W else 0.0
            gy = gray[r + 1, c] - gray[r, c] if r + 1 < H else 0.0
            angle = np.degrees(np.arctan2(gy, gx + 1e-15)) + 90
            b = int(angle // (180 / orientations))
            if angle > 0 and b < orientations:
                out[c // cell, r // cell, b] += np.hypot(gx, gy) / cell ** 2
    return out.ravel()


def test_hog_matches_its_definition(rng):
    image = rng.integers(0, 256, size=(16, 24, 3)).astype(np.float64)
    np.testing.assert_allclose(hog_feature(image), _hog_by_loops(image), rtol=1e-10, atol=1e-12)
    assert hog_feature(image).shape == (3 * 2 * 9,)


def test_color_histogram_hsv():
    red = np.zeros((4, 4, 3))
    red[..., 0] = 255
    hist = color_histogram_hsv(red, nbin=10)
    assert hist.sum() == pytest.approx(1.0) and hist[0] == pytest.approx(1.0)
    blue = np.zeros((4, 4, 3))
    blue[..., 2] = 255  # hue 240 degrees: 2/3 of the range
    assert np.argmax(color_histogram_hsv(blue, nbin=10)) == 6


def test_extract_features_stacks_every_function(rng):
    imgs = rng.integers(0, 256, size=(5, 32, 32, 3)).astype(np.float64)
    feats = extract_features(imgs, [hog_feature, lambda im: color_histogram_hsv(im, nbin=7)])
    assert feats.shape == (5, 4 * 4 * 9 + 7)
    np.testing.assert_array_equal(feats[3, :144], hog_feature(imgs[3]))
    with pytest.raises(ValueError, match="non-empty"):
        extract_features(imgs[:0], [hog_feature])


# ----------------------------------------------------------------------------- im2col, blobs


@pytest.mark.parametrize("geometry", [(3, 3, 1, 1), (2, 2, 0, 2), (5, 3, 2, 1)])
def test_im2col_indices_equals_the_compiled_layout(geometry, rng):
    fh, fw, pad, stride = geometry
    x = rng.standard_normal((2, 3, 7, 7))
    cols = im2col_indices(x, fh, fw, padding=pad, stride=stride)
    np.testing.assert_array_equal(cols, im2col_cython(x, fh, fw, pad, stride))
    back = col2im_indices(cols, x.shape, fh, fw, padding=pad, stride=stride)
    np.testing.assert_allclose(back, col2im_cython(cols, 2, 3, 7, 7, fh, fw, pad, stride),
                               rtol=1e-12)


def test_col2im_indices_refuses_columns_of_another_geometry(rng):
    cols = im2col_indices(rng.standard_normal((2, 3, 7, 7)), 3, 3)
    with pytest.raises(ValueError, match="cols must be"):
        col2im_indices(cols[:, :-1], (2, 3, 7, 7), 3, 3)
    with pytest.raises(TypeError, match="real numbers"):
        im2col_indices(np.zeros((1, 1, 4, 4), dtype=np.complex128), 3, 3)
    ints = np.arange(16).reshape(1, 1, 4, 4)  # the course's notebooks pass integer arrays
    np.testing.assert_array_equal(im2col_indices(ints, 3, 3),
                                  im2col_indices(ints.astype(np.float64), 3, 3))


def test_numerical_gradients_of_blobs(rng):
    class Blob:
        def __init__(self, vals):
            self.vals, self.diffs = vals, np.zeros_like(vals)

    a, b = Blob(rng.standard_normal((3, 4))), Blob(rng.standard_normal((4, 2)))
    out = Blob(np.zeros((3, 2)))
    out.diffs = rng.standard_normal((3, 2))

    def matmul(x, y, result):
        result.vals = x.vals @ y.vals

    da, db = eval_numerical_gradient_blobs(matmul, (a, b), out)
    np.testing.assert_allclose(da, out.diffs @ b.vals.T, rtol=1e-7)   # closed forms
    np.testing.assert_allclose(db, a.vals.T @ out.diffs, rtol=1e-7)


# ----------------------------------------------------------------------------- star imports


@pytest.mark.parametrize("module, names", [
    ("convlab.classifiers.fc_net", ["FullyConnectedNet", "TwoLayerNet", "affine_forward",
                                    "relu_forward", "batchnorm_forward", "softmax_loss",
                                    "dropout_forward", "affine_relu_forward", "np"]),
    ("convlab.classifiers.cnn", ["ThreeLayerConvNet", "conv_forward_naive",
                                 "conv_forward_fast", "max_pool_forward_fast",
                                 "conv_relu_pool_forward", "spatial_batchnorm_forward"]),
    ("convlab.layer_utils", ["affine_relu_forward", "conv_bn_relu_forward", "affine_forward",
                             "conv_forward_fast", "conv_backward_fast"]),
])
def test_star_imports_export_what_the_course_modules_do(module, names):
    # cs231n's fc_net.py, cnn.py and layer_utils.py star-import the layers, so notebooks
    # that star-import them call e.g. batchnorm_forward directly.
    namespace = {}
    exec(f"from {module} import *", namespace)
    missing = [name for name in names if name not in namespace]
    assert not missing, f"{module} does not export {missing}"


# ----------------------------------------------------------------------------- course seeds


def test_unseeded_models_draw_like_the_course_and_seeded_ones_do_not():
    # FullyConnectedNets notebook (2019+): its published initial losses.
    np.random.seed(231)
    N, D, H1, H2, C = 2, 15, 20, 30, 10
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=(N,))
    published = {0: 2.300479089768492, 3.14: 7.052114776533016}
    for reg, expected in published.items():
        model = FullyConnectedNet([H1, H2], input_dim=D, num_classes=C, reg=reg,
                                  weight_scale=5e-2, dtype=np.float64)
        assert model.loss(X, y)[0] == pytest.approx(expected, rel=1e-12)
    # An explicit seed keeps convlab's own Generator: the global state is not read.
    np.random.seed(0)
    a = FullyConnectedNet([H1], input_dim=D, seed=7).params["W1"]
    np.random.seed(1)
    b = FullyConnectedNet([H1], input_dim=D, seed=7).params["W1"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        a, (1e-2 * np.random.default_rng(7).standard_normal((D, H1))).astype(np.float32))


def test_classifiers_save_and_load_without_pickles(tmp_path, rng, capsys):
    X, y = rng.standard_normal((40, 5)), rng.integers(3, size=40)
    svm = LinearSVM(seed=0)
    svm.train(X, y, num_iters=5)
    svm.save(tmp_path / "svm.npz")
    again = LinearSVM()
    assert again.load(tmp_path / "svm.npz") is True
    np.testing.assert_array_equal(again.predict(X), svm.predict(X))
    with pytest.raises(ValueError, match="does not hold a Softmax"):
        Softmax().load(tmp_path / "svm.npz")
    with pytest.raises(ValueError, match="before save"):
        Softmax().save(tmp_path / "untrained.npz")
    net = TwoLayerNet(5, 4, 3, std=0.1, seed=0)
    net.save(tmp_path / "net.npz")
    other = TwoLayerNet(5, 4, 3, std=0.1, seed=1)
    other.load(tmp_path / "net.npz")
    np.testing.assert_array_equal(other.loss(X), net.loss(X))
    with pytest.raises(ValueError, match="shape"):
        TwoLayerNet(5, 6, 3).load(tmp_path / "net.npz")
    with pytest.raises(FileNotFoundError):
        net.load(tmp_path / "missing.npz")
    assert "svm.npz saved." in capsys.readouterr().out
