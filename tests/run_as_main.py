"""How test_docs and test_notebooks run a page's examples or a notebook's cells."""

from __future__ import annotations

import sys
import warnings


def run_as_main(sources, tmp_path, monkeypatch) -> None:
    """Run ``(name, code)`` pairs in order in one fresh ``__main__`` namespace, as a user
    would paste them into a script: the working directory is ``tmp_path`` (files they
    write land there) and matplotlib draws with Agg. A failure's traceback shows
    ``name`` and the line. The namespace is emptied and the figures closed afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__main__"}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "FigureCanvasAgg is non-interactive", UserWarning)
            for name, code in sources:
                exec(compile(code, name, "exec"), namespace)
    finally:
        namespace.clear()
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
