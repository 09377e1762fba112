"""ConvNet: gradients of every preset and every layer kind, the spec grammar, the summary,
initial loss, dtype, training with the Solver, and save/load."""

import numpy as np
import pytest
from conftest import assert_check_catches_wrong_gradients, check_model_gradients

from convlab.classifiers import ConvNet
from convlab.classifiers.convnet import KINDS, expand_spec
from convlab.serialization import load_model, save_model
from convlab.solver import Solver

# Every layer kind: a biased conv, a strided padded conv, bn on images and on vectors, gn,
# the three activations, overlapping max pooling, average pooling, dropout on images and on
# vectors, an identity and a projection residual block, gap and fc. No biased conv feeds a
# normalization: its bias gradient would be zero plus round-off, which no relative bound likes.
EVERY_KIND = (
    "conv3-4,relu,conv3-4-s2-p2-nobias,bn,lrelu0.1,res-4,maxpool2-s1,gn2,elu,"
    "res-6-s2,avgpool2-s1,dropout0.8,gap,fc6,bn,elu0.5,dropout0.6,fc5"
)


def batch(rng, N, input_dim, num_classes=10):
    return rng.standard_normal((N, *input_dim)), rng.integers(num_classes, size=N)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "preset, input_dim",
    [
        ("threelayer", (3, 8, 8)),
        ("vgg_small", (3, 8, 8)),
        ("resnet_small", (3, 8, 8)),
        ("reference", (3, 16, 16)),  # 8x8 would leave its last bn 2x2 and its last pool 1x1
    ],
)
def test_preset_gradients(preset, input_dim, rng):
    # The presets are too wide to probe every entry: 20 random entries of every parameter.
    model = ConvNet(preset, input_dim=input_dim, reg=0.1, dtype=np.float64, seed=0)
    X, y = batch(rng, 2, input_dim)
    check_model_gradients(model, X, y, num_checks=20)


def test_every_layer_kind_gradients(rng):
    model = ConvNet(
        EVERY_KIND, input_dim=(3, 12, 12), num_classes=5, reg=0.1, dtype=np.float64, seed=1
    )
    kinds = {layer.kind for layer in model.layers}
    assert kinds == set(KINDS)
    assert "res6.shortcut.W" not in model.params and "res10.shortcut.W" in model.params
    X, y = batch(rng, 4, (3, 12, 12), num_classes=5)
    check_model_gradients(model, X, y)


def test_gradient_check_catches_a_wrong_gradient(rng):
    model = ConvNet(
        EVERY_KIND, input_dim=(3, 12, 12), num_classes=5, reg=0.1, dtype=np.float64, seed=1
    )
    X, y = batch(rng, 4, (3, 12, 12), num_classes=5)
    assert_check_catches_wrong_gradients(model, X, y)


# ----------------------------------------------------------------------------- the spec


def test_groups_expand_and_layers_are_named_by_position():
    assert expand_spec("[conv3-8, relu]x2, pool") == ["conv3-8", "relu", "conv3-8", "relu", "pool"]
    assert expand_spec("[[bn,relu]x2,gap]x2") == ["bn", "relu", "bn", "relu", "gap"] * 2
    model = ConvNet("[conv3-8,relu]x2,fc10", input_dim=(3, 4, 4), seed=0)
    assert [layer.name for layer in model.layers] == ["conv1", "relu2", "conv3", "relu4", "fc5"]
    assert model.params["conv3.W"].shape == (8, 8, 3, 3)
    assert model.params["fc5.W"].shape == (8 * 4 * 4, 10)


def test_final_fc_is_appended_when_missing():
    model = ConvNet("conv3-4,relu,gap", input_dim=(3, 8, 8), num_classes=7, seed=0)
    assert model.layers[-1].name == "fc4" and model.params["fc4.W"].shape == (4, 7)
    assert model.init_args["architecture"] == "conv3-4,relu,gap"


def test_layer_options_reach_the_layers():
    model = ConvNet("conv5-4-s2-p1-nobias,lrelu0.2,maxpool3-s1,elu,dropout0.5", input_dim=(3, 9, 9))
    conv, lrelu, pool, elu, dropout, _ = model.layers
    assert conv.opts["conv_param"] == {"stride": 2, "pad": 1} and "conv1.b" not in model.params
    assert conv.out_shape == (4, 4, 4) and pool.out_shape == (4, 2, 2)
    assert pool.opts["pool_param"] == {"pool_height": 3, "pool_width": 3, "stride": 1}
    assert lrelu.opts["alpha"] == 0.2 and elu.opts["alpha"] == 1.0
    assert dropout.opts["dropout_param"]["p"] == 0.5


@pytest.mark.parametrize(
    "spec, message",
    [
        ("conv3x3-32,fc10", r"unknown layer 'conv3x3-32'.*valid kinds: convK-F"),
        ("conv3-8,softmax", r"unknown layer 'softmax'.*res-F\[-sS\]"),
        ("vgg", r"unknown layer 'vgg'"),
        ("[conv3-8,relu]x2]x2", "unbalanced"),
        ("[conv3-8,relu", "unclosed"),
        ("[conv3-8,relu],fc10", "malformed item"),
        ("conv3-8,,fc10", "malformed item"),
        ("[relu]x0,fc10", "at least once"),
        ("", "malformed item"),
    ],
)
def test_malformed_specs_raise(spec, message):
    with pytest.raises(ValueError, match=message):
        ConvNet(spec, input_dim=(3, 8, 8))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("[conv3-8-p0]x4,fc10", r"conv4 \('conv3-8-p0'\) on input 8 x 2 x 2: a 3x3 filter"),
        ("[conv3-8,pool]x4,fc10", r"maxpool8 \('pool'\) on input 8 x 1 x 1"),
        ("fc20,gap,fc10", r"gap2.*needs an image input"),
        ("conv3-6,gn4,fc10", "4 groups do not divide 6 channels"),
        ("conv3-0,fc10", "filters must be an integer >= 1"),
        ("lrelu1.5,fc10", r"slope must be in \[0, 1\)"),
        ("dropout1.5,fc10", "keep probability"),
        ("conv3-8,fc7", "gives 7 scores but num_classes is 10"),
    ],
)
def test_bad_geometry_and_sizes_raise_at_construction(spec, message):
    with pytest.raises(ValueError, match=message):
        ConvNet(spec, input_dim=(3, 8, 8))


def test_summary_of_the_reference_net():
    model = ConvNet("reference", seed=0)
    assert model.architecture == ConvNet.PRESETS["reference"]
    assert not any(name.endswith(".b") and name.startswith("conv") for name in model.params)
    # By hand: 3x3 convs 3->32->32->64->64->128->128 without biases, gamma and beta per
    # channel, and an fc from 128 x 4 x 4 to 10 with bias.
    convs = 9 * (3 * 32 + 32 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128)
    bns = 2 * (32 + 32 + 64 + 64 + 128 + 128)
    fc = 128 * 4 * 4 * 10 + 10
    assert convs + bns + fc == 307_946 == sum(p.size for p in model.params.values())
    text = model.summary()
    assert str(model) == repr(model) == text
    lines = text.splitlines()
    row = {line.split()[0]: line for line in lines[1:]}
    assert row["conv1"].split()[-1] == "864" and "32 x 32 x 32" in row["conv1"]
    assert row["bn2"].split()[-1] == "64"
    assert "128 x 4 x 4" in row["maxpool21"] and row["maxpool21"].split()[-1] == "0"
    assert row["fc22"].split()[-1] == "20,490"
    assert row["total"].split()[-1] == "307,946"


def test_res_blocks_summary_counts_their_parameters():
    model = ConvNet("resnet_small", seed=0)
    assert model.params["res5.shortcut.W"].shape == (32, 16, 1, 1)
    assert "res4.shortcut.W" not in model.params  # res-16 on 16 channels: identity
    res5 = 9 * (16 * 32 + 32 * 32) + 16 * 32 + 3 * 2 * 32  # two convs, projection, three bns
    row = next(line for line in model.summary().splitlines() if line.startswith("res5"))
    assert row.split()[-1] == f"{res5:,}" and "32 x 16 x 16" in row


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("preset", sorted(ConvNet.PRESETS))
def test_initial_loss_is_log_num_classes(preset, rng):
    model = ConvNet(preset, input_dim=(3, 16, 16), weight_scale=1e-3, seed=0)
    X, y = batch(rng, 20, (3, 16, 16))
    loss, _ = model.loss(X, y)
    assert loss == pytest.approx(np.log(10), abs=0.02)


def test_float32_stays_float32(rng):
    model = ConvNet(EVERY_KIND, input_dim=(3, 12, 12), num_classes=5, seed=0)
    X, y = batch(rng, 4, (3, 12, 12), num_classes=5)
    loss, grads = model.loss(X, y)
    assert all(grads[name].dtype == np.float32 for name in model.params)
    assert all(p["running_var"].dtype == np.float32 for p in model.bn_params)
    assert model.loss(X).dtype == np.float32


def test_dropout_only_in_train_mode(rng):
    model = ConvNet("dropout0.5,fc10", input_dim=(3, 4, 4), dtype=np.float64, seed=0)
    X, y = batch(rng, 3, (3, 4, 4))
    np.testing.assert_allclose(model.loss(X), X.reshape(3, -1) @ model.params["fc2.W"])
    model.loss(X, y)
    assert model.dropout_params[0]["mode"] == "train"
    model.loss(X)
    assert model.dropout_params[0]["mode"] == "test"


def test_solver_overfits_a_few_examples(rng):
    X, y = batch(rng, 20, (3, 8, 8))
    data = {"X_train": X, "y_train": y, "X_val": X[:5], "y_val": y[:5]}
    model = ConvNet("conv3-8-nobias,bn,relu,pool,fc10", input_dim=(3, 8, 8), seed=0)
    solver = Solver(
        model,
        data,
        update_rule="adam",
        optim_config={"learning_rate": 1e-2},
        num_epochs=15,
        batch_size=10,
        verbose=False,
        seed=0,
    )
    solver.train()
    assert solver.loss_history[-1] < 0.2 * solver.loss_history[0]
    assert solver.train_acc_history[-1] == 1.0


def test_save_and_load_round_trip(tmp_path, rng):
    model = ConvNet(
        "conv3-4-nobias,bn,relu,res-6-s2,dropout0.5,gap,fc10", input_dim=(3, 8, 8), reg=0.01, seed=0
    )
    X, y = batch(rng, 6, (3, 8, 8))
    for _ in range(3):  # move the batchnorm running statistics away from their start
        model.loss(X, y)
    save_model(model, tmp_path / "convnet.npz")
    loaded = load_model(tmp_path / "convnet.npz")
    assert isinstance(loaded, ConvNet) and loaded.init_args == model.init_args
    assert loaded.summary() == model.summary()
    assert len(loaded.bn_params) == len(model.bn_params) == 4
    for ours, theirs in zip(model.bn_params, loaded.bn_params, strict=True):
        np.testing.assert_array_equal(ours["running_mean"], theirs["running_mean"])
        np.testing.assert_array_equal(ours["running_var"], theirs["running_var"])
    np.testing.assert_array_equal(loaded.loss(X), model.loss(X))


def test_fused_bn_relu_equals_the_layers_run_one_by_one(rng, monkeypatch):
    from convlab.classifiers import convnet_layers

    X = rng.standard_normal((5, 3, 8, 8))
    y = rng.integers(10, size=5)

    def run():
        model = ConvNet("[conv3-6,bn,relu]x2,pool,fc10", input_dim=(3, 8, 8),
                        dtype=np.float64, seed=0)
        loss, grads = model.loss(X, y)
        return loss, grads, model.bn_params

    fused = run()
    monkeypatch.setattr(convnet_layers, "FUSED_PAIRS", {})
    separate = run()
    assert fused[0] == pytest.approx(separate[0], rel=1e-12)
    for name in fused[1]:
        np.testing.assert_allclose(fused[1][name], separate[1][name], rtol=1e-9, atol=1e-12)
    for a, b in zip(fused[2], separate[2], strict=True):
        np.testing.assert_allclose(a["running_var"], b["running_var"], rtol=1e-12)
