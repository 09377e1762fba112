# ruff: noqa: NPY002  (the course seeds and draws from NumPy's global state; so do these tests)
"""Course notebooks of several editions, mimicked: integer test arrays, the course's global
random state, the Solver's loop order. Each compared with an independent reference: the
course's loop written out here, a closed form, or the float64 computation."""

import numpy as np
import pytest

from convlab.classifiers.fc_net import *  # noqa: F403 (the notebooks' star import)
from convlab.classifiers.fc_net import FullyConnectedNet
from convlab.layers import conv_forward_naive, dropout_forward
from convlab.solver import Solver


def course_train_loop(model, data, batch_size, num_epochs, learning_rate, lr_decay,
                      num_train_samples):
    """cs231n's Solver.train with SGD, written out: minibatches and accuracy subsamples from
    np.random.choice, the first check after the first update. Returns its histories."""
    N = data["X_train"].shape[0]
    iterations_per_epoch = max(N // batch_size, 1)
    num_iterations = num_epochs * iterations_per_epoch
    losses, train_acc, val_acc = [], [], []

    def accuracy(X, y, num_samples):
        if num_samples is not None and X.shape[0] > num_samples:
            mask = np.random.choice(X.shape[0], num_samples)
            X, y = X[mask], y[mask]
        predictions = [np.argmax(model.loss(X[i:i + 100]), axis=1) for i in range(0, len(X), 100)]
        return np.mean(np.hstack(predictions) == y)

    for t in range(num_iterations):
        batch = np.random.choice(N, batch_size)
        loss, grads = model.loss(data["X_train"][batch], data["y_train"][batch])
        losses.append(loss)
        for name in model.params:
            model.params[name] = model.params[name] - learning_rate * grads[name]
        epoch_end = (t + 1) % iterations_per_epoch == 0
        if epoch_end:
            learning_rate *= lr_decay
        if t == 0 or t == num_iterations - 1 or epoch_end:
            train_acc.append(accuracy(data["X_train"], data["y_train"], num_train_samples))
            val_acc.append(accuracy(data["X_val"], data["y_val"], None))
    return losses, train_acc, val_acc


def tiny_data(rng, N=60, D=12, C=4):
    X = rng.standard_normal((N + 20, D))
    y = rng.integers(C, size=N + 20)
    return {"X_train": X[:N], "y_train": y[:N], "X_val": X[N:], "y_val": y[N:]}


@pytest.mark.parametrize("keep", [1.0, 0.6])
def test_unseeded_solver_runs_the_courses_loop_draw_for_draw(keep, rng):
    data = tiny_data(rng)
    config = dict(batch_size=10, num_epochs=3, learning_rate=0.05, lr_decay=0.9,
                  num_train_samples=25)

    def model():
        return FullyConnectedNet([16], input_dim=12, num_classes=4, weight_scale=0.1,
                                 dropout_keep_ratio=keep, dtype=np.float64)

    np.random.seed(231)
    reference = course_train_loop(model(), data, **config)
    np.random.seed(231)
    solver = Solver(model(), data, update_rule="sgd",
                    optim_config={"learning_rate": config["learning_rate"]},
                    lr_decay=config["lr_decay"], batch_size=config["batch_size"],
                    num_epochs=config["num_epochs"],
                    num_train_samples=config["num_train_samples"], verbose=False)
    solver.train()
    np.testing.assert_allclose(solver.loss_history, reference[0], rtol=1e-12)
    assert solver.train_acc_history == reference[1]
    assert solver.val_acc_history == reference[2]
    assert len(solver.val_acc_history) == 1 + 3  # epoch 0 (after step 1), 1, 2, 3


def test_epoch_zero_is_checked_after_the_first_update(rng, capsys):
    data = tiny_data(rng)
    model = FullyConnectedNet([16], input_dim=12, num_classes=4, weight_scale=0.1, seed=0)
    solver = Solver(model, data, optim_config={"learning_rate": 0.1}, num_epochs=1,
                    batch_size=10, print_every=1, seed=0, progress=False)
    solver.train()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("(Iteration 1 / 6)")
    assert lines[1].startswith("(Epoch 0 / 1)")
    assert lines[2].startswith("(Iteration 2 / 6)")
    assert lines[-1].startswith("(Epoch 1 / 1)")
    # One iteration per epoch: that update ends epoch 1, as in the course; no epoch 0.
    one_step = Solver(FullyConnectedNet([16], input_dim=12, num_classes=4, seed=0), data,
                      num_epochs=2, batch_size=60, seed=0, verbose=False)
    one_step.train()
    assert len(one_step.val_acc_history) == 2


def test_a_seeded_solver_leaves_the_global_state_alone(rng):
    data = tiny_data(rng)
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    model = FullyConnectedNet([16], input_dim=12, num_classes=4, dropout_keep_ratio=0.5,
                              seed=1)
    Solver(model, data, num_epochs=2, batch_size=10, seed=3, verbose=False).train()
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_unseeded_solver_resumes_from_a_checkpoint(rng, tmp_path):
    data = tiny_data(rng)
    model = FullyConnectedNet([16], input_dim=12, num_classes=4, seed=0)
    solver = Solver(model, data, num_epochs=1, batch_size=10, verbose=False)
    solver.train()
    solver.save(tmp_path / "state.npz")
    again = Solver(FullyConnectedNet([16], input_dim=12, num_classes=4, seed=0), data,
                   num_epochs=2, batch_size=10, verbose=False)
    again.load(tmp_path / "state.npz")
    again.train()
    assert again.iteration == 12 and len(again.val_acc_history) == 3


def test_unseeded_dropout_draws_the_courses_mask(rng):
    x = rng.standard_normal((50, 40))
    np.random.seed(231)
    out, _ = dropout_forward(x, {"mode": "train", "p": 0.3})
    np.random.seed(231)
    expected = x * (np.random.rand(*x.shape) < 0.3) / 0.3  # the course's inverted dropout
    np.testing.assert_array_equal(out, expected)
    # A seed draws from its own generator: the same mask, the global state untouched.
    before = np.random.get_state()[1].copy()
    a, _ = dropout_forward(x, {"mode": "train", "p": 0.3, "seed": 7})
    b, _ = dropout_forward(x, {"mode": "train", "p": 0.3, "seed": 7})
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_image_processing_via_convolutions_with_an_integer_bias(rng):
    """ConvolutionalNetworks notebook: a grayscale and an edge filter on two images, the
    bias ``np.array([0, 128])`` of ints."""
    x = rng.uniform(0, 255, size=(2, 3, 20, 20))
    w = np.zeros((2, 3, 3, 3))
    w[0, 0, :, :] = [[0, 0, 0], [0, 0.3, 0], [0, 0, 0]]
    w[0, 1, :, :] = [[0, 0, 0], [0, 0.6, 0], [0, 0, 0]]
    w[0, 2, :, :] = [[0, 0, 0], [0, 0.1, 0], [0, 0, 0]]
    w[1, 2, :, :] = [[0, 0, 0], [-1, 2, -1], [0, 0, 0]]
    b = np.array([0, 128])
    out, _ = conv_forward_naive(x, w, b, {"stride": 1, "pad": 1})
    assert out.dtype == np.float64
    gray = 0.3 * x[:, 0] + 0.6 * x[:, 1] + 0.1 * x[:, 2]
    blue = np.pad(x[:, 2], ((0, 0), (0, 0), (1, 1)))
    edges = 2 * blue[:, :, 1:-1] - blue[:, :, :-2] - blue[:, :, 2:] + 128
    np.testing.assert_allclose(out[:, 0], gray, rtol=1e-12)
    np.testing.assert_allclose(out[:, 1], edges, rtol=1e-12, atol=1e-9)


def test_star_import_of_fc_net_gives_the_layers_directly(rng):
    """BatchNormalization / Dropout notebooks: ``from cs231n.classifiers.fc_net import *``,
    then the layer functions by bare name, on integer arrays too."""
    x = np.arange(12).reshape(4, 3)
    out, cache = batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "train"})  # noqa: F405
    np.testing.assert_allclose(out.std(axis=0), 1, rtol=1e-4)
    h, _ = affine_relu_forward(x, np.eye(3), np.array([0, -5, 0]))  # noqa: F405
    np.testing.assert_array_equal(h, np.maximum(x + [0, -5, 0], 0))
    assert relu_forward(np.array([-1, 2]))[0].tolist() == [0.0, 2.0]  # noqa: F405


# Every cs231n module path of the NumPy assignments (2017-2024 editions) and its names.
COURSE_MODULES = {
    "layers": "affine_forward affine_backward relu_forward relu_backward softmax_loss "
              "svm_loss batchnorm_forward batchnorm_backward batchnorm_backward_alt "
              "layernorm_forward layernorm_backward dropout_forward dropout_backward "
              "conv_forward_naive conv_backward_naive max_pool_forward_naive "
              "max_pool_backward_naive spatial_batchnorm_forward spatial_batchnorm_backward "
              "spatial_groupnorm_forward spatial_groupnorm_backward",
    "fast_layers": "conv_forward_fast conv_backward_fast conv_forward_im2col "
                   "conv_backward_im2col conv_forward_strides conv_backward_strides "
                   "max_pool_forward_fast max_pool_backward_fast max_pool_forward_reshape "
                   "max_pool_backward_reshape max_pool_forward_im2col max_pool_backward_im2col",
    "layer_utils": "affine_relu_forward affine_relu_backward conv_relu_forward "
                   "conv_relu_backward conv_bn_relu_forward conv_bn_relu_backward "
                   "conv_relu_pool_forward conv_relu_pool_backward",
    "im2col": "get_im2col_indices im2col_indices col2im_indices",
    "im2col_cython": "im2col_cython col2im_cython",
    "optim": "sgd sgd_momentum rmsprop adam",
    "solver": "Solver",
    "captioning_solver": "CaptioningSolver",
    "gradient_check": "eval_numerical_gradient eval_numerical_gradient_array "
                      "eval_numerical_gradient_blobs eval_numerical_gradient_net "
                      "grad_check_sparse",
    "data_utils": "load_CIFAR_batch load_CIFAR10 get_CIFAR10_data load_tiny_imagenet "
                  "load_models",
    "vis_utils": "visualize_grid vis_grid vis_nn",
    "features": "extract_features rgb2gray hog_feature color_histogram_hsv",
    "classifiers": "KNearestNeighbor LinearSVM Softmax",
    "classifiers.k_nearest_neighbor": "KNearestNeighbor",
    "classifiers.linear_classifier": "LinearClassifier LinearSVM Softmax",
    "classifiers.linear_svm": "svm_loss_naive svm_loss_vectorized",
    "classifiers.softmax": "softmax_loss_naive softmax_loss_vectorized",
    "classifiers.neural_net": "TwoLayerNet",
    "classifiers.fc_net": "TwoLayerNet FullyConnectedNet",
    "classifiers.cnn": "ThreeLayerConvNet",
    "classifiers.rnn": "CaptioningRNN",
    "rnn_layers": "rnn_step_forward rnn_step_backward rnn_forward rnn_backward "
                  "word_embedding_forward word_embedding_backward temporal_affine_forward "
                  "temporal_affine_backward temporal_softmax_loss lstm_step_forward "
                  "lstm_step_backward lstm_forward lstm_backward sigmoid",
    "coco_utils": "decode_captions sample_coco_minibatch",
}


@pytest.mark.parametrize("module", sorted(COURSE_MODULES))
def test_every_course_module_path_and_name_imports_through_convlab(module):
    import importlib

    imported = importlib.import_module(f"convlab.{module}")
    missing = [name for name in COURSE_MODULES[module].split() if not hasattr(imported, name)]
    assert not missing, f"convlab.{module} lacks {missing}"
    namespace = {}
    exec(f"from convlab.{module} import *", namespace)  # the notebooks' star imports
    starred = [name for name in COURSE_MODULES[module].split() if name not in namespace]
    assert not starred, f"from convlab.{module} import * does not give {starred}"


def test_load_course_images_names_a_missing_folder(tmp_path):
    from convlab.notebook_utils import load_course_images

    with pytest.raises(FileNotFoundError, match="not found"):
        load_course_images(10, 10, 0, source=str(tmp_path / "missing"), verbose=False)
