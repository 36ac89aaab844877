"""Conformal anomaly p-values, paired model comparison, and probability density distillation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import jaxflows
from jaxflows import anomaly


# --------------------------------------------------------------------------
# anomaly: conformal p-values and thresholds
# --------------------------------------------------------------------------

def _trials(seed, trials, n_cal, dist="normal"):
    """``trials`` independent (calibration set of n_cal, one new row) draws, all exchangeable.

    NumPy draws: jax.random would add compile time to these tiny tests."""
    rng = np.random.default_rng(seed)
    if dist == "normal":
        return (rng.normal(size=(trials, n_cal)).astype(np.float32),
                rng.normal(size=trials).astype(np.float32))
    # heavy ties: integer scores
    return (rng.integers(0, 4, size=(trials, n_cal)).astype(np.float32),
            rng.integers(0, 4, size=trials).astype(np.float32))


# one trial per row: its own calibration set and one new row (each jitted once, reused)
@jax.jit
def _smoothed(cal, new, key):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(cal.shape[0]))
    return jax.vmap(lambda c, s, k: anomaly.p_values(c, s, key=k))(cal, new, keys)


_plain = jax.jit(jax.vmap(anomaly.p_values))


def test_smoothed_p_values_are_uniform_on_exchangeable_data_ks():
    key = jax.random.PRNGKey(1)
    cal, new = _trials(0, 400, 9)
    assert stats.kstest(np.asarray(_smoothed(cal, new, key)), "uniform").pvalue > 0.01
    # with ties (integer scores) the smoothed p-value is still exactly uniform
    cal, new = _trials(2, 400, 9, dist="ties")
    assert stats.kstest(np.asarray(_smoothed(cal, new, key)), "uniform").pvalue > 0.01
    # the test has power: a shifted new row (an anomaly) is far from uniform
    cal, new = _trials(3, 400, 9)
    assert stats.kstest(np.asarray(_smoothed(cal, new - 1.5, key)), "uniform").pvalue < 1e-6


def test_plain_p_values_are_discrete_uniform_and_valid():
    n_cal, trials = 9, 2000
    cal, new = _trials(4, trials, n_cal)
    p = np.asarray(_plain(cal, new))
    # on the grid {1/(n+1), ..., 1}, each value with probability 1/(n+1)
    ranks = np.rint(p * (n_cal + 1)).astype(int)
    assert np.allclose(p * (n_cal + 1), ranks, atol=1e-5)
    counts = np.bincount(ranks, minlength=n_cal + 2)[1:]
    assert stats.chisquare(counts).pvalue > 0.01
    # with ties the plain p-value is conservative: P(p <= alpha) <= alpha
    cal, new = _trials(5, trials, n_cal, dist="ties")
    p = np.asarray(_plain(cal, new))
    for alpha in (0.1, 0.3, 0.5):
        assert np.mean(p <= alpha) <= alpha + 3 * math.sqrt(alpha / trials)


def test_p_values_match_the_rank_definition():
    rng = np.random.default_rng(0)
    cal = rng.normal(size=50)
    s = np.concatenate([rng.normal(size=20), cal[:5], [-np.inf, np.inf]])
    p = np.asarray(anomaly.p_values(cal, s))
    ref = (1 + (cal[None, :] <= s[:, None]).sum(1)) / 51
    np.testing.assert_allclose(p, ref, rtol=1e-6)
    assert p[-2] == pytest.approx(1 / 51) and p[-1] == 1.0


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_threshold_false_alarm_rate_within_tolerance(alpha):
    n_cal, trials = 199, 300
    rng = np.random.default_rng(6)
    cal = (rng.normal(size=(trials, n_cal)) * 3.0 + 1.0).astype(np.float32)
    new = (rng.normal(size=(trials, 50)) * 3.0 + 1.0).astype(np.float32)
    flags = jax.jit(jax.vmap(lambda c, s: anomaly.flag(c, s, alpha)))(cal, new)
    rate = float(jnp.mean(flags))
    expected = math.floor(alpha * (n_cal + 1) + 1e-9) / (n_cal + 1)
    assert float(anomaly.expected_false_alarm_rate(cal[0], alpha)) == pytest.approx(expected)
    # rows share a calibration set within a trial: the SE is the Beta spread over trials
    se = math.sqrt(expected * (1 - expected) / (n_cal + 2) / trials + expected / (trials * 50))
    assert abs(rate - expected) < 4 * se, (rate, expected, se)
    # flag(score) == (p_value(score) <= alpha), and the threshold is a calibration score
    c = anomaly.calibrate(cal[0])
    p = anomaly.p_values(c, new[0])
    np.testing.assert_array_equal(np.asarray(anomaly.flag(c, new[0], alpha)), np.asarray(p <= alpha))
    assert float(anomaly.threshold(c, alpha)) in set(np.asarray(cal[0]).tolist())


def test_threshold_edge_cases_and_bad_input():
    cal = np.arange(10.0)
    assert anomaly.threshold(cal, 0.05) == -np.inf  # k = floor(0.05 * 11) = 0: nothing flagged
    assert not np.any(np.asarray(anomaly.flag(cal, [-1e30, 0.0], 0.05)))
    assert float(anomaly.threshold(cal, 0.5)) == 4.0  # k = 5: the 5th smallest
    # under jit a traced rate works too (0.05 * 320 = 16 despite float32 rounding)
    cal = np.arange(319.0)
    assert float(jax.jit(anomaly.threshold)(cal, 0.05)) == 15.0 == float(anomaly.threshold(cal, 0.05))
    with pytest.raises(ValueError, match="false_alarm_rate must be in"):
        anomaly.threshold(cal, 1.0)
    with pytest.raises(ValueError, match="calibration_scores are NaN"):
        anomaly.calibrate([0.0, np.nan])
    with pytest.raises(ValueError, match="scores are NaN"):
        anomaly.p_values(cal, [np.nan])
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        anomaly.calibrate(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="real numbers"):
        anomaly.p_values(cal, np.array(["a"]))
    # under jit a NaN score cannot raise: NaN p-value, and it is flagged
    p, f = jax.jit(lambda s: (anomaly.p_values(cal, s), anomaly.flag(cal, s, 0.1)))(jnp.array([jnp.nan]))
    assert np.isnan(p[0]) and bool(f[0])


# --------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------

def test_compare_matches_numpy_reference():
    rng = np.random.default_rng(1)
    base = rng.normal(-80, 15, size=300)          # shared row difficulty
    a = base + rng.normal(0.4, 1.0, size=300)
    b = base + rng.normal(0.0, 1.0, size=300)
    r = jaxflows.compare(a, b, dim=64, names=("maf", "gauss"))
    d = a - b
    assert r["difference"] == pytest.approx(d.mean())
    assert r["difference_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(300))
    assert r["mean_a"] == pytest.approx(a.mean()) and r["se_a"] == pytest.approx(a.std(ddof=1) / np.sqrt(300))
    assert r["wins_a"] == (d > 0).sum() and r["wins_b"] == (d < 0).sum() and r["ties"] == 0
    assert r["bits_per_dim_a"] == pytest.approx(-a.mean() / (64 * np.log(2)))
    assert r["difference_bits_per_dim"] == pytest.approx(d.mean() / (64 * np.log(2)))
    # the paired SE is much smaller than the separate ones (shared row difficulty)
    assert r["difference_se"] < 0.2 * r["se_a"]
    text = jaxflows.comparison.format_comparison(r)
    assert "maf is better than gauss" in text and "bits/dim" in text
    # swapping the models flips the sign and the verdict
    s = jaxflows.compare(b, a)
    assert s["difference"] == pytest.approx(-r["difference"]) and s["wins_a"] == r["wins_b"]


def test_compare_bad_input():
    with pytest.raises(ValueError, match="same rows"):
        jaxflows.compare(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="not finite at 1 rows"):
        jaxflows.compare([0.0, -np.inf, 1.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="at least 2 rows"):
        jaxflows.compare([1.0], [2.0])
    with pytest.raises(ValueError, match="dim must be"):
        jaxflows.compare([1.0, 2.0], [2.0, 1.0], dim=0)
    r = jaxflows.compare([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert r["difference"] == 0 and r["z"] == 0 and r["ties"] == 3
    assert "no clear difference" in jaxflows.comparison.format_comparison(r)


# --------------------------------------------------------------------------
# distillation
# --------------------------------------------------------------------------

def test_distill_reduces_kl_to_a_maf_teacher():
    # a fixed 2-D teacher: a MAF whose weights are all perturbed at random (its init is the
    # identity map), so it is a non-Gaussian density without any training; the normal init's
    # larger hidden weights make the perturbed teacher clearly non-Gaussian (KL > 0.5 below)
    teacher = jaxflows.maf(2, num_layers=2, hidden=(8,), init="normal")
    tp = teacher.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(10)
    tp = jax.tree_util.tree_map(lambda a: a + 0.4 * rng.normal(size=a.shape).astype(a.dtype), tp)
    student = jaxflows.iaf(2, num_layers=2, hidden=(8,))
    sp0 = student.init(jax.random.PRNGKey(1))
    kl = jax.jit(lambda sp: jaxflows.distillation_kl(teacher, tp, student, sp, jax.random.PRNGKey(2),
                                                      num_samples=1024))
    before = kl(sp0)
    sp, hist = jaxflows.distill(teacher, tp, student, sp0, key=jax.random.PRNGKey(3), num_steps=100,
                                num_samples=64, optimizer=optax.adam(1e-2))
    after = kl(sp)
    assert len(hist["kl"]) == 100 and hist["kl"][0] == pytest.approx(-hist["elbo"][0])
    assert float(before["kl"]) > 0.5
    assert float(after["kl"]) < 0.2 * float(before["kl"])
    assert float(after["kl"]) > -3 * float(after["kl_se"])  # a KL is >= 0 up to MC noise
    # the student's own density (sequential for an IAF) agrees with the teacher's on its samples
    gap = jax.jit(lambda sp, k: (lambda x: student.log_prob(sp, x) - teacher.log_prob(tp, x))(
        student.sample(sp, k, (256,))))(sp, jax.random.PRNGKey(4))
    assert abs(float(gap.mean()) - float(after["kl"])) < 0.2


def test_distill_checks_its_flows():
    with pytest.raises(ValueError, match="same dimension"):
        jaxflows.distill(jaxflows.maf(2, num_layers=1, hidden=(4,)), None,
                         jaxflows.iaf(3, num_layers=1, hidden=(4,)), None,
                         key=jax.random.PRNGKey(0), num_steps=1)
    with pytest.raises(TypeError, match="teacher must be a jaxflows.Flow"):
        jaxflows.distill(object(), None, jaxflows.iaf(3, num_layers=1, hidden=(4,)), None,
                         key=jax.random.PRNGKey(0), num_steps=1)
