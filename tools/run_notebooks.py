"""Execute the tutorial notebooks and write each one's ``.ipynb`` with its outputs.

Every notebook's source is a jupytext percent-format file ``notebooks/NAME.py``
(plain Python, the form to edit and review). This script turns each source into
``notebooks/NAME.ipynb``, runs it top to bottom in a fresh Jupyter kernel, and
writes the notebook with its outputs (plots, tables) so that it reads on the
repository page::

    python tools/run_notebooks.py                       # every notebooks/*.py (make notebooks)
    python tools/run_notebooks.py notebooks/01_quickstart.py
    python tools/run_notebooks.py --small               # toy sizes, outputs not kept

``--small`` sets ``JAXFLOWS_NB_SMALL=1``, which every notebook reads to shrink
its data and training budget (the test suite runs them that way). The run
stops at the first cell that raises and names the notebook and the cell.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"


def sources(paths=None):
    """The notebook sources: the given paths, or every ``notebooks/*.py``."""
    if paths:
        return [Path(p).resolve() for p in paths]
    return sorted(NOTEBOOK_DIR.glob("*.py"))


def read_source(path):
    """The notebook (no outputs) that the percent-format source ``path`` holds."""
    import jupytext
    nb = jupytext.read(path, fmt="py:percent")
    nb.metadata.setdefault("kernelspec", {"display_name": "Python 3 (ipykernel)",
                                          "language": "python", "name": "python3"})
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    nb.metadata["jupytext"].pop("text_representation", None)
    return nb


def kernel_name() -> str:
    """``python3``, installed into a temporary prefix when no such kernel spec exists."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        from ipykernel.kernelspec import install
        prefix = tempfile.mkdtemp(prefix="jaxflows-kernel-")
        install(prefix=prefix, kernel_name="python3")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            [os.path.join(prefix, "share", "jupyter"), os.environ.get("JUPYTER_PATH", "")])
    return "python3"


def execute(nb, workdir, *, small: bool, timeout: int = 1800):
    """Run ``nb`` in place in a fresh kernel whose working directory is ``workdir``."""
    import nbclient
    os.environ["JAXFLOWS_NB_SMALL"] = "1" if small else "0"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    # the package in this checkout is importable from the kernel even without an install
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=kernel_name(),
                                     record_timing=False,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help="notebook sources (default: every notebooks/*.py)")
    p.add_argument("--small", action="store_true",
                   help="toy sizes (JAXFLOWS_NB_SMALL=1); checks the notebooks run, writes nothing")
    args = p.parse_args(argv)
    import nbformat
    from nbclient.exceptions import CellExecutionError
    for src in sources(args.paths):
        nb = read_source(src)
        with tempfile.TemporaryDirectory() as workdir:
            print(f"running {src.relative_to(ROOT) if src.is_relative_to(ROOT) else src}"
                  + (" (small)" if args.small else ""), flush=True)
            try:
                execute(nb, workdir, small=args.small)
            except CellExecutionError as err:
                print(f"{src.name}: a cell failed:\n{err}", file=sys.stderr)
                return 1
        if not args.small:
            dest = src.with_suffix(".ipynb")
            tmp = dest.with_suffix(".ipynb.tmp")
            nbformat.write(nb, tmp)
            os.replace(tmp, dest)
            print(f"  wrote {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} "
                  f"({dest.stat().st_size / 1e3:.0f} kB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
