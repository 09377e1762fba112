"""Shared helpers: numerical gradients of a layer and input generators."""

import numpy as np
import pytest

from convlab import _threads
from convlab.gradient_check import eval_numerical_gradient_array, rel_error

# Relative-error bounds for comparing a float32 result with the float64 one.
FORWARD_RTOL = {np.float32: 1e-4, np.float64: 1e-12}
GRAD_TOL = 1e-7


@pytest.fixture
def rng():
    return np.random.default_rng(231)


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    """Run the test at this thread count: the kernels' parallel loops and the chunk workers
    (which split the GEMMs) at 2."""
    before = _threads._STATE.requested
    blas = _threads._blas_threads()
    _threads.set_num_threads(request.param)
    yield request.param
    _threads.set_num_threads(blas)
    _threads._STATE.requested = before
    _threads._apply_kernel_threads()


def distinct_values(rng, shape, spacing=1e-2):
    """Values with no two closer than ``spacing``: max pooling never meets a tie, even under
    the finite-difference probe, so its gradient is well defined."""
    values = rng.permutation(int(np.prod(shape))).astype(np.float64) * spacing
    return (values - values.mean()).reshape(shape)


def away_from_zero(x, margin=1e-2):
    """Push entries out of (-margin, margin), keeping ReLU-like kinks out of the probe's reach."""
    return np.where(np.abs(x) < margin, np.copysign(margin, x) + x, x)


def check_layer_gradients(forward, backward, inputs, rng, tol=GRAD_TOL, h=1e-5):
    """Compare backward(dout, cache) with numerical gradients of every input in ``inputs``
    (centred differences with step h).

    forward: f(*inputs) -> (out, cache); backward returns the gradients in input order (or a
    single array for one input). Returns the relative errors.
    """
    out, cache = forward(*inputs)
    dout = rng.standard_normal(out.shape)
    analytic = backward(dout, cache)
    if not isinstance(analytic, tuple):
        analytic = (analytic,)
    errors = []
    for i, x in enumerate(inputs):
        if analytic[i] is None:
            continue

        def f_of_input(v, i=i):
            args = list(inputs)
            args[i] = v
            return forward(*args)[0]

        numeric = eval_numerical_gradient_array(f_of_input, x, dout, h)
        err = rel_error(analytic[i], numeric)
        assert err < tol, f"gradient of input {i} has relative error {err:.2e} > {tol:.0e}"
        errors.append(err)
    return errors


# ----------------------------------------------------------------------------- whole models
#
# A centred difference (L(w + h) - L(w - h)) / 2h of a float64 loss carries two errors:
# - round-off: each loss evaluation is off by a few eps * |L| (its sums run over a few
#   thousand terms), and dividing by 2h turns that into an absolute error of about
#   eps * |L| / h per entry. Measured on the presets: 0.2 to 0.6 x eps |L| / h.
# - truncation: h^2 / 6 * |L'''|, relative and ~1e-10 at h = 1e-5 for these smooth pieces.
# An elementwise relative bound alone fails on entries whose true gradient is tiny (a
# whole-model check has many): their round-off is the same absolute size, so the relative
# error depends on which BLAS kernel summed what, i.e. on the CPU. The bound is therefore
#   |analytic - numeric| <= MODEL_ROUNDOFF * eps * |L| / h + MODEL_RTOL * (|analytic| + |numeric|)
# with MODEL_ROUNDOFF = 16 (25x the worst measured round-off) and MODEL_RTOL = 1e-6.
# A probe whose +-h step crosses a ReLU kink or a max-pool tie sees two different linear
# pieces; such an entry is probed again at h / 16 (and its budget scaled by 16), which moves
# the probe away from a kink at any distance > h / 16, while a wrong analytic gradient stays
# wrong at every step. test_*_gradient_check_catches_a_wrong_gradient keep the bound honest.
MODEL_STEP = 1e-5
MODEL_ROUNDOFF = 16
MODEL_RTOL = 1e-6
KINK_SHRINK = 16


def _centred_difference(model, X, y, flat, i, h):
    old = flat[i]
    flat[i] = old + h
    loss_plus = model.loss(X, y)[0]
    flat[i] = old - h
    loss_minus = model.loss(X, y)[0]
    flat[i] = old
    return (loss_plus - loss_minus) / (2 * h)


def model_gradient_errors(model, X, y, grads, num_checks=None, seed=0, entries=None):
    """{parameter name: worst |analytic - numeric| / budget} over the probed entries: all of
    them, or num_checks random distinct entries of each parameter, or only the flat indices
    given per parameter in ``entries`` ({name: indices}). A value < 1 passes."""
    loss = abs(float(model.loss(X, y)[0]))
    rng = np.random.default_rng(seed)
    eps = np.finfo(np.float64).eps
    errors = {}
    if entries is None:
        entries = {}
        for name, param in model.params.items():
            count = param.size if num_checks is None else min(num_checks, param.size)
            entries[name] = rng.choice(param.size, size=count, replace=False)
    for name, indices in entries.items():
        flat = model.params[name].reshape(-1)  # a view: writing to it perturbs the parameter
        analytic = grads[name].reshape(-1)
        worst = 0.0
        for i in indices:
            h = MODEL_STEP
            for _ in range(2):  # the step, then once more at h / KINK_SHRINK if it failed
                numeric = _centred_difference(model, X, y, flat, i, h)
                budget = MODEL_ROUNDOFF * eps * max(loss, 1.0) / h + MODEL_RTOL * (
                    abs(analytic[i]) + abs(numeric)
                )
                error = abs(analytic[i] - numeric) / budget
                if error < 1:
                    break
                h /= KINK_SHRINK
            worst = max(worst, error)
        errors[name] = worst
    return errors


def check_model_gradients(model, X, y, num_checks=None, seed=0):
    """Assert model.loss's gradients match centred differences within the float64 budget."""
    _, grads = model.loss(X, y)
    assert set(grads) == set(model.params)
    for name, param in model.params.items():
        assert grads[name].dtype == param.dtype, name
    for name, error in model_gradient_errors(model, X, y, grads, num_checks, seed).items():
        assert error < 1, f"{name}: gradient error {error:.2f} x the float64 budget"


def assert_check_catches_wrong_gradients(model, X, y):
    """The check above must fail on gradients a plausible bug gives: one parameter's
    gradient scaled by 1 + 1e-4, or one entry of it off by 1e-3 of its largest entry."""
    _, grads = model.loss(X, y)
    name = max(grads, key=lambda k: np.abs(grads[k]).max())
    flat = grads[name].reshape(-1)
    largest = np.argsort(np.abs(flat))[-10:]  # the entries a scaling error moves most
    scaled = dict(grads, **{name: grads[name] * (1 + 1e-4)})
    one_entry = flat.copy()
    one_entry[largest[-1]] += 1e-3 * abs(flat[largest[-1]])
    nudged = dict(grads, **{name: one_entry.reshape(grads[name].shape)})
    for wrong, probed in ((scaled, largest), (nudged, largest[-1:])):
        errors = model_gradient_errors(model, X, y, wrong, entries={name: probed})
        assert errors[name] >= 1, f"a wrong gradient of {name} passed the check"


# ----------------------------------------------------------------------------- devices


def _cupy_sees_a_gpu():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device
        return False


HAVE_GPU = _cupy_sees_a_gpu()


@pytest.fixture(params=[
    "strict",
    pytest.param("cupy", marks=pytest.mark.skipif(
        not HAVE_GPU, reason="no CuPy with a usable NVIDIA GPU (pip install 'convlab[gpu]')")),
])
def gpu(request, monkeypatch):
    """The device name 'cuda' on each GPU backend at hand: 'strict' (the stand-in of
    tests/strict_device.py, always) and 'cupy' (a real GPU, when there is one)."""
    if request.param == "strict":
        from strict_device import install

        install(monkeypatch)
    return "cuda"
