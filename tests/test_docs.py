"""Every ```python block in README.md and docs/*.md runs as pasted.

The blocks of one page run in order in one namespace (a page's later examples
build on its earlier ones), in a fresh Python process whose working directory
is a temporary folder, so files they write land there. Blocks written as
``` (no language) are shell commands, command-line output or signatures and
are not run. Snippets use only data a user has: jaxflows' toy sets,
scikit-learn's bundled datasets and generated arrays.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path):
    return FENCE.findall(path.read_text(encoding="utf-8"))


def test_pages_have_python_blocks():
    assert len(python_blocks(ROOT / "README.md")) >= 1
    assert len(python_blocks(ROOT / "docs" / "custom_bijector.md")) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_code_blocks_run(page, tmp_path):
    blocks = python_blocks(page)
    script = "\n".join(
        f"print('--- block {i + 1} of {len(blocks)}', flush=True)\n{b}" for i, b in enumerate(blocks))
    assert "shared/data" not in script, f"{page.name}: examples must not need ../shared/data"
    (tmp_path / "snippets.py").write_text(script, encoding="utf-8")
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "snippets.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{page.name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
