"""``pip install jaxflows`` stays light: matplotlib and scikit-learn come with the ``cli`` extra.

The library imports without them; the command line's report and the bundled
digits dataset say which extra to install when they are missing (simulated here
by putting ``None`` into ``sys.modules``, which makes ``import`` fail as for a
package that is not installed).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from jaxflows import cli, data, report

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("matplotlib", "sklearn")
HINT = "pip install 'jaxflows[cli]'"


def _requirement_names(reqs):
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_core_dependencies_leave_plotting_and_sklearn_to_the_cli_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    assert not core & {"matplotlib", "scikit-learn"}, core
    extras = project["optional-dependencies"]
    assert _requirement_names(extras["cli"]) == {"matplotlib", "scikit-learn"}
    for name in ("test", "notebooks", "peers"):  # each needs the report or the digits
        assert "jaxflows[cli]" in extras[name], name


def test_the_package_imports_without_matplotlib_and_sklearn():
    script = (
        "import sys, pkgutil, importlib\n"
        "sys.modules.update(matplotlib=None, sklearn=None)\n"
        "import jaxflows\n"
        "for m in pkgutil.walk_packages(jaxflows.__path__, 'jaxflows.'):\n"
        "    if not m.name.endswith('__main__'):  # that one runs the command line\n"
        "        importlib.import_module(m.name)\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


@pytest.fixture
def without(monkeypatch):
    def block(*names):
        for name in names:
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, key)
            monkeypatch.setitem(sys.modules, name, None)
    return block


def test_report_names_the_extra(without):
    without("matplotlib")
    x = np.zeros((4, 2))
    with pytest.raises(ImportError, match=re.escape(HINT)) as info:
        report.write_report("unused.png", {"train_loss": [1.0], "val_loss": [1.0]}, x, x)
    assert "matplotlib" in str(info.value)


def test_digits_names_the_extra(without):
    without("sklearn")
    with pytest.raises(ImportError, match=re.escape(HINT)) as info:
        data.digits()
    assert "scikit-learn" in str(info.value)


def test_cli_fit_says_so_before_training(without, tmp_path, capsys):
    without("matplotlib", "sklearn")
    csv = tmp_path / "x.csv"
    np.savetxt(csv, np.random.default_rng(0).normal(size=(40, 2)), delimiter=",")
    out = tmp_path / "run"
    assert cli.main(["fit", str(csv), "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and HINT in err and "--no-plot" in err and "matplotlib" in err, err
    assert not out.exists() or not any(out.iterdir())  # refused before any work
    assert cli.main(["fit", "--no-plot", "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert HINT in err and "scikit-learn" in err and "Traceback" not in err, err
    # the rest of the command line needs neither
    assert cli.main(["fit", str(csv), "--no-plot", "--epochs", "1", "--layers", "1", "--hidden", "4",
                     "--no-progress", "--out", str(out)]) == 0, capsys.readouterr().err
    assert (out / "model.ckpt").exists() and not (out / "report.png").exists()


def test_readme_extras_table_lists_every_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("**Extras**"):]
    table = table[:table.index("\n\n", table.index("|"))]
    rows = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert rows == set(extras), (rows, set(extras))

