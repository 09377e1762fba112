"""Hostile and unlucky input: run directories that cannot be corrupted or lost, bounded
parsing of every file, one-line CLI errors. Each test fails on convlab 0.1."""

import io
import json
import os
import pickle
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from convlab import data_utils as du
from convlab import load_model, save_model
from convlab.classifiers import ConvNet, FullyConnectedNet
from convlab.run import RunConfig, RunDir, run
from convlab.serialization import atomic_savez
from convlab.train import main

TINY = ["--data", "builtin", "--builtin-size", "300", "100", "100", "--model", "fc",
        "--hidden-dims", "16", "--batch-size", "50", "--quiet"]


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- run directories


def test_second_process_on_the_same_out_is_refused_and_a_dead_lock_is_recovered(
        tmp_path, capsys):
    out = str(tmp_path / "run")
    slow = subprocess.Popen(
        [sys.executable, "-m", "convlab.train", *TINY, "--epochs", "200", "--out", out],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        # checkpoint.npz, not metrics.csv: the metrics row is written first at an epoch's
        # end, and a kill between the two left nothing to resume (seen once in CI).
        while not os.path.exists(os.path.join(out, "checkpoint.npz")):
            assert slow.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert main([*TINY, "--epochs", "1", "--out", out, "--force"]) == 2
        assert f"in use by another run (process {slow.pid})" in one_line_error(capsys)
        assert main([*TINY, "--epochs", "2", "--out", out, "--resume"]) == 2
        assert "in use" in one_line_error(capsys)
    finally:
        slow.kill()
        slow.wait()
    # The killed run's lock died with it: the run can be continued (with fewer epochs).
    assert main(["--out", out, "--resume", "--epochs", "2"]) == 0


def test_a_new_run_never_replaces_an_earlier_one_silently(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--epochs", "1", "--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in RunDir.NAMES}
    assert main([*TINY, "--epochs", "1", "--lr", "1e-2", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "already holds a run" in err and "--resume" in err and "--force" in err
    assert {name: (out / name).read_bytes() for name in RunDir.NAMES} == before
    assert main([*TINY, "--epochs", "1", "--lr", "1e-2", "--out", str(out), "--force"]) == 0
    assert RunDir(out).read_config().lr == 1e-2


def test_resume_applies_more_epochs_and_refuses_other_changes(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main([*TINY, "--epochs", "1", "--out", out]) == 0
    assert main(["--out", out, "--resume", "--lr", "0.5"]) == 2
    err = one_line_error(capsys)
    assert "cannot change lr: saved 0.001, asked 0.5" in err and "only: epochs" in err
    assert main(["--out", out, "--resume", "--epochs", "3"]) == 0
    with open(os.path.join(out, "metrics.csv")) as f:
        assert [line.split(",")[0] for line in f][1:] == ["1", "2", "3"]
    assert RunDir(out).read_config().epochs == 3


def test_killed_writers_leave_no_temporaries_and_files_respect_the_umask(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".tmp-killed123.npz").write_bytes(b"partial")
    previous = os.umask(0o027)
    try:
        run(RunConfig(data="builtin", builtin_size=[100, 50, 50], model="fc", hidden_dims=[8],
                      batch_size=50, epochs=1), out=out, verbose=False)
        mode = os.stat(out / "model.npz").st_mode & 0o777
    finally:
        os.umask(previous)
    assert not list(out.glob(".tmp-*"))
    assert mode == 0o640


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["--model", "[[relu]x1000]x1000"], "more than 1000 layers"),
    (["--model", "Reference2"], "unknown model 'Reference2' (did you mean 'reference'?)"),
    (["--model", "conv3-8,sotfmax"], "unknown layer 'sotfmax'"),
    (["--update-rule", "adamw"], "update_rule must be one of"),
    (["--data", "builtn"], "neither one of auto, builtin, cifar10"),
])
def test_cli_rejects_bad_options_in_one_line_before_loading_data(flags, message, tmp_path,
                                                               capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("data was loaded before the options were checked")

    monkeypatch.setattr("convlab.run.load_dataset", no_loading)
    assert main([*TINY, *flags, "--out", str(tmp_path / "run")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_cli_reports_unwritable_output_and_truncated_files_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main([*TINY, "--out", str(blocker / "run")]) == 2
    assert "file" in one_line_error(capsys)
    out = tmp_path / "run"
    assert main([*TINY, "--epochs", "1", "--out", str(out)]) == 0
    checkpoint = out / "checkpoint.npz"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert main(["--out", str(out), "--resume"]) == 2
    assert "checkpoint.npz" in one_line_error(capsys)
    (out / "config.json").write_text("{ truncated")
    assert main(["--out", str(out), "--resume"]) == 2
    assert "not valid JSON" in one_line_error(capsys)


# ----------------------------------------------------------------------------- files


def _npz_with_header(path, shape, payload):
    """An .npz whose one array declares ``shape`` (float64) over ``payload`` bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("W.npy", header.getvalue() + payload)
        archive.writestr("__meta__.npy", _npy_bytes(np.array(json.dumps({}))))


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npz_headers_must_match_their_bytes(tmp_path):
    path = tmp_path / "bomb.npz"
    _npz_with_header(path, (10**9,), b"\0" * 64)  # 8 GB declared, 64 bytes held
    with pytest.raises(ValueError, match=r"declares shape \(1000000000,\)"):
        load_model(path)


def test_model_files_with_hostile_architectures_fail_fast(tmp_path):
    model = ConvNet("conv3-4,relu,fc10", input_dim=(3, 8, 8), seed=0)
    save_model(model, tmp_path / "m.npz")
    arrays, meta = __import__("convlab.serialization", fromlist=["x"]).load_npz(
        tmp_path / "m.npz")
    # Refused by the bounds checked before a group is multiplied out, not after building.
    for architecture, refusal in (("[[relu]x1000]x1000", "expands to more than 1000 layers"),
                                  ("[" * 50 + "relu" + "]x2" * 50, "deeper than 8 levels")):
        meta["init_args"]["architecture"] = architecture
        atomic_savez(tmp_path / "bomb.npz", arrays, meta)
        with pytest.raises(ValueError, match=refusal):
            load_model(tmp_path / "bomb.npz")
    meta["init_args"] = ["not", "a", "dict"]
    atomic_savez(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(ValueError, match="init_args"):
        load_model(tmp_path / "bad.npz")
    meta["init_args"] = {"colour": 1}
    atomic_savez(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(ValueError, match="constructor arguments"):
        load_model(tmp_path / "bad.npz")


def test_saved_models_keep_loading(tmp_path):
    model = FullyConnectedNet([4], input_dim=6, num_classes=3, seed=0)
    save_model(model, tmp_path / "m.npz")
    np.testing.assert_array_equal(load_model(tmp_path / "m.npz").params["W1"],
                                  model.params["W1"])


# ----------------------------------------------------------------------------- datasets


class _Call:
    """Pickles as a call of ``fn(*args)``, the way a hostile file would spell it."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _write_batch(path, data, labels):
    path.write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))


def test_cifar_pickle_cannot_build_a_zero_stride_array(tmp_path):
    # Zero-stride views of one byte: 60,000 images (184 MB as uint8, 737 MB as the float32
    # convlab 0.1 then made of them) from a file of a few hundred bytes.
    one_byte = np.dtype("u1")
    data = _Call(np.ndarray, (60000, 3072), one_byte, b"\0", 0, (0, 0))
    labels = _Call(np.ndarray, (60000,), one_byte, b"\0", 0, (0,))
    path = tmp_path / "data_batch_1"
    _write_batch(path, data, labels)
    assert path.stat().st_size < 400
    with pytest.raises(ValueError, match="refusing to call numpy.ndarray"):
        du.load_CIFAR_batch(path)


def test_cifar_pickle_cannot_reconstruct_a_huge_placeholder(tmp_path):
    reconstruct = np.zeros(0).__reduce__()[0]  # numpy's own _reconstruct
    path = tmp_path / "data_batch_1"
    _write_batch(path, _Call(reconstruct, np.ndarray, (10**9,), b"b"), [])
    with pytest.raises(ValueError, match=r"refusing to reconstruct an array of shape"):
        du.load_CIFAR_batch(path)


def _png(width, height):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_decompression_bombs_are_refused_before_decoding(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "ok.png").write_bytes(_png(8, 8))
    bomb = _png(6000, 6000)  # 36 megapixels from a few kilobytes
    assert len(bomb) < 100_000
    (root / "b" / "bomb.png").write_bytes(bomb)
    with pytest.raises(ValueError, match=r"bomb.png.*6000x6000 pixels exceed the limit"):
        du.load_image_folder(root)


def _tar_gz(path, files, directories=()):
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name in directories:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_corrupt_gzip_archives_are_refused(tmp_path):
    path = tmp_path / "images.tar.gz"
    _tar_gz(path, {"train/a/1.png": _png(4, 4), "train/b/1.png": _png(4, 4)})
    assert len(du.load_image_folder(path)[0]) == 2
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the gzip CRC: every member still decodes
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        du.load_image_folder(path)


def test_oversized_archive_members_are_refused(tmp_path, monkeypatch):
    from convlab.data import image_folder

    path = tmp_path / "images.tar.gz"
    from PIL import Image

    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)).save(
        noise, format="PNG")
    _tar_gz(path, {"train/a/1.png": noise.getvalue(), "train/b/1.png": _png(4, 4)})
    monkeypatch.setattr(image_folder, "MAX_MEMBER_BYTES", 100)
    with pytest.raises(ValueError, match="bytes; images larger than 100 bytes"):
        du.load_image_folder(path)


def test_empty_class_folders_are_refused_not_skipped(tmp_path):
    root = tmp_path / "imgs"
    for cls in ("a", "b", "c"):
        (root / cls).mkdir(parents=True)
    (root / "a" / "1.png").write_bytes(_png(4, 4))
    (root / "c" / "1.png").write_bytes(_png(4, 4))
    with pytest.raises(ValueError, match=r"class folder\(s\) 'b'.*hold no images"):
        du.load_image_folder(root)
    archive = tmp_path / "imgs.tar.gz"
    _tar_gz(archive, {"train/a/1.png": _png(4, 4), "train/c/1.png": _png(4, 4)},
            directories=["train/b"])
    with pytest.raises(ValueError, match=r"'b'.*hold no images"):
        du.load_image_folder(archive)


def test_training_subsets_keep_every_class(tmp_path):
    root = tmp_path / "imgs"
    for cls in range(4):
        (root / f"c{cls}").mkdir(parents=True)
        for i in range(30):
            (root / f"c{cls}" / f"{i:02d}.png").write_bytes(_png(4, 4))
    data = du.load_dataset(str(root), val_per_class=5, num_train=40, seed=0)
    assert np.bincount(data["y_train"]).tolist() == [10, 10, 10, 10]
    y = np.repeat(np.arange(3), [50, 30, 20])
    assert np.bincount(y[du.stratified_subset(y, 10, seed=1)]).tolist() == [5, 3, 2]
    assert len(du.stratified_subset(y, 7)) == 7
    np.testing.assert_array_equal(du.stratified_subset(y, 1000), np.arange(100))


# ----------------------------------------------------------------------------- layers


def _every_layer(rng):
    """(name, forward thunk, backward) for every public layer with a backward pass."""
    from convlab import fast_layers as fl
    from convlab import layers as L

    x2 = rng.standard_normal((4, 5))
    x4 = rng.standard_normal((2, 3, 6, 6))
    w2, b2 = rng.standard_normal((5, 3)), rng.standard_normal(3)
    w4, b4 = rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)
    cp = {"stride": 1, "pad": 1}
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
    g5, g3 = np.ones(5), np.ones(3)
    return [
        ("affine", lambda: L.affine_forward(x2, w2, b2), L.affine_backward),
        ("relu", lambda: L.relu_forward(x2), L.relu_backward),
        ("leaky_relu", lambda: L.leaky_relu_forward(x2), L.leaky_relu_backward),
        ("elu", lambda: L.elu_forward(x2), L.elu_backward),
        ("batchnorm", lambda: L.batchnorm_forward(x2, g5, g5, {"mode": "train"}),
         L.batchnorm_backward),
        ("batchnorm_alt", lambda: L.batchnorm_forward(x2, g5, g5, {"mode": "train"}),
         L.batchnorm_backward_alt),
        ("layernorm", lambda: L.layernorm_forward(x2, g5, g5, {}), L.layernorm_backward),
        ("spatial_batchnorm", lambda: L.spatial_batchnorm_forward(x4, g3, g3, {"mode": "train"}),
         L.spatial_batchnorm_backward),
        ("spatial_groupnorm",
         lambda: L.spatial_groupnorm_forward(x4, np.ones((1, 3, 1, 1)), np.ones((1, 3, 1, 1)), 3,
                                             {}), L.spatial_groupnorm_backward),
        ("dropout", lambda: L.dropout_forward(x2, {"mode": "train", "p": 0.5, "seed": 0}),
         L.dropout_backward),
        ("conv_naive", lambda: L.conv_forward_naive(x4, w4, b4, cp), L.conv_backward_naive),
        ("max_pool_naive", lambda: L.max_pool_forward_naive(x4, pp), L.max_pool_backward_naive),
        ("avg_pool_naive", lambda: L.avg_pool_forward_naive(x4, pp), L.avg_pool_backward_naive),
        ("global_avg_pool", lambda: L.global_avg_pool_forward(x4), L.global_avg_pool_backward),
        ("conv_fast", lambda: fl.conv_forward_fast(x4, w4, b4, cp), fl.conv_backward_fast),
        ("max_pool_fast", lambda: fl.max_pool_forward_fast(x4, pp), fl.max_pool_backward_fast),
        ("avg_pool_fast", lambda: fl.avg_pool_forward_fast(x4, pp), fl.avg_pool_backward_fast),
        ("global_avg_pool_fast", lambda: fl.global_avg_pool_forward_fast(x4),
         fl.global_avg_pool_backward_fast),
    ]


def test_every_backward_checks_the_shape_of_dout(rng):
    for name, forward, backward in _every_layer(rng):
        out, cache = forward()
        backward(np.ones_like(out), cache)  # the right shape works
        for wrong in (np.ones(out.shape[:-1] + (out.shape[-1] + 1,)), np.ones(out.size)):
            with pytest.raises(ValueError, match="dout must have shape"):
                backward(wrong, cache)
                pytest.fail(f"{name} accepted dout of shape {wrong.shape}")


def test_train_mode_batchnorm_refuses_an_empty_batch(rng):
    from convlab import layers as L

    bn_param = {"mode": "train"}
    L.batchnorm_forward(rng.standard_normal((4, 3)), np.ones(3), np.zeros(3), bn_param)
    before = bn_param["running_mean"].copy()
    for forward, x in ((L.batchnorm_forward, np.zeros((0, 3))),
                       (L.spatial_batchnorm_forward, np.zeros((0, 3, 2, 2)))):
        with pytest.raises(ValueError, match="non-empty batch"):
            forward(x, np.ones(3), np.zeros(3), bn_param)
    np.testing.assert_array_equal(bn_param["running_mean"], before)
    assert np.all(np.isfinite(bn_param["running_var"]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_propagates_identically_through_fast_and_naive_pooling(dtype, rng):
    from convlab import fast_layers as fl
    from convlab import layers as L

    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    x[0, 0, 0, 1] = x[1, 2, 5, 5] = x[0, 1, 2, 2] = x[0, 1, 3, 3] = np.nan
    for pp in ({"pool_height": 2, "pool_width": 2, "stride": 2},
               {"pool_height": 3, "pool_width": 3, "stride": 1}):
        naive, naive_cache = L.max_pool_forward_naive(x, pp)
        fast, fast_cache = fl.max_pool_forward_fast(x, pp)
        np.testing.assert_array_equal(fast, naive)  # NaN where the naive layer has NaN
        assert np.isnan(fast).any()
        dout = rng.standard_normal(naive.shape).astype(dtype)
        np.testing.assert_array_equal(fl.max_pool_backward_fast(dout, fast_cache),
                                      L.max_pool_backward_naive(dout, naive_cache))


def test_solver_checks_every_label_array(rng):
    from convlab.solver import Solver

    model = FullyConnectedNet([4], input_dim=6, num_classes=3, seed=0)
    X = rng.standard_normal((10, 6))
    good = rng.integers(3, size=10)
    for y_train, y_val, message in ((good, np.full(10, 3), r"y_val must lie in \[0, 3\)"),
                                    (good.astype(float), good, "y_train must be integers"),
                                    (good, good[:, None], r"y_val must have shape \(10,\)")):
        data = {"X_train": X, "y_train": y_train, "X_val": X, "y_val": y_val}
        with pytest.raises((ValueError, TypeError), match=message):
            Solver(model, data)
