"""Property-based fuzzing of the public entry points that read untrusted input, within a
bounded budget: whatever the input, the answer is a valid result or a ValueError/TypeError
(FileNotFoundError for paths), never another exception, a hang or a wrong answer."""

import io
import pickle
import tarfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convlab import data_utils as du
from convlab import fast_layers as fl
from convlab import layers as L
from convlab import load_model, save_model
from convlab.classifiers import ConvNet

BUDGET = settings(max_examples=150, deadline=2000, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow,
                                         HealthCheck.function_scoped_fixture])
EXPECTED = (ValueError, TypeError)

GRAMMAR_PIECES = st.sampled_from(
    ["conv3-4", "conv1-2-s2-p0-nobias", "bn", "gn2", "relu", "lrelu0.2", "elu", "pool",
     "maxpool3-s1", "avgpool2", "gap", "dropout0.5", "fc7", "res-4", "res-6-s2", "[", "]",
     "]x2", "]x1000", ",", "x", "-", "0", "9", ".", " ", "conv", "fc", "reference"])


@BUDGET
@given(pieces=st.lists(GRAMMAR_PIECES, max_size=25))
def test_architecture_strings_build_or_fail_cleanly(pieces):
    spec = "".join(pieces)
    try:
        model = ConvNet(spec, input_dim=(3, 8, 8), num_classes=7, seed=0)
    except EXPECTED:
        pass
    else:
        # Bounded by construction (MAX_LAYERS is checked before a group is multiplied out).
        assert len(model.layers) <= 1000
        assert model.loss(np.zeros((1, 3, 8, 8))).shape == (1, 7)


@BUDGET
@given(seed=st.integers(0, 2**16), nan_fraction=st.floats(0, 0.5),
       window=st.sampled_from([(2, 2, 2), (3, 3, 1), (2, 3, 1), (3, 2, 2)]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_fast_max_pooling_equals_naive_with_nan_and_inf(seed, nan_fraction, window, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, 7, 22)).astype(dtype)
    specials = rng.random(x.shape)
    x[specials < nan_fraction] = np.nan
    x[(specials > 0.97)] = np.inf
    x[(specials > 0.94) & (specials <= 0.97)] = -np.inf
    pp = dict(zip(("pool_height", "pool_width", "stride"), window, strict=True))
    naive, naive_cache = L.max_pool_forward_naive(x, pp)
    fast, fast_cache = fl.max_pool_forward_fast(x, pp)
    np.testing.assert_array_equal(fast, naive)
    dout = rng.standard_normal(naive.shape).astype(dtype)
    np.testing.assert_array_equal(fl.max_pool_backward_fast(dout, fast_cache),
                                  L.max_pool_backward_naive(dout, naive_cache))


def _mutations():
    """(kind, position as a fraction, byte) edits: flip, truncate, or insert."""
    return st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert"]),
                              st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                    min_size=1, max_size=4)


def _mutate(data, edits):
    data = bytearray(data)
    for kind, where, byte in edits:
        i = int(where * len(data))
        if kind == "flip":
            data[i] ^= byte or 1
        elif kind == "truncate":
            del data[i:]
        else:
            data[i:i] = bytes([byte])
        if not data:
            break
    return bytes(data)


def _cifar_batch_bytes(n=6):
    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": b"fuzz"}
    return pickle.dumps(batch, protocol=2)


@BUDGET
@given(edits=_mutations())
def test_mutated_cifar_batches_load_or_fail_cleanly(edits, tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(_mutate(_cifar_batch_bytes(), edits))
    try:
        X, y = du.load_CIFAR_batch(path, dtype=np.uint8)
    except EXPECTED:
        return
    assert X.shape == (len(y), 32, 32, 3) and X.dtype == np.uint8
    assert y.dtype == np.int64 and np.all((y >= 0) & (y < 10))


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.npz"
    save_model(ConvNet("conv3-2,bn,relu,fc3", input_dim=(1, 4, 4), num_classes=3, seed=0), path)
    return path.read_bytes()


@BUDGET
@given(edits=_mutations())
def test_mutated_model_files_load_or_fail_cleanly(edits, model_bytes, tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(_mutate(model_bytes, edits))
    try:
        model = load_model(path)
    except EXPECTED:
        return
    assert model.loss(np.zeros((1, 1, 4, 4))).shape == (1, 3)


@pytest.fixture(scope="module")
def archive_bytes():
    from PIL import Image

    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for cls in ("a", "b"):
            for i in range(2):
                image = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(
                    image, format="PNG")
                info = tarfile.TarInfo(f"train/{cls}/{i}.png")
                info.size = len(image.getvalue())
                tar.addfile(info, io.BytesIO(image.getvalue()))
    return buffer.getvalue()


@BUDGET
@given(edits=_mutations())
def test_mutated_image_archives_load_or_fail_cleanly(edits, archive_bytes, tmp_path):
    path = tmp_path / "images.tar.gz"
    path.write_bytes(_mutate(archive_bytes, edits))
    try:
        X, y, names = du.load_image_folder(path)
    except EXPECTED:
        return
    # A load that succeeds read an intact archive: the gzip CRC covers every byte.
    assert X.shape == (4, 4, 4, 3) and names == ["a", "b"]
    assert y.tolist() == [0, 0, 1, 1]
