"""The array-module switch: every layer, fast path and model on a GPU backend equals the
CPU, keeps its arrays on the device, and passes a float64 gradient check there.

The ``gpu`` fixture (conftest.py) runs each test on the strict stand-in device, which
refuses any host array a layer lets slip in, and on CuPy when a GPU is present.
"""

import json
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
from conftest import away_from_zero, check_layer_gradients, check_model_gradients, distinct_values

from convlab import backend, fast_layers, gather_layers, layers, optim
from convlab.backend import asnumpy, get_array_module, is_host, to_device
from convlab.classifiers import ConvNet, FullyConnectedNet, ThreeLayerConvNet
from convlab.classifiers.fc_net import TwoLayerNet
from convlab.serialization import load_model, save_model
from convlab.solver import Solver

CONV = {"stride": 1, "pad": 1}
CONV_S2 = {"stride": 2, "pad": 1}
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}
POOL_OVERLAP = {"pool_height": 3, "pool_width": 2, "stride": 1}


def _bn(forward):
    return lambda x, g, b: forward(x, g, b, {"mode": "train"})


def _images(rng, shape=(3, 3, 6, 5)):
    return rng.standard_normal(shape)


# name -> (forward(*inputs) -> (out, cache), backward(dout, cache) -> grads, make inputs)
LAYERS = {
    "affine": (layers.affine_forward, layers.affine_backward,
               lambda r: (r.standard_normal((4, 3, 5)), r.standard_normal((15, 6)),
                          r.standard_normal(6))),
    "affine_fast": (fast_layers.affine_forward_fast, fast_layers.affine_backward_fast,
                    lambda r: (r.standard_normal((4, 3, 5)), r.standard_normal((15, 6)),
                               r.standard_normal(6))),
    "relu": (layers.relu_forward, layers.relu_backward,
             lambda r: (away_from_zero(r.standard_normal((4, 7))),)),
    "leaky_relu": (partial(layers.leaky_relu_forward, alpha=0.1), layers.leaky_relu_backward,
                   lambda r: (away_from_zero(r.standard_normal((4, 7))),)),
    "elu": (layers.elu_forward, layers.elu_backward,
            lambda r: (away_from_zero(r.standard_normal((4, 7))),)),
    "batchnorm": (_bn(layers.batchnorm_forward), layers.batchnorm_backward,
                  lambda r: (r.standard_normal((6, 4)), r.standard_normal(4),
                             r.standard_normal(4))),
    "batchnorm_alt": (_bn(layers.batchnorm_forward), layers.batchnorm_backward_alt,
                      lambda r: (r.standard_normal((6, 4)), r.standard_normal(4),
                                 r.standard_normal(4))),
    "layernorm": (lambda x, g, b: layers.layernorm_forward(x, g, b, {}),
                  layers.layernorm_backward,
                  lambda r: (r.standard_normal((5, 6)), r.standard_normal(6),
                             r.standard_normal(6))),
    "spatial_batchnorm": (_bn(layers.spatial_batchnorm_forward),
                          layers.spatial_batchnorm_backward,
                          lambda r: (_images(r), r.standard_normal(3), r.standard_normal(3))),
    "spatial_batchnorm_fast": (_bn(fast_layers.spatial_batchnorm_forward_fast),
                               fast_layers.spatial_batchnorm_backward_fast,
                               lambda r: (_images(r), r.standard_normal(3),
                                          r.standard_normal(3))),
    "spatial_batchnorm_relu_fast": (_bn(fast_layers.spatial_batchnorm_relu_forward_fast),
                                    fast_layers.spatial_batchnorm_relu_backward_fast,
                                    lambda r: (_images(r), r.standard_normal(3),
                                               r.standard_normal(3))),
    "spatial_groupnorm": (lambda x, g, b: layers.spatial_groupnorm_forward(x, g, b, 2, {}),
                          layers.spatial_groupnorm_backward,
                          lambda r: (_images(r, (2, 4, 3, 3)), r.standard_normal((1, 4, 1, 1)),
                                     r.standard_normal((1, 4, 1, 1)))),
    "conv_naive": (lambda x, w, b: layers.conv_forward_naive(x, w, b, CONV),
                   layers.conv_backward_naive,
                   lambda r: (_images(r), r.standard_normal((4, 3, 3, 3)),
                              r.standard_normal(4))),
    "conv_fast": (lambda x, w, b: fast_layers.conv_forward_fast(x, w, b, CONV),
                  fast_layers.conv_backward_fast,
                  lambda r: (_images(r), r.standard_normal((4, 3, 3, 3)),
                             r.standard_normal(4))),
    "conv_fast_stride2": (lambda x, w, b: fast_layers.conv_forward_fast(x, w, b, CONV_S2),
                          fast_layers.conv_backward_fast,
                          lambda r: (_images(r, (2, 2, 7, 6)), r.standard_normal((3, 2, 3, 3)),
                                     r.standard_normal(3))),
    "conv_fast_1x1_nobias": (lambda x, w: fast_layers.conv_forward_fast(
                                 x, w, None, {"stride": 1, "pad": 0}),
                             lambda dout, cache: fast_layers.conv_backward_fast(dout, cache)[:2],
                             lambda r: (_images(r), r.standard_normal((5, 3, 1, 1)))),
    "max_pool_naive": (lambda x: layers.max_pool_forward_naive(x, POOL_OVERLAP),
                       layers.max_pool_backward_naive,
                       lambda r: (distinct_values(r, (2, 3, 6, 5)),)),
    "max_pool_fast": (lambda x: fast_layers.max_pool_forward_fast(x, POOL),
                      fast_layers.max_pool_backward_fast,
                      lambda r: (distinct_values(r, (2, 3, 6, 4)),)),
    "max_pool_fast_overlap": (lambda x: fast_layers.max_pool_forward_fast(x, POOL_OVERLAP),
                              fast_layers.max_pool_backward_fast,
                              lambda r: (distinct_values(r, (2, 3, 6, 5)),)),
    "avg_pool_naive": (lambda x: layers.avg_pool_forward_naive(x, POOL_OVERLAP),
                       layers.avg_pool_backward_naive, lambda r: (_images(r),)),
    "avg_pool_fast": (lambda x: fast_layers.avg_pool_forward_fast(x, POOL_OVERLAP),
                      fast_layers.avg_pool_backward_fast, lambda r: (_images(r),)),
    "global_avg_pool": (layers.global_avg_pool_forward, layers.global_avg_pool_backward,
                        lambda r: (_images(r),)),
    "global_avg_pool_fast": (fast_layers.global_avg_pool_forward_fast,
                             fast_layers.global_avg_pool_backward_fast,
                             lambda r: (_images(r),)),
}
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-10}


def _on(device, inputs):
    return tuple(to_device(a, device) for a in inputs)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_on_the_gpu_equals_the_cpu(gpu, name, dtype, rng):
    forward, backward, make = LAYERS[name]
    inputs = tuple(a.astype(dtype) for a in make(rng))
    out, cache = forward(*inputs)
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = backward(dout, cache)

    inputs_gpu = _on(gpu, inputs)
    out_gpu, cache_gpu = forward(*inputs_gpu)
    grads_gpu = backward(to_device(dout, gpu), cache_gpu)
    grads, grads_gpu = ((g,) if not isinstance(g, tuple) else g for g in (grads, grads_gpu))
    assert not is_host(out_gpu) and out_gpu.dtype == dtype
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(asnumpy(out_gpu), out, rtol=tol, atol=tol)
    for g, g_gpu in zip(grads, grads_gpu, strict=True):
        assert not is_host(g_gpu) and g_gpu.dtype == dtype
        np.testing.assert_allclose(asnumpy(g_gpu), g, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", LAYERS)
def test_layer_gradient_check_on_the_gpu(gpu, name, rng):
    """float64 centred differences of the GPU forward against the GPU backward."""
    forward, backward, make = LAYERS[name]

    def forward_host(*inputs):
        out, cache = forward(*_on(gpu, inputs))
        return asnumpy(out), cache

    def backward_host(dout, cache):
        return asnumpy(backward(to_device(dout, gpu), cache))

    check_layer_gradients(forward_host, backward_host, make(rng), rng)


def test_dropout_on_the_gpu_draws_its_mask_there_and_backpropagates_it(gpu, rng):
    x = to_device(rng.standard_normal((50, 40)), gpu)
    param = {"mode": "train", "p": 0.7, "seed": 3}
    out, cache = layers.dropout_forward(x, param)
    assert not is_host(out)
    kept = asnumpy(out) != 0
    assert 0.6 < kept.mean() < 0.8  # about p of the units survive
    np.testing.assert_allclose(asnumpy(out)[kept], asnumpy(x)[kept] / 0.7)
    # The same seed gives the same mask; the gradient goes through it.
    again, _ = layers.dropout_forward(x, param)
    np.testing.assert_array_equal(asnumpy(again), asnumpy(out))
    dout = to_device(np.ones((50, 40)), gpu)
    np.testing.assert_array_equal(asnumpy(layers.dropout_backward(dout, cache)) != 0, kept)
    # A lent generator gives fresh masks, reproducibly from its seed.
    masks = [asnumpy(layers.dropout_forward(x, {"mode": "train", "p": 0.5,
                                                "rng": np.random.default_rng(9)})[0]) != 0
             for _ in range(2)]
    np.testing.assert_array_equal(*masks)
    lent = {"mode": "train", "p": 0.5, "rng": np.random.default_rng(9)}
    first, second = (asnumpy(layers.dropout_forward(x, lent)[0]) != 0 for _ in range(2))
    assert (first != second).any()


@pytest.mark.parametrize("loss", [layers.softmax_loss, layers.svm_loss])
def test_losses_on_the_gpu_equal_the_cpu(gpu, loss, rng):
    x, y = rng.standard_normal((7, 5)), rng.integers(0, 5, 7)
    value, dx = loss(x, y)
    value_gpu, dx_gpu = loss(to_device(x, gpu), to_device(y, gpu))
    assert isinstance(value_gpu, float) and not is_host(dx_gpu)
    assert abs(value_gpu - value) < 1e-12
    np.testing.assert_allclose(asnumpy(dx_gpu), dx, atol=1e-12)


@pytest.mark.parametrize("rule", sorted(optim.UPDATE_RULES))
def test_update_rules_keep_state_on_the_gpu(gpu, rule, rng):
    w, dw = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    update = optim.UPDATE_RULES[rule]
    w_cpu, config_cpu = update(w, dw, {"learning_rate": 0.1})
    w_cpu, config_cpu = update(w_cpu, dw, config_cpu)
    w_gpu, config_gpu = update(to_device(w, gpu), to_device(dw, gpu), {"learning_rate": 0.1})
    w_gpu, config_gpu = update(w_gpu, to_device(dw, gpu), config_gpu)
    assert not is_host(w_gpu)
    np.testing.assert_allclose(asnumpy(w_gpu), w_cpu, atol=1e-14)
    for key, value in config_gpu.items():
        if hasattr(value, "shape"):
            assert not is_host(value), key
            np.testing.assert_allclose(asnumpy(value), config_cpu[key], atol=1e-14)


def test_gather_im2col_and_col2im_are_adjoint(gpu, rng):
    """<im2col(x), c> = <x, col2im(c)> for any x and c, padding and stride included."""
    x, geometry = rng.standard_normal((2, 3, 7, 6)), (3, 2, 1, 2)  # fh, fw, padding, stride
    cols = gather_layers.im2col_gather(to_device(x, gpu), *geometry)
    c = rng.standard_normal(cols.shape)
    back = gather_layers.col2im_gather(to_device(c, gpu), x.shape, *geometry)
    np.testing.assert_allclose(float((cols * to_device(c, gpu)).sum()),
                               float((to_device(x, gpu) * back).sum()), rtol=1e-12)
    # The column layout: entry [n, (c fh + i) fw + j, h' W' + w'] is the padded input.
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, ch, i, j, ho, wo = 1, 2, 2, 1, 1, 2
    Wo = 1 + (6 + 2 - 2) // 2
    assert float(cols[n, (ch * 3 + i) * 2 + j, ho * Wo + wo]) == padded[n, ch, ho * 2 + i,
                                                                        wo * 2 + j]


# ----------------------------------------------------------------------------- models


def _models():
    # Seeds whose hidden pre-activations keep clear of the ReLU kinks on _batch's inputs
    # (ThreeLayerConvNet at this size puts some within 1e-6 of 0 for other seeds).
    return {
        "convnet": lambda: ConvNet("[conv3-4-nobias,bn,relu]x2,pool,conv3-6,lrelu,avgpool2,"
                                   "res-6,res-8-s2,gn2,elu,gap,fc5", input_dim=(3, 8, 8),
                                   num_classes=5, dtype=np.float64, reg=0.1, seed=0),
        "convnet_fc_bn": lambda: ConvNet("conv3-4,relu,maxpool3-s1,fc6,bn,relu,fc5",
                                         input_dim=(3, 8, 8), num_classes=5,
                                         dtype=np.float64, seed=1),
        "threelayer": lambda: ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=4,
                                                filter_size=3, hidden_dim=7, num_classes=5,
                                                dtype=np.float64, reg=0.1, seed=4),
        "fc_batchnorm": lambda: FullyConnectedNet([6, 5], input_dim=3 * 8 * 8, num_classes=5,
                                                  normalization="batchnorm", reg=0.1,
                                                  dtype=np.float64, seed=3),
        "fc_layernorm": lambda: FullyConnectedNet([6], input_dim=3 * 8 * 8, num_classes=5,
                                                  normalization="layernorm", dtype=np.float64,
                                                  seed=4),
        "twolayer": lambda: TwoLayerNet(input_dim=3 * 8 * 8, hidden_dim=6, num_classes=5,
                                        reg=0.1, dtype=np.float64, seed=5),
    }


MODELS = _models()


def _batch(rng, n=6):
    return rng.standard_normal((n, 3, 8, 8)), rng.integers(0, 5, n)


@pytest.mark.parametrize("name", MODELS)
def test_model_on_the_gpu_equals_the_cpu(gpu, name, rng):
    X, y = _batch(rng)
    model = MODELS[name]()
    model_gpu = MODELS[name]().to(gpu)
    assert model.device == "cpu" and model_gpu.device == "cuda:0"
    loss, grads = model.loss(X, y)
    loss_gpu, grads_gpu = model_gpu.loss(X, y)  # host batches are copied over
    assert abs(loss_gpu - loss) < 1e-10 * max(1, abs(loss))
    for key, g in grads.items():
        assert not is_host(grads_gpu[key]), key
        np.testing.assert_allclose(asnumpy(grads_gpu[key]), g, rtol=1e-9, atol=1e-11,
                                   err_msg=key)
    scores_gpu = model_gpu.loss(to_device(X, gpu))  # test mode, running statistics included
    assert not is_host(scores_gpu)
    np.testing.assert_allclose(asnumpy(scores_gpu), model.loss(X), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["convnet", "fc_batchnorm", "threelayer"])
def test_model_gradient_check_on_the_gpu(gpu, name, rng):
    X, y = _batch(rng, n=4)
    check_model_gradients(MODELS[name]().to(gpu), X, y, num_checks=6)


def test_model_moves_back_and_forth_and_saves_the_same_file(gpu, rng, tmp_path):
    X, y = _batch(rng)
    model = MODELS["convnet"]().to(gpu)
    model.loss(X, y)  # fills the batchnorm running statistics on the device
    assert all(not is_host(bn["running_mean"]) for bn in model.bn_params)
    save_model(model, tmp_path / "gpu.npz")
    loaded = load_model(tmp_path / "gpu.npz")  # a GPU-trained model loads on the CPU
    assert loaded.device == "cpu"
    np.testing.assert_allclose(loaded.loss(X), asnumpy(model.loss(X)), rtol=1e-10)
    model.to("cpu")
    assert model.device == "cpu" and all(is_host(bn["running_var"]) for bn in model.bn_params)
    save_model(model, tmp_path / "cpu.npz")
    a, b = np.load(tmp_path / "gpu.npz"), np.load(tmp_path / "cpu.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    # load_state_dict copies a host state onto the device the model is on.
    on_gpu = MODELS["convnet"]().to(gpu)
    on_gpu.load_state_dict(loaded.state_dict())
    np.testing.assert_allclose(asnumpy(on_gpu.loss(X)), loaded.loss(X), rtol=1e-10)


def _tiny_data(rng):
    X, y = rng.standard_normal((40, 3, 8, 8)), rng.integers(0, 5, 40)
    return {"X_train": X[:30], "y_train": y[:30], "X_val": X[30:], "y_val": y[30:]}


def test_solver_on_the_gpu_trains_as_on_the_cpu(gpu, rng, tmp_path):
    data = _tiny_data(rng)
    options = dict(update_rule="adam", optim_config={"learning_rate": 1e-2}, batch_size=10,
                   num_epochs=2, seed=0, shuffle=True, verbose=False, lr_schedule="cosine")
    cpu = Solver(MODELS["convnet"](), data, **options)
    cpu.train()
    solver = Solver(MODELS["convnet"](), data, device=gpu, **options)
    assert solver.model.device == "cuda:0"
    solver.train()
    np.testing.assert_allclose(solver.loss_history, cpu.loss_history, rtol=1e-8)
    assert solver.val_acc_history == cpu.val_acc_history
    assert all(is_host(v) for v in solver.best_params.values())
    assert all(not is_host(v) for v in solver.model.params.values())
    # The checkpoint is host arrays, resumable on either device.
    solver.save(tmp_path / "state.npz")
    resumed = Solver(MODELS["convnet"](), data, **options)
    resumed.load(tmp_path / "state.npz")
    assert resumed.model.device == "cpu"
    for name, config in resumed.optim_configs.items():
        np.testing.assert_allclose(config["m"], asnumpy(solver.optim_configs[name]["m"]))
    back_on_gpu = Solver(MODELS["convnet"](), data, device=gpu, **options)
    back_on_gpu.load(tmp_path / "state.npz")
    assert all(not is_host(c["v"]) for c in back_on_gpu.optim_configs.values())


def test_solver_trains_dropout_models_on_the_gpu(gpu, rng):
    model = FullyConnectedNet([20], input_dim=3 * 8 * 8, num_classes=5, dropout_keep_ratio=0.5,
                              dtype=np.float32, seed=0)
    solver = Solver(model, _tiny_data(rng), device=gpu, batch_size=10, num_epochs=3,
                    optim_config={"learning_rate": 1e-2}, update_rule="adam", seed=1,
                    verbose=False)
    solver.train()
    assert np.all(np.isfinite(solver.loss_history)) and solver.loss_history[-1] < 2.5


def test_operands_on_two_devices_are_a_type_error(gpu, rng):
    x, w, b = rng.standard_normal((2, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    with pytest.raises(TypeError, match="one device.*x on cuda:0, w on cpu"):
        layers.affine_forward(to_device(x, gpu), w, to_device(b, gpu))


def test_get_array_module_and_moves_on_the_host():
    a = np.arange(3.0)
    assert get_array_module(a, None, 2.0) is np and backend.device_of(a) == "cpu"
    nested = {"a": a, "b": [a, (a, 1)], "c": "text"}
    moved = to_device(nested, "cpu")
    assert moved["a"] is a and moved["b"][1][0] is a and moved["c"] == "text"
    assert asnumpy(a) is a
    assert backend.check_device(" CPU ") == "cpu"


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:-1", "", None, 0])
def test_unknown_device_names_are_a_value_error(name):
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:K'"):
        backend.check_device(name)


def test_a_gpu_index_that_does_not_exist_is_a_value_error(gpu):
    with pytest.raises(ValueError, match="does not exist"):
        backend.check_device("cuda:7")


def test_cuda_without_cupy_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy now fails, as without it
    with pytest.raises(ModuleNotFoundError, match=r'pip install "convlab\[gpu\]"'):
        backend.check_device("cuda")
    with pytest.raises(ModuleNotFoundError, match="CuPy"):
        MODELS["twolayer"]().to("cuda")


def test_cuda_without_a_gpu_is_a_value_error(monkeypatch):
    class NoDevice:
        class cuda:  # noqa: N801 (cupy's name)
            class runtime:  # noqa: N801
                @staticmethod
                def getDeviceCount():
                    raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    monkeypatch.setitem(sys.modules, "cupy", NoDevice)
    with pytest.raises(ValueError, match="needs an NVIDIA GPU.*no CUDA-capable device"):
        backend.check_device("cuda:0")


def test_a_cpu_only_model_refuses_the_gpu(gpu):
    from convlab.classifiers.rnn import CaptioningRNN

    model = CaptioningRNN({"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3}, input_dim=4,
                          wordvec_dim=3, hidden_dim=5, seed=0)
    with pytest.raises(ValueError, match="CaptioningRNN runs on the CPU only"):
        model.to(gpu)


def test_cli_device_errors_are_one_line(tmp_path):
    code = ("import sys; sys.modules['cupy'] = None; from convlab.train import main; "
            "sys.exit(main(sys.argv[1:]))")
    for device, expected in (("cuda", 'needs CuPy, which is not installed: pip install '
                                      '"convlab[gpu]"'),
                             ("tpu", "device must be 'cpu', 'cuda' or 'cuda:K'")):
        result = subprocess.run(
            [sys.executable, "-c", code, "--data", "builtin", "--device", device,
             "--out", str(tmp_path / device), "--epochs", "0"],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.stderr
        assert not (tmp_path / device).exists()  # refused before anything was written


def test_run_trains_on_the_gpu_and_resumes_on_the_cpu(gpu, tmp_path):
    from convlab.run import RunConfig, run

    config = RunConfig(data="builtin", builtin_size=[60, 20, 20],
                       model="[conv3-4,relu]x1,pool,fc10", epochs=1, batch_size=20)
    first = run(config, out=tmp_path / "run", verbose=0, device=gpu)
    assert first["epochs"] == 1
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "device" not in saved  # where a run trains is not what it computes
    config.epochs = 2
    second = run(config, out=tmp_path / "run", resume=True, verbose=0, device="cpu")
    assert second["epochs"] == 2 and load_model(tmp_path / "run" / "model.npz").device == "cpu"


def test_the_stand_in_device_refuses_what_cupy_refuses(monkeypatch):
    """The strict device is only worth its tests if it fails where CuPy would: on host
    arrays mixed in, as operands or indices, and on implicit conversion."""
    from strict_device import install

    install(monkeypatch)
    a = to_device(np.ones(3), "cuda")
    for mix in (lambda: a + np.ones(3), lambda: np.ones(3) * a, lambda: a[np.arange(2)],
                lambda: np.asarray(a)):
        with pytest.raises(TypeError):
            mix()
    b = a.copy()
    b[0] = 5.0
    assert not is_host(a + 1) and float(b.sum()) == 7.0 and float(a.sum()) == 3.0
