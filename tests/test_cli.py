"""The command line: fit -> sample -> score -> info on a small CSV, and one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxflows import cli
from jaxflows.data import load_array


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small fit through the CLI on a CSV with a header, a label column and ';'."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)) * [1.0, 10.0, 0.1] + [0.0, 100.0, -5.0]
    x[:, 2] += 0.05 * x[:, 0]
    label = rng.integers(0, 3, size=300)
    csv = d / "data.csv"
    with open(csv, "w") as f:
        f.write("a;b;c;label\n")
        for row, lab in zip(x, label):
            f.write(";".join(f"{v:.6f}" for v in row) + f";{lab}\n")
    out = d / "run"
    code = cli.main(["fit", str(csv), "--drop", "label", "--flow", "maf", "--layers", "2",
                     "--hidden", "16", "--epochs", "8", "--batch-size", "64", "--lr", "3e-3",
                     "--seed", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    return d, csv, out, x


def test_fit_writes_checkpoint_metrics_and_report(run, capsys):
    d, csv, out, x = run
    assert {"model.ckpt", "metrics.json", "report.png"} <= set(os.listdir(out))
    m = json.load(open(out / "metrics.json"))
    for split in ("train", "validation", "test"):
        ll = m[split]["log_likelihood_nats"]
        assert np.isfinite(ll)
        assert m[split]["bits_per_dim"] == pytest.approx(-ll / (3 * np.log(2)))
    assert m["dim"] == 3 and m["rows"] == 300 and m["epochs_run"] >= 1
    assert len(m["history"]["train_loss"]) == m["epochs_run"]
    assert m["train_seconds"] > 0 and m["sample_seconds_per_1000"] > 0
    # in the data's units: the scales (1, 10, 0.1) shift log p by -log(1*10*0.1) = 0
    # so a decent fit is near the Gaussian's entropy, not off by the standardisation
    gauss = -0.5 * 3 * (1 + np.log(2 * np.pi)) - np.log(1.0 * 10.0 * 0.1)
    assert abs(m["test"]["log_likelihood_nats"] - gauss) < 1.5


def test_sample_score_info_round_trip(run, capsys):
    d, csv, out, x = run
    ck = str(out / "model.ckpt")
    assert cli.main(["sample", ck, "-n", "500", "--seed", "3", "--out", str(d / "s.npy")]) == 0
    s = np.load(d / "s.npy")
    assert s.shape == (500, 3)
    # samples are in the user's units (means near 0, 100, -5)
    assert np.all(np.abs(s.mean(0) - [0.0, 100.0, -5.0]) < [0.3, 3.0, 0.1]), s.mean(0)
    assert np.all(np.abs(s.std(0) / [1.0, 10.0, 0.1] - 1) < 0.3), s.std(0)
    assert cli.main(["score", ck, str(csv), "--drop", "label", "--out", str(d / "sc.npy")]) == 0
    scores = np.load(d / "sc.npy")
    assert scores.shape == (300,) and np.isfinite(scores).all()
    # the scores equal the density of the flow inside the checkpoint's standardisation, with
    # the standardisation's log-Jacobian (the statistics live in the flow's config)
    from jaxflows import split_standardization
    from jaxflows.checkpoint import load
    from jaxflows.data import standardize, standardizer_log_det
    c = load(ck)
    assert c.standardizer is None and "standardize" in c.config
    inner, std = split_standardization(c.flow)
    data = load_array(csv, drop="label")
    ref = np.asarray(inner.log_prob(c.params, np.asarray(standardize(std, data), np.float32)))
    np.testing.assert_allclose(scores, ref + standardizer_log_det(std), rtol=1e-4, atol=1e-3)
    # an outlier scores far lower: the anomaly-detection use
    odd = d / "odd.npy"
    np.save(odd, np.array([[0.0, 100.0, -5.0], [8.0, 300.0, 5.0]]))
    assert cli.main(["score", ck, str(odd), "--out", str(d / "odd_scores.csv")]) == 0
    with open(d / "odd_scores.csv") as fh:
        assert fh.readline().strip() == "log_likelihood"  # the header names the column
    o = np.loadtxt(d / "odd_scores.csv", delimiter=",", skiprows=1)
    assert o[0] > o[1] + 20
    capsys.readouterr()
    assert cli.main(["info", ck]) == 0
    text = capsys.readouterr().out
    assert "flow: maf" in text and "num_layers=2" in text and "test log-likelihood" in text


@pytest.mark.parametrize("argv, message", [
    (["fit", "missing.csv"], r"missing\.csv' does not exist"),
    (["fit", "{text}"], r"non-numeric column 'name'"),
    (["fit", "{csv}", "--drop", "label", "--flow", "nope"], r"invalid choice: 'nope'"),
    (["fit", "{csv}", "--drop", "label", "--epochs", "-3"], r"expected a positive int"),
    (["fit", "{nan}"], r"NaN"),
    (["score", "{ck}", "{csv}"], r"has 4 columns but the checkpoint's flow models 3"),
    (["score", "{ck}", "{text}", "--drop", "x"], r"non-numeric column 'name'"),
    (["score", "{ck}", "{two}"], r"has 2 columns but the checkpoint's flow models 3"),
    (["sample", "{csv}", "-n", "3"], r"not a jaxflows checkpoint"),
    (["info", "{trunc}"], r"truncated"),
    (["sample", "{ck}", "--out", "{d}/x.txt"], r"must end in \.npy or \.csv"),
    (["frobnicate"], r"invalid choice"),
])
def test_errors_are_one_line_without_traceback(run, capsys, monkeypatch, argv, message):
    d, csv, out, x = run
    monkeypatch.chdir(d)  # should a case not fail, its default --out lands in the temp dir
    nan = d / "nan.csv"
    nan.write_text("1,2\n3,nan\n")
    text = d / "text.csv"
    text.write_text("x,name,y\n1,ann,2\n3,bob,4\n")
    two = d / "two.npy"
    np.save(two, np.zeros((4, 2)))
    trunc = d / "trunc.ckpt"
    trunc.write_bytes((out / "model.ckpt").read_bytes()[:100])
    fmt = dict(text=text, csv=csv, ck=out / "model.ckpt", nan=nan, two=two, trunc=trunc, d=d)
    code = cli.main([a.format(**fmt) for a in argv])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxflows: error: ")
    assert "Traceback" not in err
    import re
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.slow
def test_python_dash_m_entry_point(tmp_path):
    """The real process: exit status and stderr, no traceback."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-m", "jaxflows", "info", str(tmp_path / "none.ckpt")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("jaxflows: error: checkpoint")
    r = subprocess.run([sys.executable, "-m", "jaxflows", "--help"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0 and "fit" in r.stdout and "score" in r.stdout
