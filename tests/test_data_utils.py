"""Tests for convlab.data_utils.

Every test builds its own small files under tmp_path (a miniature CIFAR-10 in the official
pickle format, small image trees and archives); the shared datasets and the user's real cache
are never touched.
"""

import functools
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlab import data_utils as du
from convlab.data_utils import (
    BUILTIN_CLASS_NAMES,
    DOWNLOAD_COMMAND,
    download_CIFAR10,
    find_CIFAR10_dir,
    get_CIFAR10_data,
    load_builtin_dataset,
    load_CIFAR10,
    load_CIFAR_batch,
    load_dataset,
    load_image_folder,
    make_builtin_images,
    preprocess_images,
    random_crop,
    random_crop_flip,
    random_flip,
    split_per_class,
)

# Train batch sizes deliberately differ from 10000 and from each other.
TRAIN_SIZES = (7, 8, 9, 10, 11)
TEST_SIZE = 12


# ---------------------------------------------------------------------------------------------
# Fixtures: isolated environment and a miniature CIFAR-10
# ---------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Point HOME / XDG_CACHE_HOME at empty temp dirs and clear $CONVLAB_DATA."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("CONVLAB_DATA", raising=False)
    return home


def _batch_dict(rng, n, batch_label):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    return {
        b"batch_label": batch_label.encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def _write_pickle(path, obj, protocol=2, legacy_numpy_names=False):
    raw = pickle.dumps(obj, protocol=protocol)
    if legacy_numpy_names:
        # Mimic pickles written by NumPy 1.x (as the official files are).
        assert protocol <= 2
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)


def make_cifar_dir(parent, seed=0):
    """Write a miniature ``cifar-10-batches-py`` under ``parent``; return (dir, raw dicts)."""
    rng = np.random.default_rng(seed)
    root = parent / "cifar-10-batches-py"
    root.mkdir(parents=True)
    raw = {}
    for i, n in enumerate(TRAIN_SIZES, start=1):
        d = _batch_dict(rng, n, f"training batch {i} of 5")
        # exercise several pickle flavours: NumPy 1.x names, protocol 2 and protocol 5
        if i == 1:
            _write_pickle(root / f"data_batch_{i}", d, protocol=2, legacy_numpy_names=True)
        elif i == 2:
            _write_pickle(root / f"data_batch_{i}", d, protocol=5)
        else:
            _write_pickle(root / f"data_batch_{i}", d, protocol=2)
        raw[f"data_batch_{i}"] = d
    d = _batch_dict(rng, TEST_SIZE, "testing batch 1 of 1")
    _write_pickle(root / "test_batch", d)
    raw["test_batch"] = d
    meta = {
        b"label_names": [c.encode() for c in du.CIFAR10_CLASS_NAMES],
        b"num_cases_per_batch": 10,
        b"num_vis": 3072,
    }
    _write_pickle(root / "batches.meta", meta)
    return root, raw


def _expected_images(d):
    n = len(d[b"labels"])
    return d[b"data"].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)


@pytest.fixture
def cifar(tmp_path):
    return make_cifar_dir(tmp_path / "data")


# ---------------------------------------------------------------------------------------------
# CIFAR-10 loading
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["data_batch_1", "data_batch_2", "data_batch_3", "test_batch"])
def test_load_CIFAR_batch_matches_raw(cifar, name):
    root, raw = cifar
    X, Y = load_CIFAR_batch(str(root / name))
    n = len(raw[name][b"labels"])
    assert X.shape == (n, 32, 32, 3) and X.dtype == np.float32
    assert Y.shape == (n,) and Y.dtype == np.int64
    np.testing.assert_array_equal(X, _expected_images(raw[name]))
    np.testing.assert_array_equal(Y, raw[name][b"labels"])


def test_load_CIFAR_batch_dtype_and_pathlike(cifar):
    root, raw = cifar
    X, _ = load_CIFAR_batch(root / "test_batch", dtype=np.uint8)
    assert X.dtype == np.uint8
    X64, _ = load_CIFAR_batch(root / "test_batch", dtype=np.float64)
    assert X64.dtype == np.float64
    with pytest.raises(TypeError):
        load_CIFAR_batch(root / "test_batch", dtype=object)


def test_load_CIFAR_batch_accepts_raw_bytes_and_str_keys(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    _write_pickle(tmp_path / "b", {"data": data.tobytes(), "labels": [0, 5, 9]}, protocol=4)
    X, Y = load_CIFAR_batch(tmp_path / "b")
    np.testing.assert_array_equal(X, data.reshape(3, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(Y, [0, 5, 9])


def test_load_CIFAR_batch_python2_pickle(tmp_path):
    """A byte-for-byte Python 2 cPickle stream, as in the official archive (py2 str keys)."""
    n = 2
    data = (np.arange(n * 3072) % 251).astype(np.uint8).reshape(n, 3072)
    raw = data.tobytes()
    stream = (
        b"\x80\x02}(U\x04data"
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        b"(K\x01K\x02M\x00\x0c\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
        b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T"
        + struct.pack("<I", len(raw)) + raw
        + b"tbU\x06labels]K\x03aK\x07au."
    )
    (tmp_path / "py2_batch").write_bytes(stream)
    X, Y = load_CIFAR_batch(tmp_path / "py2_batch", dtype=np.uint8)
    np.testing.assert_array_equal(X, data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(Y, [3, 7])


def test_load_CIFAR10_concatenates_in_order(cifar):
    root, raw = cifar
    Xtr, Ytr, Xte, Yte = load_CIFAR10(str(root))
    assert Xtr.shape == (sum(TRAIN_SIZES), 32, 32, 3) and Xtr.dtype == np.float32
    assert Xte.shape == (TEST_SIZE, 32, 32, 3)
    expected = np.concatenate([_expected_images(raw[f"data_batch_{i}"]) for i in range(1, 6)])
    np.testing.assert_array_equal(Xtr, expected)
    np.testing.assert_array_equal(
        Ytr, np.concatenate([raw[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    )
    np.testing.assert_array_equal(Xte, _expected_images(raw["test_batch"]))
    assert Yte.dtype == np.int64


def test_load_CIFAR10_missing_files(tmp_path, cifar):
    root, _ = cifar
    (root / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError) as exc:
        load_CIFAR10(root)
    msg = str(exc.value)
    assert "data_batch_4" in msg and str(root) in msg and DOWNLOAD_COMMAND in msg
    with pytest.raises(FileNotFoundError, match="download_CIFAR10"):
        load_CIFAR10(tmp_path / "nowhere")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_pickle_rejected_and_not_executed(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    payload = {b"data": _Evil(marker), b"labels": [1]}
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises((ValueError, pickle.UnpicklingError)) as exc:
        load_CIFAR_batch(path)
    assert "data_batch_1" in str(exc.value)
    assert "system" in str(exc.value)
    assert not marker.exists()

    path.write_bytes(pickle.dumps(_EvilEval(), protocol=protocol))
    with pytest.raises((ValueError, pickle.UnpicklingError)):
        load_CIFAR_batch(path)


def test_object_dtype_array_rejected(tmp_path):
    path = tmp_path / "batch"
    arr = np.empty((1, 3072), dtype=object)
    arr[:] = 0
    _write_pickle(path, {b"data": arr, b"labels": [0]})
    with pytest.raises(ValueError, match="batch"):
        load_CIFAR_batch(path)


def test_corrupt_and_malformed_batches(tmp_path, cifar):
    root, _ = cifar
    good = (root / "data_batch_3").read_bytes()

    truncated = tmp_path / "truncated_batch"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="truncated_batch"):
        load_CIFAR_batch(truncated)

    garbage = tmp_path / "garbage_batch"
    garbage.write_bytes(b"this is not a pickle at all")
    with pytest.raises(ValueError, match="garbage_batch"):
        load_CIFAR_batch(garbage)

    empty = tmp_path / "empty_batch"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty_batch"):
        load_CIFAR_batch(empty)

    cases = {
        "not_a_dict": [1, 2, 3],
        "no_labels": {b"data": np.zeros((2, 3072), np.uint8)},
        "no_data": {b"labels": [1, 2]},
        "wrong_width": {b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]},
        "label_count": {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]},
        "label_range": {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]},
        "pixel_range": {b"data": np.full((1, 3072), 300, np.int64), b"labels": [1]},
        "odd_bytes": {b"data": b"\x00" * 100, b"labels": [1]},
    }
    for name, obj in cases.items():
        path = tmp_path / name
        _write_pickle(path, obj)
        with pytest.raises(ValueError) as exc:
            load_CIFAR_batch(path)
        assert name in str(exc.value), name

    with pytest.raises(FileNotFoundError):
        load_CIFAR_batch(tmp_path / "does_not_exist")


# ---------------------------------------------------------------------------------------------
# get_CIFAR10_data and directory lookup
# ---------------------------------------------------------------------------------------------

def test_get_CIFAR10_data_explicit_dir(cifar):
    root, raw = cifar
    data = get_CIFAR10_data(num_training=30, num_validation=10, num_test=5, cifar10_dir=root)
    assert set(data) == {"X_train", "y_train", "X_val", "y_val", "X_test", "y_test"}
    assert data["X_train"].shape == (30, 3, 32, 32)
    assert data["X_val"].shape == (10, 3, 32, 32)
    assert data["X_test"].shape == (5, 3, 32, 32)
    for k in ("X_train", "X_val", "X_test"):
        assert data[k].dtype == np.float32 and data[k].flags["C_CONTIGUOUS"]
    for k in ("y_train", "y_val", "y_test"):
        assert data[k].dtype == np.int64

    Xtr, Ytr, Xte, Yte = load_CIFAR10(root, dtype=np.float64)
    mean = Xtr[:30].mean(axis=0)
    np.testing.assert_allclose(data["X_train"].mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(
        data["X_val"], (Xtr[30:40] - mean).transpose(0, 3, 1, 2), atol=1e-3
    )
    np.testing.assert_allclose(data["X_test"], (Xte[:5] - mean).transpose(0, 3, 1, 2), atol=1e-3)
    np.testing.assert_array_equal(data["y_train"], Ytr[:30])
    np.testing.assert_array_equal(data["y_val"], Ytr[30:40])
    np.testing.assert_array_equal(data["y_test"], Yte[:5])


def test_get_CIFAR10_data_no_mean_and_parent_dir(cifar):
    root, _ = cifar
    # the parent of cifar-10-batches-py works as well as the directory itself
    data = get_CIFAR10_data(20, 5, 12, subtract_mean=False, cifar10_dir=root.parent,
                            dtype=np.float64)
    Xtr, _, Xte, _ = load_CIFAR10(root, dtype=np.float64)
    np.testing.assert_array_equal(data["X_train"], Xtr[:20].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(data["X_test"], Xte.transpose(0, 3, 1, 2))
    assert data["X_train"].dtype == np.float64


def test_get_CIFAR10_data_from_env(cifar, monkeypatch):
    root, _ = cifar
    monkeypatch.setenv("CONVLAB_DATA", str(root.parent))
    assert find_CIFAR10_dir() == str(root)
    data = get_CIFAR10_data(num_training=40, num_validation=5, num_test=12)
    assert data["X_train"].shape == (40, 3, 32, 32)
    assert data["X_val"].shape == (5, 3, 32, 32)


def test_find_CIFAR10_dir_user_cache(tmp_path, monkeypatch):
    root, _ = make_cifar_dir(tmp_path / "xdg-cache" / "convlab")
    assert find_CIFAR10_dir() == str(root)
    # without XDG_CACHE_HOME the default is ~/.cache/convlab
    monkeypatch.delenv("XDG_CACHE_HOME")
    home_root, _ = make_cifar_dir(tmp_path / "home" / ".cache" / "convlab")
    assert find_CIFAR10_dir() == str(home_root)
    assert du.default_data_dir() == str(tmp_path / "home" / ".cache" / "convlab")


@pytest.mark.parametrize("layout", [("cs231n", "datasets"), ("datasets",)])
def test_find_CIFAR10_dir_in_the_course_layouts(layout, tmp_path, monkeypatch):
    # Assignment notebooks keep the data in cs231n/datasets next to them (or ./datasets).
    notebook_dir = tmp_path / "assignment2"
    root, _ = make_cifar_dir(notebook_dir.joinpath(*layout))
    monkeypatch.chdir(notebook_dir)
    assert find_CIFAR10_dir() == str(root)
    assert get_CIFAR10_data(num_training=10, num_validation=5, num_test=5)["X_train"].shape \
        == (10, 3, 32, 32)


def test_find_CIFAR10_dir_not_found_message(tmp_path, monkeypatch):
    env_dir = tmp_path / "envdata"
    env_dir.mkdir()
    monkeypatch.setenv("CONVLAB_DATA", str(env_dir))
    with pytest.raises(FileNotFoundError) as exc:
        get_CIFAR10_data()
    msg = str(exc.value)
    assert DOWNLOAD_COMMAND in msg
    assert str(env_dir) in msg
    assert str(tmp_path / "xdg-cache" / "convlab") in msg
    assert "CONVLAB_DATA" in msg
    assert str(Path("cs231n", "datasets", "cifar-10-batches-py").absolute()) in msg

    with pytest.raises(FileNotFoundError) as exc:
        find_CIFAR10_dir(tmp_path / "explicit")
    assert str(tmp_path / "explicit") in str(exc.value)
    assert "download_CIFAR10()" in str(exc.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_training": -1},
        {"num_validation": -5},
        {"num_test": -1},
        {"num_training": sum(TRAIN_SIZES), "num_validation": 1},
        {"num_training": 10, "num_validation": sum(TRAIN_SIZES)},
        {"num_test": TEST_SIZE + 1},
        {"num_training": 0},
    ],
)
def test_get_CIFAR10_data_bad_counts(cifar, kwargs):
    root, _ = cifar
    args = {"num_training": 10, "num_validation": 5, "num_test": 5, **kwargs}
    with pytest.raises(ValueError):
        get_CIFAR10_data(cifar10_dir=root, **args)


def test_get_CIFAR10_data_type_errors(cifar):
    root, _ = cifar
    with pytest.raises(TypeError):
        get_CIFAR10_data(num_training=1.5, cifar10_dir=root)
    with pytest.raises(TypeError):
        get_CIFAR10_data(10, 5, 5, cifar10_dir=root, dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# download_CIFAR10 against a local HTTP server
# ---------------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (ephemeral port); yield (www dir, base URL, hits)."""
    www = tmp_path / "www"
    www.mkdir()
    hits = []

    class Handler(_QuietHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(www))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _make_tar(path, root_dir, arcname="cifar-10-batches-py"):
    with tarfile.open(path, "w:gz") as tf:
        tf.add(root_dir, arcname=arcname)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_CIFAR10_end_to_end(tmp_path, http_server):
    www, base, hits = http_server
    src, raw = make_cifar_dir(tmp_path / "src")
    md5 = _make_tar(www / "cifar-10-python.tar.gz", src)
    dest = tmp_path / "dest"

    path = download_CIFAR10(dest=dest, url=f"{base}/cifar-10-python.tar.gz", md5=md5,
                            progress=False)
    assert path == str(dest / "cifar-10-batches-py")
    assert sorted(os.listdir(dest)) == ["cifar-10-batches-py"]  # no temp files left
    Xtr, Ytr, Xte, Yte = load_CIFAR10(path)
    assert Xtr.shape == (sum(TRAIN_SIZES), 32, 32, 3)
    np.testing.assert_array_equal(Xte, _expected_images(raw["test_batch"]))
    assert len(hits) == 1

    # already present: nothing is fetched again
    assert download_CIFAR10(dest=dest, url=f"{base}/missing.tar.gz", md5=md5,
                            progress=False) == path
    assert len(hits) == 1


def test_download_CIFAR10_default_dest_is_found(tmp_path, http_server, monkeypatch):
    www, base, _ = http_server
    src, _ = make_cifar_dir(tmp_path / "src")
    md5 = _make_tar(www / "c.tgz", src)
    monkeypatch.setenv("CONVLAB_DATA", str(tmp_path / "envdata"))
    path = download_CIFAR10(url=f"{base}/c.tgz", md5=md5.upper(), progress=False)
    assert path == str(tmp_path / "envdata" / "cifar-10-batches-py")
    assert get_CIFAR10_data(10, 5, 5)["X_train"].shape == (10, 3, 32, 32)


def test_download_CIFAR10_bad_md5_leaves_nothing(tmp_path, http_server):
    www, base, _ = http_server
    src, _ = make_cifar_dir(tmp_path / "src")
    _make_tar(www / "c.tar.gz", src)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="MD5"):
        download_CIFAR10(dest=dest, url=f"{base}/c.tar.gz", md5="0" * 32, progress=False)
    assert os.listdir(dest) == []


def test_download_CIFAR10_http_error(tmp_path, http_server):
    _, base, _ = http_server
    dest = tmp_path / "dest"
    with pytest.raises(OSError):
        download_CIFAR10(dest=dest, url=f"{base}/nope.tar.gz", md5=None, progress=False)
    assert os.listdir(dest) == []


def test_download_CIFAR10_incomplete_archive_is_atomic(tmp_path, http_server):
    www, base, _ = http_server
    src, _ = make_cifar_dir(tmp_path / "src")
    (src / "test_batch").unlink()
    md5 = _make_tar(www / "c.tar.gz", src)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="test_batch"):
        download_CIFAR10(dest=dest, url=f"{base}/c.tar.gz", md5=md5, progress=False)
    assert os.listdir(dest) == []


def test_download_CIFAR10_replaces_incomplete_copy(tmp_path, http_server):
    www, base, _ = http_server
    src, _ = make_cifar_dir(tmp_path / "src")
    md5 = _make_tar(www / "c.tar.gz", src)
    dest = tmp_path / "dest"
    stale = dest / "cifar-10-batches-py"
    stale.mkdir(parents=True)
    (stale / "data_batch_1").write_bytes(b"partial")
    path = download_CIFAR10(dest=dest, url=f"{base}/c.tar.gz", md5=md5, progress=False)
    assert sorted(os.listdir(dest)) == ["cifar-10-batches-py"]
    assert load_CIFAR_batch(os.path.join(path, "data_batch_1"))[0].shape[0] == TRAIN_SIZES[0]


def _tar_with(path, members):
    """members: list of (TarInfo, bytes or None)."""
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return hashlib.md5(path.read_bytes()).hexdigest()


def _file_info(name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_download_CIFAR10_rejects_unsafe_archives(tmp_path, http_server, kind):
    www, base, _ = http_server
    members = [_file_info("cifar-10-batches-py/data_batch_1", b"x")]
    if kind == "dotdot":
        members.append(_file_info("cifar-10-batches-py/../../evil.txt", b"evil"))
    elif kind == "absolute":
        members.append(_file_info(str(tmp_path / "evil.txt"), b"evil"))
    else:
        link = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        link.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        link.linkname = "/etc/passwd"
        members.append((link, None))
    md5 = _tar_with(www / "evil.tar.gz", members)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="refusing"):
        download_CIFAR10(dest=dest, url=f"{base}/evil.tar.gz", md5=md5, progress=False)
    assert os.listdir(dest) == []
    assert not (tmp_path / "evil.txt").exists()


def test_download_CIFAR10_not_a_tar(tmp_path, http_server):
    www, base, _ = http_server
    (www / "junk.tar.gz").write_bytes(b"not a tarball")
    md5 = hashlib.md5(b"not a tarball").hexdigest()
    dest = tmp_path / "dest"
    with pytest.raises(ValueError):
        download_CIFAR10(dest=dest, url=f"{base}/junk.tar.gz", md5=md5, progress=False)
    assert os.listdir(dest) == []


# ---------------------------------------------------------------------------------------------
# load_image_folder
# ---------------------------------------------------------------------------------------------

def _rand_img(rng, h=8, w=6):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _encode(arr, fmt, mode="RGB"):
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def make_image_tree(root, rng):
    """Write root/train/<class>/<file>; return expected (arrays by class, lossless flags)."""
    layout = {
        "zebra": ["b.png", "a.png"],
        "cat": ["2.jpg", "1.png", "10.jpeg"],
        "Dog": ["x.PNG"],
    }
    expected = {}
    for cls, files in layout.items():
        d = root / "train" / cls
        d.mkdir(parents=True)
        for fn in files:
            arr = _rand_img(rng)
            fmt = "PNG" if fn.lower().endswith(".png") else "JPEG"
            (d / fn).write_bytes(_encode(arr, fmt))
            expected[(cls, fn)] = (arr, fmt == "PNG")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    return expected


def _check_tree_result(X, y, class_names, expected):
    assert class_names == ["Dog", "cat", "zebra"]  # sorted as strings, like ImageFolder
    order = [("Dog", "x.PNG"), ("cat", "1.png"), ("cat", "10.jpeg"), ("cat", "2.jpg"),
             ("zebra", "a.png"), ("zebra", "b.png")]
    assert X.shape == (6, 8, 6, 3) and X.dtype == np.uint8
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, [0, 1, 1, 1, 2, 2])
    for i, key in enumerate(order):
        arr, lossless = expected[key]
        if lossless:
            np.testing.assert_array_equal(X[i], arr)
        else:  # JPEG: close on average
            assert np.abs(X[i].astype(int) - arr).mean() < 60


def test_load_image_folder_dir(tmp_path):
    expected = make_image_tree(tmp_path / "tree", np.random.default_rng(0))
    X, y, names = load_image_folder(tmp_path / "tree")
    _check_tree_result(X, y, names, expected)
    # pointing directly at the level holding the class directories works too
    X2, y2, names2 = load_image_folder(str(tmp_path / "tree" / "train"))
    np.testing.assert_array_equal(X, X2)
    assert names2 == names


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar", "w")])
def test_load_image_folder_tar(tmp_path, suffix, mode):
    expected = make_image_tree(tmp_path / "tree", np.random.default_rng(0))
    archive = tmp_path / f"images{suffix}"
    with tarfile.open(archive, mode) as tf:
        tf.add(tmp_path / "tree" / "train", arcname="train")
    before = sorted(os.listdir(tmp_path))
    X, y, names = load_image_folder(archive)
    assert sorted(os.listdir(tmp_path)) == before  # nothing extracted next to the archive
    _check_tree_result(X, y, names, expected)
    Xd, yd, _ = load_image_folder(tmp_path / "tree")
    np.testing.assert_array_equal(X, Xd)
    np.testing.assert_array_equal(y, yd)


def test_load_image_folder_converts_modes(tmp_path):
    rng = np.random.default_rng(3)
    arr = _rand_img(rng)
    tmp_path = tmp_path / "images"  # beside the fixture's empty home/ folder
    (tmp_path / "a").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "gray.png").write_bytes(_encode(arr, "PNG", mode="L"))
    (tmp_path / "b" / "rgba.png").write_bytes(_encode(arr, "PNG", mode="RGBA"))
    X, y, names = load_image_folder(tmp_path)
    assert X.shape == (2, 8, 6, 3)
    gray = np.asarray(Image.fromarray(arr).convert("L"))
    np.testing.assert_array_equal(X[0], np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(X[1], arr)
    assert names == ["a", "b"]


def test_load_image_folder_corrupt_image_named(tmp_path):
    make_image_tree(tmp_path / "tree", np.random.default_rng(0))
    bad = tmp_path / "tree" / "train" / "cat" / "3_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match="3_broken.jpg"):
        load_image_folder(tmp_path / "tree")
    # truncated PNG
    good = _encode(_rand_img(np.random.default_rng(1)), "PNG")
    bad.unlink()
    (tmp_path / "tree" / "train" / "cat" / "4_trunc.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="4_trunc.png"):
        load_image_folder(tmp_path / "tree")
    # and the same from an archive
    archive = tmp_path / "t.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "tree", arcname=".")
    with pytest.raises(ValueError, match="4_trunc.png"):
        load_image_folder(archive)


def test_load_image_folder_size_mismatch_and_resize(tmp_path):
    rng = np.random.default_rng(0)
    tmp_path = tmp_path / "images"  # beside the fixture's empty home/ folder
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir(parents=True)
    (tmp_path / "a" / "1.png").write_bytes(_encode(_rand_img(rng, 8, 6), "PNG"))
    (tmp_path / "b" / "odd.png").write_bytes(_encode(_rand_img(rng, 5, 7), "PNG"))
    with pytest.raises(ValueError, match="odd.png"):
        load_image_folder(tmp_path)
    X, y, _ = load_image_folder(tmp_path, image_size=(4, 3))
    assert X.shape == (2, 4, 3, 3) and X.dtype == np.uint8
    with pytest.raises(ValueError):
        load_image_folder(tmp_path, image_size=(0, 3))
    with pytest.raises(TypeError):
        load_image_folder(tmp_path, image_size="big")


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image"):
        load_image_folder(tmp_path / "empty")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(_encode(_rand_img(np.random.default_rng(0)), "PNG"))
    with pytest.raises(ValueError, match="class"):
        load_image_folder(flat)
    (tmp_path / "notatar.tar.gz").write_bytes(b"nope")
    with pytest.raises(ValueError):
        load_image_folder(tmp_path / "notatar.tar.gz")
    # images at mixed depths are ambiguous
    mixed = tmp_path / "mixed"
    (mixed / "a" / "deeper").mkdir(parents=True)
    png = _encode(_rand_img(np.random.default_rng(0)), "PNG")
    (mixed / "a" / "1.png").write_bytes(png)
    (mixed / "a" / "deeper" / "2.png").write_bytes(png)
    with pytest.raises(ValueError, match="depth"):
        load_image_folder(mixed)


# ---------------------------------------------------------------------------------------------
# split_per_class and preprocess_images
# ---------------------------------------------------------------------------------------------

def test_split_per_class():
    y = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1, 0])
    X = np.arange(10)[:, None] * np.ones((1, 3))
    Xtr, ytr, Xva, yva = split_per_class(X, y, 1)
    # last example of each class: class 0 -> idx 9, class 1 -> idx 8, class 2 -> idx 7
    np.testing.assert_array_equal(Xva[:, 0], [7, 8, 9])
    np.testing.assert_array_equal(yva, [2, 1, 0])
    np.testing.assert_array_equal(Xtr[:, 0], [0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(ytr, y[:7])

    Xtr, ytr, Xva, yva = split_per_class(X, y, 2)
    np.testing.assert_array_equal(np.sort(Xva[:, 0]), [4, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(np.bincount(yva), [2, 2, 2])
    assert len(Xtr) == 4

    Xtr, ytr, Xva, yva = split_per_class(X, y, 0)
    assert len(Xva) == 0 and len(Xtr) == 10

    with pytest.raises(ValueError):
        split_per_class(X, y, 3)  # class 1 and 2 have only 3 examples
    with pytest.raises(ValueError):
        split_per_class(X, y, -1)
    with pytest.raises(ValueError):
        split_per_class(X[:5], y, 1)


def test_split_per_class_cifar_like():
    rng = np.random.default_rng(0)
    y = rng.permutation(np.repeat(np.arange(10), 50))
    X = rng.integers(0, 256, size=(500, 2, 2, 3), dtype=np.uint8)
    Xtr, ytr, Xva, yva = split_per_class(X, y, 5)
    assert Xtr.shape == (450, 2, 2, 3) and Xva.shape == (50, 2, 2, 3)
    assert Xtr.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(yva), [5] * 10)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        np.testing.assert_array_equal(Xva[yva == c], X[idx[-5:]])
        np.testing.assert_array_equal(Xtr[ytr == c], X[idx[:-5]])


def test_preprocess_images():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(20, 5, 4, 3), dtype=np.uint8)
    X[..., 2] //= 4  # different stats per channel
    out, mean, std = preprocess_images(X)
    assert out.shape == (20, 3, 5, 4) and out.dtype == np.float32
    assert mean.shape == (3,) and std.shape == (3,)
    np.testing.assert_allclose(mean, (X / 255.0).mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, (X / 255.0).std(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-4)
    expected = ((X / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)

    # float input holding 0..255 values gives the same result (non-uint8 statistics path)
    outf, meanf, stdf = preprocess_images(X.astype(np.float64))
    np.testing.assert_allclose(meanf, mean, rtol=1e-6)
    np.testing.assert_allclose(stdf, std, rtol=1e-5)
    np.testing.assert_allclose(outf, out, rtol=1e-5, atol=1e-5)

    # applying the same stats to other data
    X2 = rng.integers(0, 256, size=(3, 5, 4, 3), dtype=np.uint8)
    out2, mean2, std2 = preprocess_images(X2, mean, std, dtype=np.float64)
    assert out2.dtype == np.float64
    np.testing.assert_allclose(mean2, mean)
    np.testing.assert_allclose(out2, ((X2 / 255.0 - mean) / std).transpose(0, 3, 1, 2),
                               rtol=1e-5, atol=1e-6)

    # constant channel: std 0 is replaced by 1 (no NaN / inf)
    out3, _, std3 = preprocess_images(np.full((2, 2, 2, 3), 7, np.uint8))
    assert np.all(np.isfinite(out3)) and np.all(std3 == 1)

    with pytest.raises(ValueError):
        preprocess_images(X[0])
    with pytest.raises(ValueError):
        preprocess_images(X, mean=np.zeros(2), std=np.ones(2))
    with pytest.raises(TypeError):
        preprocess_images(X, dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# Built-in dataset
# ---------------------------------------------------------------------------------------------

def test_make_builtin_images_determinism_and_balance():
    state = np.random.get_state()  # noqa: NPY002 - checking the global RNG is untouched
    X1, y1 = make_builtin_images(200, seed=5)
    X2, y2 = make_builtin_images(200, seed=5)
    X3, y3 = make_builtin_images(200, seed=6)
    after = np.random.get_state()  # noqa: NPY002
    assert state[0] == after[0] and np.array_equal(state[1], after[1])  # global RNG untouched
    assert X1.shape == (200, 32, 32, 3) and X1.dtype == np.uint8
    assert y1.shape == (200,) and y1.dtype == np.int64
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)
    np.testing.assert_array_equal(np.bincount(y1, minlength=10), [20] * 10)
    assert np.bincount(make_builtin_images(23, 0)[1], minlength=10).max() == 3
    assert make_builtin_images(0, 0)[0].shape == (0, 32, 32, 3)
    assert len(BUILTIN_CLASS_NAMES) == 10 and len(set(BUILTIN_CLASS_NAMES)) == 10


def test_builtin_colour_is_not_a_class_cue():
    X, y = make_builtin_images(1000, seed=0)
    means = np.stack([X[y == c].mean(axis=(0, 1, 2)) for c in range(10)])
    # the average colour of every class is close to mid-grey
    assert np.all(np.abs(means - 127.5) < 20)


def test_load_builtin_dataset():
    d = load_builtin_dataset(num_train=300, num_val=50, num_test=40, seed=1)
    for split, n in (("train", 300), ("val", 50), ("test", 40)):
        assert d[f"X_{split}"].shape == (n, 3, 32, 32)
        assert d[f"X_{split}"].dtype == np.float32
        assert d[f"y_{split}"].shape == (n,) and d[f"y_{split}"].dtype == np.int64
    assert d["class_names"] == list(BUILTIN_CLASS_NAMES)
    np.testing.assert_allclose(d["X_train"].mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(d["X_train"].std(axis=(0, 2, 3)), 1, atol=1e-3)
    np.testing.assert_array_equal(np.bincount(d["y_train"], minlength=10), [30] * 10)
    np.testing.assert_array_equal(np.bincount(d["y_val"], minlength=10), [5] * 10)
    np.testing.assert_array_equal(np.bincount(d["y_test"], minlength=10), [4] * 10)

    again = load_builtin_dataset(num_train=300, num_val=50, num_test=40, seed=1)
    for k in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(d[k], again[k])
    other = load_builtin_dataset(num_train=300, num_val=50, num_test=40, seed=2)
    assert not np.array_equal(d["X_train"], other["X_train"])

    # the splits are the raw generator's images, in order, normalised by training stats
    X, y = make_builtin_images(390, seed=1)
    np.testing.assert_array_equal(d["y_val"], y[300:350])
    expected, _, _ = preprocess_images(X[350:], d["mean"], d["std"])
    np.testing.assert_allclose(d["X_test"], expected, atol=1e-6)

    d64 = load_builtin_dataset(num_train=20, num_val=0, num_test=0, dtype=np.float64)
    assert d64["X_train"].dtype == np.float64 and d64["X_val"].shape == (0, 3, 32, 32)
    with pytest.raises(ValueError):
        load_builtin_dataset(num_train=-1)


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 3, 8, 10)).astype(np.float32)


def test_augment_shapes_dtype_and_determinism(batch):
    original = batch.copy()
    for fn in (
        lambda X, r: random_crop_flip(X, r),
        lambda X, r: random_crop_flip(X, r, pad=2, flip=False),
        lambda X, r: random_crop(X, r, pad=3),
        lambda X, r: random_flip(X, r),
    ):
        a = fn(batch, np.random.default_rng(7))
        b = fn(batch, np.random.default_rng(7))
        c = fn(batch, np.random.default_rng(8))
        assert a.shape == batch.shape and a.dtype == batch.dtype
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
        np.testing.assert_array_equal(batch, original)  # input untouched
    ints = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    assert random_crop_flip(ints, np.random.default_rng(0), pad=1).dtype == np.uint8


def test_flip_only_is_identity_or_mirror(batch):
    for out in (
        random_crop_flip(batch, np.random.default_rng(3), pad=0, flip=True),
        random_flip(batch, np.random.default_rng(3)),
    ):
        kinds = []
        for i in range(len(batch)):
            if np.array_equal(out[i], batch[i]):
                kinds.append("same")
            else:
                np.testing.assert_array_equal(out[i], batch[i][:, :, ::-1])
                kinds.append("mirror")
        assert "same" in kinds and "mirror" in kinds
    np.testing.assert_array_equal(
        random_crop_flip(batch, np.random.default_rng(0), pad=0, flip=False), batch
    )


def _find_window(img, padded, H, W):
    """Offsets (oy, ox, flipped) such that img is a window of padded (or of its mirror)."""
    hits = []
    for flipped, src in ((False, padded), (True, padded[:, :, ::-1])):
        for oy in range(padded.shape[1] - H + 1):
            for ox in range(padded.shape[2] - W + 1):
                if np.array_equal(src[:, oy:oy + H, ox:ox + W], img):
                    hits.append((oy, ox, flipped))
    return hits


@pytest.mark.parametrize("flip", [False, True])
def test_crops_are_windows_of_padded_image(batch, flip):
    pad = 3
    N, C, H, W = batch.shape
    out = random_crop_flip(batch, np.random.default_rng(11), pad=pad, flip=flip)
    padded = np.pad(batch, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    offsets = set()
    for i in range(N):
        hits = _find_window(out[i], padded[i], H, W)
        assert hits, f"image {i} is not a window of its padded image"
        if not flip:
            assert not any(f for _, _, f in hits)
        offsets.add(hits[0][:2])
    assert len(offsets) > 1  # offsets actually vary
    # a border of zeros appears only where the window leaves the image
    assert np.any(out == 0)


def test_augment_bad_arguments(batch):
    with pytest.raises(TypeError):
        random_crop_flip(batch, 0)
    with pytest.raises(TypeError):
        random_flip(batch, np.random.RandomState(0))
    with pytest.raises(ValueError):
        random_crop_flip(batch[0], np.random.default_rng(0))
    with pytest.raises(ValueError):
        random_crop(batch, np.random.default_rng(0), pad=-1)


# ---------------------------------------------------------------------------------------------
# load_dataset: one entry point, the same dict for every source
# ---------------------------------------------------------------------------------------------

def _assert_dataset(data, source, class_names, splits):
    assert data["source"] == source and data["class_names"] == list(class_names)
    for split in splits:
        X, y = data[f"X_{split}"], data[f"y_{split}"]
        assert X.ndim == 4 and X.shape[0] == y.shape[0] and X.dtype == np.float32
        assert y.dtype == np.int64 and np.all((y >= 0) & (y < len(class_names)))
    assert ("X_test" in data) == ("test" in splits)


def test_load_dataset_builtin():
    data = load_dataset("builtin", sizes=(40, 10, 10), seed=3)
    _assert_dataset(data, "builtin", BUILTIN_CLASS_NAMES, ("train", "val", "test"))
    assert data["X_train"].shape == (40, 3, 32, 32) and data["description"].startswith("built-in")
    np.testing.assert_array_equal(data["X_val"],
                                  load_builtin_dataset(40, 10, 10, seed=3)["X_val"])


def test_load_dataset_cifar10_and_auto(cifar):
    root, _ = cifar
    for source in ("cifar10", "auto"):
        data = load_dataset(source, sizes=(40, 5, 12), cifar10_dir=root, num_train=30)
        _assert_dataset(data, "cifar10", du.CIFAR10_CLASS_NAMES, ("train", "val", "test"))
        assert data["class_names"][:2] == ["airplane", "automobile"]
        assert len(data["X_train"]) == 30 and len(data["X_val"]) == 5
        expected = get_CIFAR10_data(40, 5, 12, cifar10_dir=root)
        np.testing.assert_array_equal(data["X_test"], expected["X_test"])


def test_load_dataset_auto_falls_back_to_builtin(tmp_path):
    data = load_dataset("auto", sizes=(20, 10, 10), cifar10_dir=tmp_path)
    assert data["source"] == "builtin"


def test_load_dataset_image_folder(tmp_path):
    make_image_tree(tmp_path, np.random.default_rng(0))
    data = load_dataset(str(tmp_path / "train"), val_per_class=0)
    _assert_dataset(data, "folder", ["Dog", "cat", "zebra"], ("train", "val"))
    assert len(data["X_train"]) == 6 and str(tmp_path) in data["description"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(TypeError, match="floating-point"):
        load_dataset("builtin", dtype=np.int32)
