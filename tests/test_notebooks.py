"""The tutorial notebooks: sources, committed outputs, and a run of each at toy sizes.

Each notebook's source is a jupytext percent-format file ``notebooks/NAME.py``;
``make notebooks`` (``tools/run_notebooks.py``) executes it and writes
``notebooks/NAME.ipynb`` with its outputs. The tests check that every committed
``.ipynb`` holds exactly its source's cells, was executed (outputs, at least one
plot, no error) and stays small, and they execute every source again with
``JAXFLOWS_NB_SMALL=1`` (toy data sizes and budgets). The notebooks contain
``assert`` / ``np.testing`` checks of what they show (same log-likelihood, exact
reconstruction, ...), so a notebook fails here if the API it uses changes or its
numbers go wrong. The cells run in order in one fresh ``__main__`` namespace of
the test process, with matplotlib's Agg backend and a temporary working
directory, so nothing is written into the repository: a notebook is plain Python
on jaxflows' public API, and a Jupyter kernel per notebook would spend more time
starting and importing jax than running most of them (``make notebooks`` runs
each in a kernel for the committed outputs). A failure names the notebook and
its cell.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from run_as_main import run_as_main

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "tools" / "run_notebooks.py")
run_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_notebooks)

SOURCES = run_notebooks.sources()
MAX_BYTES = 1_200_000


def _cells(nb):
    return [(c.cell_type, c.source) for c in nb.cells]


def test_every_notebook_has_a_source():
    assert len(SOURCES) >= 6, [p.name for p in SOURCES]
    orphans = [p.name for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
               if not p.with_suffix(".py").exists()]
    assert not orphans, f"notebooks without a .py source: {orphans}"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_has_outputs_of_its_source(src):
    path = src.with_suffix(".ipynb")
    hint = "run `make notebooks` and commit notebooks/"
    assert path.exists(), f"{path.name} is missing: {hint}"
    nb = nbformat.read(path, as_version=4)
    assert _cells(nb) == _cells(run_notebooks.read_source(src)), (
        f"{path.name} differs from {src.name}: {hint}")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), f"{path.name}: {hint}"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"], path.name
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} has no plot"
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"


@pytest.mark.slow
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebook_executes(src, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXFLOWS_NB_SMALL", "1")
    cells = [c for c in run_notebooks.read_source(src).cells if c.cell_type == "code"]
    run_as_main([(f"{src.stem} (code cell {i + 1} of {len(cells)})", c.source)
                 for i, c in enumerate(cells)], tmp_path, monkeypatch)
