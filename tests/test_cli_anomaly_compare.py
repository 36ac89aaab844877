"""The command line's ``score --calibrate`` (conformal p-values, flags) and ``compare``."""

import json

import jax
import numpy as np
import pytest

import jaxflows
from jaxflows import checkpoint, cli

DIM = 3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two small untrained MAFs saved as checkpoints (no fit needed: any density will do),
    their exact per-row log-likelihood functions, and data files."""
    d = tmp_path_factory.mktemp("cli_ac")
    rng = np.random.default_rng(0)
    flow = jaxflows.maf(DIM, num_layers=1, hidden=(8,))
    pa = flow.init(jax.random.PRNGKey(0))
    pb = jax.tree_util.tree_map(lambda a: a + 0.3 * rng.normal(size=a.shape).astype(a.dtype),
                                flow.init(jax.random.PRNGKey(1)))
    checkpoint.save(d / "a.ckpt", flow, pa)
    checkpoint.save(d / "b.ckpt", flow, pb)
    val = rng.normal(size=(199, DIM))
    normal = rng.normal(size=(60, DIM))
    far = rng.normal(size=(10, DIM)) + 8.0
    data = np.concatenate([normal, far])
    np.save(d / "val.npy", val)
    np.save(d / "data.npy", data)
    lp = {k: (lambda x, p=p: np.asarray(flow.log_prob(p, np.asarray(x, np.float32)), np.float64))
          for k, p in (("a", pa), ("b", pb))}
    return d, lp, val, data


def test_score_calibrate_writes_p_values_and_flags(models, capsys):
    d, lp, val, data = models
    out = d / "scores.csv"
    code = cli.main(["score", str(d / "a.ckpt"), str(d / "data.npy"), "--calibrate",
                     str(d / "val.npy"), "--false-alarm-rate", "0.05", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "calibrated on 199 rows" in text and "flagged" in text
    with open(out) as f:
        assert f.readline().strip() == "log_likelihood,p_value,flag"
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    assert table.shape == (70, 3)
    ll, p, flags = table.T
    np.testing.assert_allclose(ll, lp["a"](data), rtol=1e-5, atol=1e-4)
    # the p-value is the rank of the row's score among the calibration scores
    cal = lp["a"](val)
    ref = (1 + (cal[None, :] <= ll[:, None]).sum(1)) / (len(cal) + 1)
    np.testing.assert_allclose(p, ref, atol=1e-6)
    np.testing.assert_array_equal(flags.astype(bool), p <= 0.05)
    assert flags[60:].all()                      # the far rows are flagged
    assert flags[:60].mean() < 0.2              # few normal rows are (5% expected)
    # .npy output: the same table
    assert cli.main(["score", str(d / "a.ckpt"), str(d / "data.npy"), "--calibrate",
                     str(d / "val.npy"), "--false-alarm-rate", "0.05", "--out", str(d / "s.npy")]) == 0
    np.testing.assert_allclose(np.load(d / "s.npy"), table, rtol=1e-6, atol=1e-6)


def test_score_calibrate_bad_input(models, capsys):
    d, lp, val, data = models
    np.save(d / "val2.npy", val[:, :2])
    code = cli.main(["score", str(d / "a.ckpt"), str(d / "data.npy"), "--calibrate",
                     str(d / "val2.npy"), "--out", str(d / "x.npy")])
    err = capsys.readouterr().err
    assert code == 1 and "calibration file" in err and "2 columns" in err
    assert not (d / "x.npy").exists()
    code = cli.main(["score", str(d / "a.ckpt"), str(d / "data.npy"), "--calibrate",
                     str(d / "val.npy"), "--false-alarm-rate", "1.5"])
    assert code == 2 and "between 0 and 1" in capsys.readouterr().err
    # too few calibration rows for the rate: valid p-values, nothing flagged, and a note
    np.save(d / "val3.npy", val[:10])
    assert cli.main(["score", str(d / "a.ckpt"), str(d / "data.npy"), "--calibrate",
                     str(d / "val3.npy"), "--false-alarm-rate", "0.05",
                     "--out", str(d / "y.npy")]) == 0
    assert "too few to flag anything" in capsys.readouterr().out
    assert not np.load(d / "y.npy")[:, 2].any()


def test_compare_matches_numpy_reference(models, capsys):
    d, lp, val, data = models
    out = d / "cmp.json"
    code = cli.main(["compare", str(d / "a.ckpt"), str(d / "b.ckpt"), str(d / "val.npy"),
                     "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    r = json.load(open(out))
    a, b = lp["a"](val), lp["b"](val)
    dd = a - b
    assert r["n"] == 199
    assert r["difference"] == pytest.approx(dd.mean(), rel=1e-5, abs=1e-5)
    assert r["difference_se"] == pytest.approx(dd.std(ddof=1) / np.sqrt(199), rel=1e-4)
    assert r["mean_a"] == pytest.approx(a.mean(), rel=1e-5)
    assert r["wins_a"] == int((dd > 0).sum()) and r["wins_b"] == int((dd < 0).sum())
    assert r["bits_per_dim_b"] == pytest.approx(-b.mean() / (DIM * np.log(2)), rel=1e-5)
    assert "paired SE over 199 rows" in text and "bits/dim" in text
    assert str(d / "a.ckpt") in text


def test_compare_bad_input(models, capsys):
    d, lp, val, data = models
    np.save(d / "two.npy", val[:, :2])
    code = cli.main(["compare", str(d / "a.ckpt"), str(d / "b.ckpt"), str(d / "two.npy")])
    assert code == 1 and "2 columns" in capsys.readouterr().err
    code = cli.main(["compare", str(d / "a.ckpt"), str(d / "b.ckpt"), str(d / "val.npy"),
                     "--json", str(d / "out.txt")])
    assert code == 1 and "--json must end in .json" in capsys.readouterr().err
    code = cli.main(["compare", str(d / "a.ckpt"), str(d / "missing.ckpt"), str(d / "val.npy")])
    assert code == 1 and "jaxflows: error:" in capsys.readouterr().err


def test_sample_score_compare_refuse_a_conditional_flow(tmp_path, capsys):
    """The command line cannot pass a context: each command says so and exits 1."""
    flow = jaxflows.maf(2, num_layers=1, hidden=(4,), context_dim=1)
    ckpt = str(tmp_path / "cond.ckpt")
    checkpoint.save(ckpt, flow, flow.init(jax.random.PRNGKey(0)))
    data = str(tmp_path / "x.npy")
    np.save(data, np.zeros((4, 2), np.float32))
    for argv, verb in ((["sample", ckpt, "-n", "3"], "sample it"), (["score", ckpt, data], "score it"),
                       (["compare", ckpt, ckpt, data], "compare it")):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert "conditional flow" in err and verb in err, err
