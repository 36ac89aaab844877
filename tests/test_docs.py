"""Every ```python block in README.md and docs/*.md runs as pasted.

The blocks of one page run in order in one fresh namespace (a page's later
examples build on its earlier ones), as a ``__main__`` script whose working
directory is a temporary folder, so files they write land there. They run in
the test process itself: a page is plain Python on jaxflows' public API, and a
separate interpreter per page would spend more time importing jax than running
most pages. A failure names the page, the block and the line. Blocks written as
``` (no language) are shell commands, command-line output or signatures and
are not run. Snippets use only data a user has: jaxflows' toy sets,
scikit-learn's bundled datasets and generated arrays.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from run_as_main import run_as_main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


# Warnings a page's examples raise on purpose (its text tells the reader why); any other
# jaxflows warning fails the page (pyproject.toml's filterwarnings).
EXPECTED_WARNINGS = {"custom_bijector.md": r"saving 'custom\.ckpt' without a flow config"}


def python_blocks(path: Path):
    return FENCE.findall(path.read_text(encoding="utf-8"))


def test_pages_have_python_blocks():
    assert len(python_blocks(ROOT / "README.md")) >= 1
    assert len(python_blocks(ROOT / "docs" / "custom_bijector.md")) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_code_blocks_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(page)
    assert not any("shared/data" in b for b in blocks), f"{page.name}: examples must not need ../shared/data"
    expected = EXPECTED_WARNINGS.get(page.name)
    with pytest.warns(UserWarning, match=expected) if expected else contextlib.nullcontext():
        run_as_main([(f"{page.name} (python block {i + 1} of {len(blocks)})", block)
                     for i, block in enumerate(blocks)], tmp_path, monkeypatch)
