"""The tutorial notebooks: committed without outputs, and they run end to end in fast mode.

The execution tests start a ``python3`` kernel per notebook with ``CONVLAB_FAST=1`` (tiny
subsets, one or two epochs), ``MPLBACKEND=Agg`` and ``CONVLAB_NOTEBOOK_FIGDIR`` pointing at
pytest's ``tmp_path``, so the figures each notebook saves can be checked (and opened: pytest
keeps the last few ``tmp_path`` directories under its basetemp). Thread pools are limited to
one thread: the machines running the tests are small and shared, and oversubscribed OpenMP
threads slow the convolution kernels down badly.
"""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"

EXPECTED_FIGURES = {
    "Quickstart": ["Quickstart-samples.png", "Quickstart-training.png",
                   "Quickstart-predictions.png"],
    "FullyConnectedNets": ["FullyConnectedNets-optimizers.png"],
    "BatchNormalization": ["BatchNormalization-training.png",
                           "BatchNormalization-weight-scale.png"],
    "Dropout": ["Dropout-comparison.png"],
    "ConvolutionalNetworks": ["ConvolutionalNetworks-training.png",
                              "ConvolutionalNetworks-filters.png",
                              "ConvolutionalNetworks-confusion.png",
                              "ConvolutionalNetworks-predictions.png"],
    "knn": ["knn-samples.png", "knn-cross-validation.png"],
    "svm": ["svm-loss.png", "svm-weights.png"],
    "softmax": ["softmax-training.png"],
    "two_layer_net": ["two_layer_net-training.png", "two_layer_net-weights.png"],
    "features": ["features-mistakes.png", "features-training.png"],
    "RNN_Captioning": ["RNN_Captioning-samples.png", "RNN_Captioning-training.png",
                       "RNN_Captioning-generated.png"],
}

CELL_TIMEOUT = 300
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_every_notebook_is_listed():
    found = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert found == sorted(EXPECTED_FIGURES)


@pytest.mark.parametrize("name", sorted(EXPECTED_FIGURES))
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells, f"{name} has no code cells"
    for i, cell in enumerate(code_cells):
        assert cell.get("outputs", []) == [], f"{name}: code cell {i} has outputs"
        assert cell.get("execution_count") is None, f"{name}: code cell {i} has a count"
    assert any(cell.cell_type == "markdown" for cell in nb.cells)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_FIGURES))
def test_notebook_executes(name, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    figdir = tmp_path / "figures"
    # The kernel inherits this process's environment when it starts.
    monkeypatch.setenv("CONVLAB_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("CONVLAB_NOTEBOOK_FIGDIR", str(figdir))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")

    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, errors
    images = sum(
        "image/png" in output.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert images >= 1, f"{name} displayed no figure"
    if name == "Quickstart":
        # LiveCurves redraws one figure in place (a display update per epoch, two epochs in
        # fast mode): one image output, where a display per epoch would leave two.
        (cell,) = [cell for cell in nb.cells if "callbacks=[LiveCurves()]" in cell.source]
        live = [out for out in cell.outputs if "image/png" in out.get("data", {})]
        assert len(live) == 1, f"{len(live)} figures in the LiveCurves cell"
    for filename in EXPECTED_FIGURES[name]:
        path = figdir / filename
        assert path.is_file(), f"{name} did not write {filename} to {figdir}"
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert path.stat().st_size > 1000
    assert os.path.isdir(figdir)
