"""Raw-scale data: jaxflows.standardize (a fixed affine map inside the flow), jaxflows.score
(float64 standardisation, -inf for infinite or overflowing rows, NaN refused), fit's checks and
the command line's sample/score reporting."""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxflows as jf
from jaxflows import checkpoint, cli
from jaxflows.data import standardize as std_apply
from jaxflows.data import standardizer_log_det
from jaxflows.testing import perturb_params

SHIFT = np.array([1e8, -3.0, 250.0])
SCALE = np.array([1.0, 0.5, 40.0])


def _raw(n, seed=0):
    """Correlated 3-D data on a raw scale: a column at 1e8 + N(0, 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    z[:, 2] += 0.8 * np.tanh(2 * z[:, 0])
    return z * SCALE + SHIFT


FACTORIES = {
    "maf": lambda c: jf.maf(3, num_layers=2, hidden=(8,), context_dim=c),
    "iaf": lambda c: jf.iaf(3, num_layers=2, hidden=(8,), context_dim=c),
    "realnvp": lambda c: jf.realnvp(3, num_layers=2, hidden=(8,), context_dim=c),
    "nsf": lambda c: jf.nsf(3, num_layers=2, hidden=(8,), num_bins=4, context_dim=c),
}


M3 = np.array([5.0, -3.0, 250.0])


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_standardized_flow_is_the_change_of_variables(name):
    """log p(x) = log q((x - m) / s) - sum log s for every factory, with a context; the
    config rebuilds the same flow; params are exactly the wrapped flow's."""
    inner = FACTORIES[name](2)
    flow = jf.standardize(inner, shift=M3, scale=SCALE)
    params = perturb_params(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.3)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        inner.init(jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)) * SCALE + M3
    c = rng.normal(size=(6, 2))
    # compiled: the program flow.log_prob runs for host data (jaxflows.standardizing.jitted_log_prob)
    want = np.asarray(jax.jit(inner.log_prob)(params, ((x - M3) / SCALE).astype(np.float32), c)) \
        - np.log(SCALE).sum()
    np.testing.assert_allclose(np.asarray(flow.log_prob(params, x, c)), want, rtol=1e-5, atol=1e-4)
    again = jf.from_config(json.loads(json.dumps(flow.config)))
    np.testing.assert_allclose(np.asarray(again.log_prob(params, x, c)), want, rtol=1e-5, atol=1e-4)
    assert flow.config["standardize"] == {"shift": list(M3), "scale": list(SCALE)}
    assert jf.split_standardization(again)[1] is not None


def test_standardized_flow_samples_latents_and_bijector():
    """Samples, latents and the bijector (what to_distrax sees) compose the same way; under
    jit on a device array the map runs in the array's dtype."""
    inner = FACTORIES["maf"](2)
    flow = jf.standardize(inner, shift=M3, scale=SCALE)
    params = perturb_params(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)) * SCALE + M3
    c = jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)
    want = np.asarray(flow.log_prob(params, x, c))
    got = jax.jit(flow.log_prob)(params, jnp.asarray(x, jnp.float32), c)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-3)
    key = jax.random.PRNGKey(2)
    lat = np.asarray(flow.to_latent(params, x, c))  # host data: standardised in float64

    @jax.jit
    def run(params):  # the device-side calls compiled as one program
        zb, ld = flow.bijector.inverse(params["bijector"], jnp.asarray(x[0], jnp.float32), c[0])
        return dict(flow=flow.sample_and_log_prob(params, key, (), c),
                    inner=inner.sample_and_log_prob(params, key, (), c),
                    x_back=flow.from_latent(params, lat, c), zb=zb, ld=ld,
                    fwd=flow.bijector.forward(params["bijector"], zb, c[0]))

    out = run(params)
    (xs, lp), (zs, lpz) = out["flow"], out["inner"]
    np.testing.assert_allclose(np.asarray(xs), np.asarray(zs) * SCALE + M3, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(lp), np.asarray(lpz) - np.log(SCALE).sum(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out["x_back"]), x, rtol=1e-5, atol=1e-3 * SCALE.max())
    zb, ld = out["zb"], out["ld"]
    base = jax.scipy.stats.norm.logpdf(zb).sum()
    np.testing.assert_allclose(float(base + ld), want[0], rtol=1e-4, atol=1e-3)
    xb, ldf = out["fwd"]
    np.testing.assert_allclose(np.asarray(xb), x[0], rtol=1e-5, atol=1e-3 * SCALE.max())
    np.testing.assert_allclose(float(ldf), -float(ld), rtol=1e-4, atol=1e-4)


def test_checkpoint_round_trip_keeps_statistics_exactly(tmp_path):
    flow = jf.standardize(jf.maf(3, num_layers=1, hidden=(8,)), _raw(200))
    params = perturb_params(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    path = checkpoint.save(tmp_path / "m.ckpt", flow, params)
    ck = checkpoint.load(path)
    s0, s1 = jf.split_standardization(flow)[1], jf.split_standardization(ck.flow)[1]
    np.testing.assert_array_equal(s0.mean, s1.mean)  # float64, bit for bit through JSON
    np.testing.assert_array_equal(s0.scale, s1.scale)
    x = _raw(50, seed=3)
    np.testing.assert_array_equal(jf.score(ck.flow, ck.params, x), jf.score(flow, params, x))


def test_score_of_large_offsets_matches_a_float64_reference():
    """Columns at 1e8 + noise: standardising in float64 before the float32 flow keeps the
    scores within 1e-3 of a float64 evaluation; casting first (the old path) does not."""
    x = _raw(400, seed=1)
    flow = jf.standardize(jf.maf(3, num_layers=1, hidden=(16,)), x)
    params = perturb_params(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(5), 0.3)
    ours = jf.score(flow, params, x)
    assert ours.dtype == np.float64
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        ref = jf.score(flow, p64, x)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3)
    # the failure mode this guards against: cast to float32, then standardise
    inner, std = jf.split_standardization(flow)
    cast_first = np.asarray(jax.jit(inner.log_prob)(params, std_apply(std, x.astype(np.float32)))) \
        + standardizer_log_det(std)
    assert np.max(np.abs(cast_first - ref)) > 0.5
    # identity flow (init params): the closed form, a product of Gaussians in data units
    p0 = flow.init(jax.random.PRNGKey(0))
    z = (x - std.mean) / std.scale
    closed = (-0.5 * z ** 2 - 0.5 * np.log(2 * np.pi)).sum(1) - np.log(std.scale).sum()
    np.testing.assert_allclose(jf.score(flow, p0, x), closed, rtol=0, atol=1e-4)


def test_score_edge_cases_never_nan():
    x = _raw(200)
    flow = jf.standardize(jf.maf(3, num_layers=2, hidden=(8,)), x)
    params = perturb_params(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.5)
    rows = np.array([
        x[0],
        [1e39, -3.0, 250.0],          # finite in float64, beyond float32 once standardised
        [np.inf, -3.0, 250.0],
        [1e8, -np.inf, 250.0],
        [1e8, -3.0, 250.0 + 3e38 * 40],  # within float32 range: overflows inside the flow
        x[1],
    ])
    s = jf.score(flow, params, rows)
    assert not np.isnan(s).any()
    assert np.isfinite(s[[0, 5]]).all()
    assert np.all(s[1:5] == -np.inf)
    assert list(np.argsort(s, kind="stable")[:4]) == [1, 2, 3, 4]  # -inf rows rank first
    # the library log_prob agrees on the infinite / overflowing rows
    lp = np.asarray(flow.log_prob(params, rows[:4]))
    assert np.all(lp[1:] == -np.inf) and np.isfinite(lp[0])
    with pytest.raises(ValueError, match=r"NaN in 2 rows \(first: row 1, 0-based\)"):
        jf.score(flow, params, np.array([x[0], [np.nan, 0, 0], x[1], [0, np.nan, 0]]))
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        jf.score(flow, params, x[:, :2])
    bad = jax.tree_util.tree_map(lambda a: a * np.nan, params)
    with pytest.raises(ValueError, match="params hold NaN"):
        jf.score(flow, bad, x[:3])


def test_zero_variance_column_is_refused_by_name():
    x = _raw(100)
    x[:, 1] = 2.5
    with pytest.raises(ValueError, match=r"zero variance in column 1 .*2\.5 in every row.*drop"):
        jf.standardize(jf.maf(3, num_layers=1, hidden=(8,)), x)
    with pytest.raises(ValueError, match=r"zero variance in column 1"):
        jf.data.fit_standardizer(x)
    flow = jf.maf(3, num_layers=1, hidden=(8,))
    with pytest.raises(ValueError, match=r"zero variance in column 1"):
        jf.fit(flow, flow.init(jax.random.PRNGKey(0)), x, key=jax.random.PRNGKey(1),
               num_epochs=1, progress=False)
    with pytest.raises(ValueError, match="scale must be positive in every column"):
        jf.standardize(flow, shift=[0.0, 0.0, 0.0], scale=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="already standardised"):
        jf.standardize(jf.standardize(flow, shift=[0.0] * 3, scale=[1.0] * 3), x)


def _fit(flow, x, val, epochs, seed=0):
    params = flow.init(jax.random.PRNGKey(seed))
    return jf.fit(flow, params, x, key=jax.random.PRNGKey(seed + 1), val_data=val,
                  num_epochs=epochs, batch_size=64, optimizer=optax.adam(3e-3), patience=None,
                  progress=False)


@pytest.mark.parametrize("name", ["maf", "nsf"])
def test_raw_scale_fit_equals_standardised_fit(name):
    """fit(standardize(flow, raw), raw) reaches the standardised fit's quality in data units;
    the plain flow on raw data gets a warning that says what to do."""
    x, val, test = _raw(512, seed=0), _raw(128, seed=1), _raw(256, seed=2)
    make = FACTORIES[name]
    flow = jf.standardize(make(None), x)
    inner, std = jf.split_standardization(flow)
    with warnings.catch_warnings():
        warnings.simplefilter("error", jf.RawScaleWarning)  # standardised: no warning
        p_raw, h_raw = _fit(flow, x, val, 8)
        p_std, h_std = _fit(inner, std_apply(std, x).astype(np.float32),
                            std_apply(std, val).astype(np.float32), 8)
    offset = -float(standardizer_log_det(std))
    np.testing.assert_allclose(h_raw["val_loss"], np.array(h_std["val_loss"]) + offset,
                               rtol=0, atol=0.05)
    ll_raw = jf.score(flow, p_raw, test).mean()
    ll_std = jf.score(inner, p_std, std_apply(std, test)).mean() - offset
    assert abs(ll_raw - ll_std) < 0.05, (ll_raw, ll_std)
    assert ll_raw > -np.log(SCALE).sum() - 4.6  # it learned: near the data's entropy (about -3.8)
    # the same flow without the standardisation, on raw data: a warning that says what to do
    plain = make(None)
    with warnings.catch_warnings(record=True) as caught:  # num_epochs=0: the checks alone
        warnings.simplefilter("always")
        jf.fit(plain, plain.init(jax.random.PRNGKey(0)), x, key=jax.random.PRNGKey(1),
               num_epochs=0, progress=False)
    text = [str(w.message) for w in caught if w.category is jf.RawScaleWarning]
    assert any("unstandardised" in t and "jaxflows.standardize(flow, data)" in t for t in text)


def test_spline_flow_warns_outside_its_bound():
    rng = np.random.default_rng(0)
    x = rng.standard_t(df=1.5, size=(400, 2))  # heavy tails: many standardised values beyond 3
    flow = jf.standardize(jf.nsf(2, num_layers=1, hidden=(8,), num_bins=4), x)
    with pytest.warns(jf.RawScaleWarning, match=r"outside its spline interval \[-3, 3\].*bound="):
        jf.fit(flow, flow.init(jax.random.PRNGKey(0)), x, key=jax.random.PRNGKey(1),
               num_epochs=0, progress=False)


# ----------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("std_cli")
    x = _raw(300)
    flow = jf.standardize(jf.maf(3, num_layers=2, hidden=(8,)), x)
    params = perturb_params(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.2)
    good = checkpoint.save(d / "good.ckpt", flow, params)
    nan_params = jax.tree_util.tree_map(lambda a: a * np.nan, params)
    broken = checkpoint.save(d / "broken.ckpt", flow, nan_params)
    # the older layout: the flow without standardisation, its standardiser stored beside it
    inner, std = jf.split_standardization(flow)
    old = checkpoint.save(d / "old.ckpt", inner, params, standardizer=std)
    return d, x, flow, params, good, broken, old


def test_cli_score_edge_cases_and_ranking(ckpts, capsys):
    d, x, flow, params, good, broken, old = ckpts
    rows = np.vstack([x[:4], [[1e39, -3.0, 250.0]], [[np.inf, -3.0, 250.0]], x[4:6]])
    np.save(d / "rows.npy", rows)
    assert cli.main(["score", str(good), str(d / "rows.npy"), "--out", str(d / "s.npy"),
                     "--top", "3"]) == 0
    out = capsys.readouterr().out
    s = np.load(d / "s.npy")
    assert not np.isnan(s).any() and np.all(s[[4, 5]] == -np.inf)
    np.testing.assert_allclose(s, jf.score(flow, params, rows))
    assert "over the 6 finite rows; 2 rows score -inf" in out
    assert "most anomalous rows (0-based row: log-likelihood): 4: -inf, 5: -inf, " in out
    # the older checkpoint layout scores the same
    assert cli.main(["score", str(old), str(d / "rows.npy"), "--out", str(d / "s_old.npy")]) == 0
    np.testing.assert_array_equal(np.load(d / "s_old.npy"), s)
    # NaN: refused with the row and the line of the file
    csv = d / "nan.csv"
    csv.write_text("1e8,-3,250\n1e8,nan,250\n")
    capsys.readouterr()
    assert cli.main(["score", str(good), str(csv), "--out", str(d / "t.npy")]) == 1
    err = capsys.readouterr().err
    assert "NaN or missing values (first: data row 1, 0-based (line 2 of the file))" in err
    assert not (d / "t.npy").exists()


def test_cli_sample_refuses_nonfinite_rows_unless_kept(ckpts, capsys):
    d, x, flow, params, good, broken, old = ckpts
    assert cli.main(["sample", str(good), "-n", "200", "--out", str(d / "ok.npy")]) == 0
    s = np.load(d / "ok.npy")
    assert s.shape == (200, 3) and np.isfinite(s).all()
    assert abs(s[:, 0].mean() - 1e8) < 1.0 and 0.5 < s[:, 0].std() < 2.0  # float64 units
    capsys.readouterr()
    out = d / "bad.npy"
    assert cli.main(["sample", str(broken), "-n", "50", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "50 of 50 samples are not finite (NaN or Inf)" in err[0]
    assert "--keep-nonfinite" in err[0] and not out.exists()
    assert cli.main(["sample", str(broken), "-n", "50", "--out", str(out),
                     "--keep-nonfinite"]) == 0
    assert "50 of them are NaN or Inf (kept: --keep-nonfinite)" in capsys.readouterr().out
    assert np.isnan(np.load(out)).all()


def test_cli_fit_refuses_a_constant_column(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    x[:, 2] = 7.0
    path = tmp_path / "c.csv"
    path.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6g}" for v in r) for r in x) + "\n")
    assert cli.main(["fit", str(path), "--out", str(tmp_path / "run"), "--no-progress",
                     "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert "column 'c' is 7.0 in every training row" in err and "--drop c" in err
