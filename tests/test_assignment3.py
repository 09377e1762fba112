# ruff: noqa: NPY002  (the course seeds and draws from NumPy's global state; so do these tests)
"""Assignment 3 (the NumPy sequence models): every recurrent layer and the captioning model
gradient-checked in float64; sequences equal their steps run by hand; closed forms and the
course's published values; the captioning data, solver, Tiny ImageNet and load_models."""

import json
import warnings

import numpy as np
import pytest
from conftest import (
    assert_check_catches_wrong_gradients,
    check_layer_gradients,
    check_model_gradients,
)
from PIL import Image

from convlab.captioning_solver import CaptioningSolver
from convlab.classifiers.rnn import CaptioningRNN
from convlab.coco_utils import decode_captions, sample_coco_minibatch
from convlab.data import load_builtin_captions
from convlab.data_utils import load_models, load_tiny_imagenet
from convlab.rnn_layers import (
    lstm_backward,
    lstm_forward,
    lstm_step_backward,
    lstm_step_forward,
    rnn_backward,
    rnn_forward,
    rnn_step_backward,
    rnn_step_forward,
    sigmoid,
    temporal_affine_backward,
    temporal_affine_forward,
    temporal_softmax_loss,
    word_embedding_backward,
    word_embedding_forward,
)


def linspace(lo, hi, *shape):
    return np.linspace(lo, hi, num=int(np.prod(shape))).reshape(shape)


def recurrent_inputs(rng, N, D, H, gates):
    return (rng.standard_normal((N, D)), rng.standard_normal((N, H)),
            rng.standard_normal((D, gates * H)) * 0.5, rng.standard_normal((H, gates * H)) * 0.5,
            rng.standard_normal(gates * H))


# ----------------------------------------------------------------------------- RNN


def test_rnn_step_forward_reproduces_the_published_values():
    # RNN_Captioning notebook: its inputs and printed expectation.
    N, D, H = 3, 10, 4
    x, prev_h = linspace(-0.4, 0.7, N, D), linspace(-0.2, 0.5, N, H)
    Wx, Wh, b = linspace(-0.1, 0.9, D, H), linspace(-0.3, 0.7, H, H), linspace(-0.2, 0.4, H)
    next_h, _ = rnn_step_forward(x, prev_h, Wx, Wh, b)
    expected = np.asarray([[-0.58172089, -0.50182032, -0.41232771, -0.31410098],
                           [0.66854692, 0.79562378, 0.87755553, 0.92795967],
                           [0.97934501, 0.99144213, 0.99646691, 0.99854353]])
    np.testing.assert_allclose(next_h, expected, atol=1e-8)
    np.testing.assert_allclose(next_h, np.tanh(x @ Wx + prev_h @ Wh + b), rtol=1e-14)


def test_rnn_step_and_sequence_gradients(rng):
    check_layer_gradients(rnn_step_forward, rnn_step_backward,
                          recurrent_inputs(rng, 4, 5, 6, gates=1), rng)
    _, h0, Wx, Wh, b = recurrent_inputs(rng, 3, 4, 5, gates=1)
    x = rng.standard_normal((3, 6, 4))
    check_layer_gradients(rnn_forward, rnn_backward, (x, h0, Wx, Wh, b), rng)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_sequences_equal_their_steps_run_by_hand(cell, rng):
    gates = 1 if cell == "rnn" else 4
    _, h0, Wx, Wh, b = recurrent_inputs(rng, 3, 4, 5, gates)
    x = rng.standard_normal((3, 7, 4))
    h, _ = (rnn_forward if cell == "rnn" else lstm_forward)(x, h0, Wx, Wh, b)
    prev_h, prev_c = h0, np.zeros_like(h0)
    for t in range(7):
        if cell == "rnn":
            prev_h = np.tanh(x[:, t] @ Wx + prev_h @ Wh + b)
        else:  # the LSTM equations, written out once more
            a = x[:, t] @ Wx + prev_h @ Wh + b
            i, f, o = (1 / (1 + np.exp(-a[:, k * 5:(k + 1) * 5])) for k in range(3))
            prev_c = f * prev_c + i * np.tanh(a[:, 15:])
            prev_h = o * np.tanh(prev_c)
        np.testing.assert_allclose(h[:, t], prev_h, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- LSTM


def test_lstm_step_gradients_through_both_outputs(rng):
    x, prev_h, Wx, Wh, b = recurrent_inputs(rng, 4, 5, 6, gates=4)
    prev_c = rng.standard_normal(prev_h.shape)
    next_h, next_c, cache = lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
    dnext_h, dnext_c = rng.standard_normal(next_h.shape), rng.standard_normal(next_c.shape)
    analytic = lstm_step_backward(dnext_h, dnext_c, cache)
    inputs = [x, prev_h, prev_c, Wx, Wh, b]
    from convlab.gradient_check import eval_numerical_gradient_array, rel_error

    for k, (value, grad) in enumerate(zip(inputs, analytic[:3] + analytic[3:], strict=True)):
        def out_h(v, k=k):
            return lstm_step_forward(*(v if j == k else a for j, a in enumerate(inputs)))[0]

        def out_c(v, k=k):
            return lstm_step_forward(*(v if j == k else a for j, a in enumerate(inputs)))[1]

        numeric = (eval_numerical_gradient_array(out_h, value, dnext_h)
                   + eval_numerical_gradient_array(out_c, value, dnext_c))
        assert rel_error(grad, numeric) < 1e-7, k


def test_lstm_sequence_gradients(rng):
    _, h0, Wx, Wh, b = recurrent_inputs(rng, 3, 4, 5, gates=4)
    x = rng.standard_normal((3, 6, 4))
    check_layer_gradients(lstm_forward, lstm_backward, (x, h0, Wx, Wh, b), rng)


def test_sigmoid_is_stable_and_exact():
    x = np.array([-1000.0, -30.0, -1.0, 0.0, 2.0, 800.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning
        s = sigmoid(x)
    np.testing.assert_allclose(s[1:5], 1 / (1 + np.exp(-x[1:5])), rtol=1e-15)
    assert s[0] == 0.0 and s[-1] == 1.0


def test_lstm_matches_torch_when_installed(rng):
    torch = pytest.importorskip("torch")
    N, T, D, H = 2, 5, 3, 4
    x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    Wx, Wh, b = (rng.standard_normal(s) * 0.5 for s in ((D, 4 * H), (H, 4 * H), (4 * H,)))
    h, _ = lstm_forward(x, h0, Wx, Wh, b)
    lstm = torch.nn.LSTM(D, H, batch_first=True, dtype=torch.float64)
    # torch's gate order is i, f, g, o; ours i, f, o, g.
    order = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(Wx[:, order].T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(Wh[:, order].T.copy()))
        lstm.bias_ih_l0.copy_(torch.from_numpy(b[order].copy()))
        lstm.bias_hh_l0.zero_()
        expected, _ = lstm(torch.from_numpy(x), (torch.from_numpy(h0)[None],
                                                  torch.zeros(1, N, H, dtype=torch.float64)))
    np.testing.assert_allclose(h, expected.numpy(), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- word and time layers


def test_word_embedding_forward_backward(rng):
    x = np.array([[0, 3, 1, 2], [2, 1, 0, 3]])
    W = rng.standard_normal((5, 3))
    out, _ = word_embedding_forward(x, W)
    np.testing.assert_array_equal(out[1, 0], W[2])
    check_layer_gradients(lambda W: word_embedding_forward(x, W),
                          word_embedding_backward, (W,), rng)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        word_embedding_forward(np.array([[0, 5]]), W)
    with pytest.raises(TypeError, match="integers"):
        word_embedding_forward(np.array([[0.0, 1.0]]), W)


def test_temporal_affine_gradients(rng):
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
    out, _ = temporal_affine_forward(x, w, b)
    np.testing.assert_allclose(out[1, 2], x[1, 2] @ w + b, rtol=1e-14)
    check_layer_gradients(temporal_affine_forward, temporal_affine_backward, (x, w, b), rng)


def test_temporal_softmax_loss_closed_forms_and_gradient(rng):
    # The notebook's sanity checks: uniform scores give ln(V) per unmasked step, / N.
    N, T, V = 100, 10, 10
    y = rng.integers(V, size=(N, T))
    x = 0.001 * rng.standard_normal((N, T, V))
    assert temporal_softmax_loss(x, y, np.ones((N, T), bool))[0] == pytest.approx(
        T * np.log(V), rel=1e-3)
    mask = rng.random((N, T)) < 0.3
    assert temporal_softmax_loss(x, y, mask)[0] == pytest.approx(
        mask.sum() / N * np.log(V), rel=1e-3)
    x, y = rng.standard_normal((5, 4, 6)), rng.integers(6, size=(5, 4))
    mask = rng.random((5, 4)) > 0.4
    loss, dx = temporal_softmax_loss(x, y, mask)
    from convlab.gradient_check import eval_numerical_gradient, rel_error

    numeric = eval_numerical_gradient(lambda v: temporal_softmax_loss(v, y, mask)[0], x,
                                      verbose=False)
    assert rel_error(dx, numeric) < 1e-7
    assert np.all(dx[~mask] == 0)
    with pytest.raises(ValueError, match="shape"):
        temporal_softmax_loss(x, y[:, :3], mask)


def test_recurrent_layers_refuse_mismatched_shapes(rng):
    x, prev_h, Wx, Wh, b = recurrent_inputs(rng, 4, 5, 6, gates=1)
    with pytest.raises(ValueError, match="Wh must have shape"):
        rnn_step_forward(x, prev_h, Wx, Wh[:, :5], b)
    with pytest.raises(ValueError, match="Wx must have shape"):
        lstm_step_forward(x, prev_h, prev_h, Wx, Wh, b)  # 1H-wide weights for an LSTM
    with pytest.raises(ValueError, match=r"\(N, T, D\)"):
        rnn_forward(x, prev_h, Wx, Wh, b)
    _, cache = rnn_step_forward(x, prev_h, Wx, Wh, b)
    with pytest.raises(ValueError, match="dout must have shape"):
        rnn_step_backward(np.ones((4, 7)), cache)


# ----------------------------------------------------------------------------- CaptioningRNN


def test_lstm_step_forward_reproduces_the_published_values():
    # LSTM_Captioning notebook: its inputs and printed expectation.
    N, D, H = 3, 4, 5
    x, prev_h = linspace(-0.4, 1.2, N, D), linspace(-0.3, 0.7, N, H)
    prev_c = linspace(-0.4, 0.9, N, H)
    Wx, Wh = linspace(-2.1, 1.3, D, 4 * H), linspace(-0.7, 2.2, H, 4 * H)
    b = linspace(0.3, 0.7, 4 * H)
    next_h, next_c, _ = lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
    np.testing.assert_allclose(next_h[:2], [
        [0.24635157, 0.28610883, 0.32240467, 0.35525807, 0.38474904],
        [0.49223563, 0.55611431, 0.61507696, 0.66844003, 0.7159181]], atol=1e-8)
    np.testing.assert_allclose(next_c, [
        [0.32986176, 0.39145139, 0.451556, 0.51014116, 0.56717407],
        [0.66382255, 0.76674007, 0.87195994, 0.97902709, 1.08751345],
        [0.74192008, 0.90592151, 1.07717006, 1.25120233, 1.42395676]], atol=1e-8)


@pytest.mark.parametrize("cell, published", [("rnn", 9.83235591003)])
def test_captioning_rnn_reproduces_the_published_loss(cell, published):
    # RNN_Captioning notebook: linspace parameters and their loss.
    N, D, W, H, T = 10, 20, 30, 40, 13
    word_to_idx = {"<NULL>": 0, "cat": 2, "dog": 3}
    V = len(word_to_idx)
    model = CaptioningRNN(word_to_idx, input_dim=D, wordvec_dim=W, hidden_dim=H,
                          cell_type=cell, dtype=np.float64, seed=0)
    for k, v in model.params.items():
        model.params[k] = np.linspace(-1.4, 1.3, num=v.size).reshape(*v.shape)
    features = np.linspace(-1.5, 0.3, num=N * D).reshape(N, D)
    captions = (np.arange(N * T) % V).reshape(N, T)
    loss, _ = model.loss(features, captions)
    assert loss == pytest.approx(published, abs=1e-10)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_captioning_rnn_gradients(cell, rng):
    word_to_idx = {"<NULL>": 0, "<START>": 1, "<END>": 2, "cat": 3, "dog": 4}
    model = CaptioningRNN(word_to_idx, input_dim=6, wordvec_dim=5, hidden_dim=4,
                          cell_type=cell, dtype=np.float64, seed=1)
    features = rng.standard_normal((3, 6))
    captions = rng.integers(5, size=(3, 5))
    check_model_gradients(model, features, captions)
    assert_check_catches_wrong_gradients(model, features, captions)


def test_unseeded_captioning_rnn_draws_like_the_course():
    word_to_idx = {"<NULL>": 0, "a": 1, "b": 2}
    np.random.seed(231)
    model = CaptioningRNN(word_to_idx, input_dim=4, wordvec_dim=3, hidden_dim=2,
                          cell_type="lstm", dtype=np.float64)
    np.random.seed(231)
    W_embed = np.random.randn(3, 3) / 100
    W_proj = np.random.randn(4, 2) / np.sqrt(4)
    np.testing.assert_array_equal(model.params["W_embed"], W_embed)
    np.testing.assert_array_equal(model.params["W_proj"], W_proj)
    assert model.params["Wx"].shape == (3, 8)


def test_captioning_rnn_errors_and_save_load(tmp_path, rng):
    with pytest.raises(ValueError, match="cell_type"):
        CaptioningRNN({"<NULL>": 0}, cell_type="gru")
    with pytest.raises(ValueError, match="<NULL>"):
        CaptioningRNN({"a": 0})
    with pytest.raises(ValueError, match="integer index"):
        CaptioningRNN({"<NULL>": 0, "a": -1})
    model = CaptioningRNN({"<NULL>": 0, "<START>": 1, "a": 2}, input_dim=4, wordvec_dim=3,
                          hidden_dim=5, seed=0)
    with pytest.raises(ValueError, match=r"features must be \(N, 4\)"):
        model.loss(rng.standard_normal((2, 3)), np.zeros((2, 4), int))
    model.save(tmp_path / "captioner.npz")
    again = CaptioningRNN.from_file(tmp_path / "captioner.npz")
    features = rng.standard_normal((2, 4))
    np.testing.assert_array_equal(again.sample(features, 6), model.sample(features, 6))


# ----------------------------------------------------------------------------- data and solver


def test_builtin_captions_layout_and_decoding():
    data = load_builtin_captions(num_train=30, num_val=10, seed=0)
    assert data["train_captions"].shape == (60, 12) and data["train_captions"].dtype == np.int32
    assert data["train_features"].shape == (30, 768) and data["val_images"].shape == (10, 32, 32, 3)
    assert data["train_image_idxs"].max() == 29
    first, second = decode_captions(data["train_captions"][:2], data["idx_to_word"])
    assert first.startswith("<START> a ") and first.endswith(" <END>")
    assert sorted(first.split()) == sorted(second.replace("has", "in").split())
    again = load_builtin_captions(num_train=30, num_val=10, seed=0)
    np.testing.assert_array_equal(again["train_features"], data["train_features"])
    caption = decode_captions(data["train_captions"][0], data["idx_to_word"])
    assert caption == first  # one caption decodes to one string


def test_minibatches_pair_each_caption_with_its_image():
    data = load_builtin_captions(num_train=20, num_val=5, seed=1)
    captions, features, urls = sample_coco_minibatch(data, 8, "val",
                                                     rng=np.random.default_rng(0))
    assert urls is None and captions.shape == (8, 12) and features.shape == (8, 768)
    for caption, feature in zip(captions, features, strict=True):
        row = np.flatnonzero((data["val_captions"] == caption).all(axis=1))[0]
        np.testing.assert_array_equal(feature, data["val_features"][data["val_image_idxs"][row]])
    with pytest.raises(ValueError, match="test_captions"):
        sample_coco_minibatch(data, 4, "test")


def test_captioning_solver_overfits_a_small_set():
    data = load_builtin_captions(num_train=25, num_val=5, seed=0)
    model = CaptioningRNN(data["word_to_idx"], input_dim=768, wordvec_dim=32, hidden_dim=128,
                          cell_type="rnn", seed=0)
    solver = CaptioningSolver(model, data, update_rule="adam",
                              optim_config={"learning_rate": 5e-3}, lr_decay=0.995,
                              batch_size=25, num_epochs=100, verbose=False, seed=0)
    solver.train()
    # Each image has two phrasings, so the first word costs ln 2 at best.
    assert solver.loss_history[0] > 20 and np.mean(solver.loss_history[-10:]) < 1.2
    features = data["train_features"][data["train_image_idxs"][::2]]
    samples = decode_captions(model.sample(features, 12), data["idx_to_word"])
    truth = decode_captions(data["train_captions"][::2], data["idx_to_word"])

    def words(caption):  # the phrasing aside
        return sorted(caption.replace("<START> ", "").replace(" has ", " in ").split())

    assert np.mean([words(s) == words(t) for s, t in zip(samples, truth, strict=True)]) > 0.8
    with pytest.raises(ValueError, match="Unrecognized"):
        CaptioningSolver(model, data, learning_rate=1)


# ----------------------------------------------------------------------------- Tiny ImageNet


def write_tiny_imagenet(root, rng, wnids=("n01", "n02"), per_class=3, num_val=4, num_test=2):
    root.mkdir()
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (root / "words.txt").write_text("".join(f"{w}\t{w}-cat, {w}-dog\n" for w in wnids)
                                    + "n99\tunused\n")
    pixels = {}

    def image(path, gray=False):
        path.parent.mkdir(parents=True, exist_ok=True)
        array = rng.integers(0, 256, (64, 64) if gray else (64, 64, 3), dtype=np.uint8)
        Image.fromarray(array).save(path, format="PNG")  # lossless, read back exactly
        pixels[path.name] = np.broadcast_to(array[..., None], (64, 64, 3)) if gray else array

    for wnid in wnids:
        names = [f"{wnid}_{j}.JPEG" for j in range(per_class)]
        for j, name in enumerate(names):
            image(root / "train" / wnid / "images" / name, gray=j == 0)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(
            "".join(f"{n}\t0\t0\t63\t63\n" for n in names))
    val = [(f"val_{j}.JPEG", wnids[j % len(wnids)]) for j in range(num_val)]
    for name, _ in val:
        image(root / "val" / "images" / name)
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in val))
    for j in range(num_test):
        image(root / "test" / "images" / f"test_{j}.JPEG")
    return pixels, val


def test_load_tiny_imagenet_reads_the_official_layout(tmp_path, rng):
    pixels, val = write_tiny_imagenet(tmp_path / "tiny", rng)
    data = load_tiny_imagenet(tmp_path / "tiny", subtract_mean=False)
    assert data["class_names"] == [["n01-cat", "n01-dog"], ["n02-cat", "n02-dog"]]
    assert data["X_train"].shape == (6, 3, 64, 64) and data["X_train"].dtype == np.float32
    np.testing.assert_array_equal(data["y_train"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(data["X_train"][0], pixels["n01_0.JPEG"].transpose(2, 0, 1))
    np.testing.assert_array_equal(data["y_val"], [0, 1, 0, 1])
    np.testing.assert_array_equal(data["X_val"][3], pixels["val_3.JPEG"].transpose(2, 0, 1))
    assert data["X_test"].shape == (2, 3, 64, 64) and data["y_test"] is None
    centred = load_tiny_imagenet(tmp_path / "tiny", dtype=np.float64)
    np.testing.assert_allclose(centred["mean_image"], data["X_train"].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(centred["X_val"], data["X_val"] - centred["mean_image"],
                               rtol=1e-6, atol=1e-4)


def test_load_tiny_imagenet_refuses_bad_layouts(tmp_path, rng):
    write_tiny_imagenet(tmp_path / "tiny", rng)
    root = tmp_path / "tiny"
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn77\n")
    with pytest.raises(ValueError, match="n77"):
        load_tiny_imagenet(root)
    (root / "val" / "val_annotations.txt").write_text("../../wnids.txt\tn01\n")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tiny_imagenet(root)
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\n")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "val" / "images" / "val_0.JPEG",
                                                          format="PNG")
    with pytest.raises(ValueError, match="64x64"):
        load_tiny_imagenet(root)
    with pytest.raises(FileNotFoundError, match="wnids.txt"):
        load_tiny_imagenet(tmp_path / "nothing")


def test_load_models_loads_model_files_and_never_unpickles(tmp_path, rng):
    from convlab.classifiers import FullyConnectedNet

    FullyConnectedNet([5], input_dim=4, num_classes=3, seed=0).save(tmp_path / "fc.npz")
    import pickle

    (tmp_path / "old_model.p").write_bytes(pickle.dumps({"model": {"W": [1]}}))
    (tmp_path / "config.json").write_text(json.dumps({"not": "a model"}))
    with pytest.warns(UserWarning, match="old_model.p"):
        models = load_models(tmp_path)
    assert list(models) == ["fc.npz"] and models["fc.npz"].params["W1"].shape == (4, 5)
    with pytest.raises(FileNotFoundError):
        load_models(tmp_path / "missing")


def test_captioning_helpers_refuse_bad_input():
    data = load_builtin_captions(num_train=4, num_val=2, seed=0)
    with pytest.raises(ValueError, match=r"\(N, T\) or \(T,\)"):
        decode_captions(np.zeros((2, 3, 4), dtype=int), data["idx_to_word"])
    with pytest.raises(ValueError, match="batch_size"):
        sample_coco_minibatch(data, 0)
    with pytest.raises(ValueError, match="num_train"):
        load_builtin_captions(num_train=0)
    model = CaptioningRNN(data["word_to_idx"], input_dim=768, wordvec_dim=4, hidden_dim=5,
                          seed=0)
    with pytest.raises(ValueError, match="T >= 2"):
        model.loss(data["train_features"][:2], data["train_captions"][:2, :1])
    with pytest.raises(ValueError, match="max_length"):
        model.sample(data["train_features"][:2], max_length=0)
    with pytest.raises(ValueError, match="train_captions"):
        CaptioningSolver(model, {"X_train": np.zeros(1)})
