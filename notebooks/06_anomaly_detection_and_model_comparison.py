# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Anomaly detection and model comparison
#
# An exact, cheap density buys three things: maximum-likelihood training,
# **model comparison** by likelihood on held-out data, and **anomaly detection** by
# flagging points the model finds improbable. This notebook does both on scikit-learn's
# handwritten digits (8x8 images, 64 dimensions, bundled with scikit-learn: nothing to
# download).
#
# The pixels are integers 0..16; `jaxflows.data.digits` adds uniform noise in `[0, 1)`
# (dequantisation) so that a continuous density makes sense. The models are trained on
# standardised pixels, and `data.standardizer_log_det` converts their log-likelihoods back
# to pixel units.

# %%
import os

# JAXFLOWS_NB_SMALL=1 runs this notebook at toy sizes (the test suite does); unset, it runs
# the full tutorial.
SMALL = os.environ.get("JAXFLOWS_NB_SMALL") == "1"

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_digits

import jaxflows
from jaxflows import data
from jaxflows.flows import realnvp

NUM_EPOCHS = 2 if SMALL else 150
HIDDEN = (64,) if SMALL else (256, 256)

x_all = data.digits(seed=0)                      # (1797, 64) float32, dequantised
labels_all = load_digits().target                # the digit of each row, for display only
idx_train, idx_val, idx_test = data.split(np.arange(len(x_all)), (0.7, 0.1, 0.2), seed=0)
if SMALL:
    idx_train = idx_train[:400]
standardizer = data.fit_standardizer(x_all[idx_train])
std = lambda a: np.asarray(data.standardize(standardizer, a), np.float32)
train, val, test = (std(x_all[i]) for i in (idx_train, idx_val, idx_test))
to_pixels = float(data.standardizer_log_det(standardizer))   # log|dz/dx| of standardising
print("train", train.shape, "validation", val.shape, "test", test.shape)


# %% [markdown]
# ## The models
#
# * **Gaussian**: a full-covariance Gaussian fitted in closed form (mean and covariance of
#   the training rows). A flow has to beat it to be worth its cost.
# * **MAF, 1 layer** and **MAF, 5 layers**: `jaxflows.maf`.
# * **RealNVP, 5 layers**: `jaxflows.flows.realnvp`, affine coupling layers.
#
# Every flow trains with early stopping on the validation rows.

# %%
def gaussian_log_prob(train_rows):
    mean = train_rows.mean(0)
    cov = np.cov(train_rows.T) + 1e-6 * np.eye(train_rows.shape[1])
    chol = np.linalg.cholesky(cov)
    half_log_det = np.log(np.diag(chol)).sum()

    def log_prob(x):
        w = np.linalg.solve(chol, (x - mean).T).T
        return -0.5 * (w ** 2).sum(-1) - half_log_det - 0.5 * x.shape[-1] * np.log(2 * np.pi)

    return log_prob


def train_flow(flow, seed=0):
    params = flow.init(jax.random.key(seed))
    params, history = jaxflows.fit(flow, params, train, val_data=val, key=jax.random.key(seed + 1),
                                   num_epochs=NUM_EPOCHS, batch_size=128,
                                   optimizer=optax.adam(1e-3), patience=15, progress=False)
    return jax.jit(lambda x: flow.log_prob(params, x)), history


scorers = {"Gaussian": gaussian_log_prob(train)}
histories = {}
flows = {
    "MAF, 1 layer": jaxflows.maf(64, num_layers=1, hidden=HIDDEN),
    "MAF, 5 layers": jaxflows.maf(64, num_layers=5, hidden=HIDDEN),
    "RealNVP, 5 layers": realnvp(64, num_layers=5, hidden=HIDDEN),
}
for name, flow in flows.items():
    scorers[name], histories[name] = train_flow(flow)
    print(f"{name}: {histories[name]['num_epochs_run']} epochs, best {histories[name]['best_epoch']}")

# %% [markdown]
# ## Model comparison: test log-likelihood
#
# The average log-likelihood of held-out rows estimates `-KL(p_data || p_model)` up to a
# constant, so higher is better and differences between models are meaningful. We report
# it per image in nats (pixel units), with two standard errors, and in bits per pixel.

# %%
test_scores = {name: np.asarray(score(test)) + to_pixels for name, score in scorers.items()}

print(f"{'model':<20}{'test log-lik (nats)':>24}{'bits/pixel':>12}")
for name, ll in test_scores.items():
    se = ll.std() / np.sqrt(ll.size)
    print(f"{name:<20}{ll.mean():>16.2f} +- {2 * se:<5.2f}{float(data.bits_per_dim(ll.mean(), 64)):>12.3f}")
    assert np.isfinite(ll).all()

names = list(test_scores)
means = [test_scores[n].mean() for n in names]
errs = [2 * test_scores[n].std() / np.sqrt(test_scores[n].size) for n in names]
plt.figure(figsize=(6, 3))
plt.barh(names, means, xerr=errs, color=["gray"] + ["C0"] * (len(names) - 1))
plt.xlabel("mean test log-likelihood per image (nats, higher is better)")
plt.xlim(min(means) - 20, max(means) + 10)
plt.show()

# %% [markdown]
# ### Paired comparison with error bars
#
# The error bars above are each model's own standard error, and they are wide because
# images differ a lot in difficulty. But every model scores the *same* test images, and an
# image that is hard for one model is hard for the others, so the right error bar for "is
# A better than B" is the standard error of the per-image difference
# `d_i = log p_A(x_i) - log p_B(x_i)`: `SE = std(d) / sqrt(n)`, usually several times
# smaller. `jaxflows.compare` computes it, with the number of images each model wins
# (`jaxflows compare A.ckpt B.ckpt DATA` does the same from the command line).

# %%
top = max((n for n in test_scores if n != "Gaussian"), key=lambda n: test_scores[n].mean())
print(jaxflows.comparison.format_comparison(
    jaxflows.compare(test_scores[top], test_scores["Gaussian"], dim=64, names=(top, "Gaussian"))))
print()
for other in names:
    if other == top:
        continue
    r = jaxflows.compare(test_scores[top], test_scores[other], dim=64)
    unpaired = np.hypot(r["se_a"], r["se_b"])    # the error bar of two independent means
    print(f"{top} - {other}: {r['difference']:+.2f} +- {r['difference_se']:.2f} nats "
          f"(z {r['z']:.1f}; {top} higher on {r['wins_a']} of {r['n']} images; "
          f"unpaired SE would be {unpaired:.2f})")
    assert np.isfinite(r["difference_se"])

# %% [markdown]
# ## Anomaly detection
#
# Score every held-out image with the best model and flag the least likely ones. A
# threshold makes the flag a rule that can run on new data: here, the 2nd percentile of the
# log-likelihoods of the validation rows. Take it from held-out rows, not from the training
# rows: a flexible model scores its own training rows higher than new ones, so a
# training-set percentile would flag far more than 2% of new, normal data.

# %%
best = max(test_scores, key=lambda n: test_scores[n].mean())
score = lambda x: np.asarray(scorers[best](x)) + to_pixels
threshold = np.percentile(score(val), 2)
ll_test = test_scores[best]
flagged = np.argsort(ll_test)[:8]
print(f"model: {best}; threshold {threshold:.1f} nats; "
      f"{(ll_test < threshold).sum()} of {len(ll_test)} test images below it")

fig, axes = plt.subplots(2, 8, figsize=(12, 3.4))
typical = np.argsort(ll_test)[len(ll_test) // 2:][:8]
for row, picks, what in ((0, flagged, "least likely"), (1, typical, "typical")):
    for ax, i in zip(axes[row], picks):
        ax.imshow(x_all[idx_test[i]].reshape(8, 8), cmap="gray_r")
        ax.set_title(f"'{labels_all[idx_test[i]]}' {ll_test[i]:.0f}", fontsize=9)
        ax.axis("off")
    axes[row, 0].text(-6, 4, what, rotation=90, va="center", fontsize=10)
plt.suptitle("held-out digits: label and log-likelihood (nats)")
plt.show()

# %% [markdown]
# The flagged images are typically badly written or unusual strokes. To see the detector
# work on known anomalies, we corrupt held-out images in two ways: **transposed**
# (a plausible stroke image, but not a digit as written) and **noisy** (random pixels
# replaced with random intensities), and compare their score distributions with the
# clean test set.

# %%
rng = np.random.default_rng(0)
clean = x_all[idx_test]
transposed = clean.reshape(-1, 8, 8).transpose(0, 2, 1).reshape(-1, 64)
noisy = clean.copy()
mask = rng.random(noisy.shape) < 0.2
noisy[mask] = rng.uniform(0, 17, size=mask.sum())

sets = {"clean test": clean, "transposed": transposed, "20% noisy pixels": noisy}
scores = {k: score(std(v)) for k, v in sets.items()}

plt.figure(figsize=(7, 3.2))
lo = np.percentile(scores["clean test"], 1) - 150      # lower scores are piled up at lo
bins = np.linspace(lo, max(s.max() for s in scores.values()), 60)
for k, s in scores.items():
    plt.hist(np.clip(s, lo, None), bins=bins, alpha=0.5, label=k)
    print(f"{k:>18}: {100 * np.mean(s < threshold):5.1f}% flagged")
plt.axvline(threshold, color="k", ls="--", label="threshold")
plt.ylabel("images")
plt.xlabel(f"log-likelihood (nats; everything below {lo:.0f} shown at {lo:.0f})")
plt.legend(); plt.show()

# Ranking quality: probability that a corrupted image scores below a clean one (AUROC).
def auroc(normal, anomalous):
    return float(np.mean(anomalous[:, None] < normal[None, :]))

for k in ("transposed", "20% noisy pixels"):
    print(f"AUROC clean vs {k}: {auroc(scores['clean test'], scores[k]):.3f}")
assert auroc(scores["clean test"], scores["20% noisy pixels"]) > 0.5

# %% [markdown]
# ## Calibrated flags: a false-alarm rate you choose
#
# A percentile threshold says nothing exact about how often normal data will be flagged.
# Conformal p-values do (Vovk et al. 2005; Bates et al. 2023): with `n` calibration rows
# that the model never saw, the p-value of a new row is the rank of its log-likelihood
# among theirs, `p = (1 + #{calibration <= score}) / (n + 1)`. If the new row comes from
# the same distribution as the calibration rows, `P(p <= alpha) <= alpha` exactly, for
# any model, good or bad: a better model only detects more. Flagging `p <= alpha` is the
# same as flagging a log-likelihood below `jaxflows.anomaly.threshold(calibration, alpha)`.
#
# Here the first half of the clean test images calibrates and the second half plays new
# normal data (the validation rows would do too, but they chose the early-stopping epoch).
# From the command line: `jaxflows score model.ckpt new.csv --calibrate val.csv
# --false-alarm-rate 0.05` writes each row's log-likelihood, p-value and flag.

# %%
from jaxflows import anomaly

alpha = 0.05
half = len(idx_test) // 2
calibration = anomaly.calibrate(scores["clean test"][:half])
guaranteed = float(anomaly.expected_false_alarm_rate(calibration, alpha))
print(f"{calibration.size} calibration rows; flag a log-likelihood below "
      f"{float(anomaly.threshold(calibration, alpha)):.1f} nats (p <= {alpha}); "
      f"guaranteed false-alarm rate {guaranteed:.3f}")
p_vals, flagged_frac = {}, {}
for k, s in scores.items():
    p_vals[k] = np.asarray(anomaly.p_values(calibration, s[half:]))
    flagged_frac[k] = float(np.mean(anomaly.flag(calibration, s[half:], alpha)))
    print(f"{k:>18}: {100 * flagged_frac[k]:5.1f}% of {len(s) - half} flagged")

fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharey=True)
for ax, (k, p) in zip(axes, p_vals.items()):
    ax.hist(p, bins=20, range=(0, 1))
    ax.axvline(alpha, color="k", ls="--")
    ax.set(title=k, xlabel="conformal p-value")
axes[0].set_ylabel("images")
plt.suptitle("clean rows: p-values uniform; anomalies: piled up near 0")
plt.tight_layout(); plt.show()

# the realised rate on clean rows is within sampling error of the guarantee (binomial noise
# of the new rows plus the spread of one calibration set)
m = len(idx_test) - half
se = np.sqrt(guaranteed * (1 - guaranteed) * (1 / m + 1 / (calibration.size + 2)))
assert abs(flagged_frac["clean test"] - guaranteed) < 4 * se + 1 / m

# %% [markdown]
# ## Caveats
#
# * Likelihood compares models **on the same data in the same units**. Every model here
#   sees the same standardised pixels, so the `standardizer_log_det` term is one constant
#   for all of them and does not change the ranking; it puts the numbers in pixel units,
#   where they can be compared with models trained on unstandardised pixels.
# * On dequantised pixels the continuous log-likelihood is a lower bound on the log
#   probability of the integer image (unit-width bins), so bits per pixel here bound a
#   code length.
# * The conformal guarantee needs calibration rows exchangeable with the new normal rows:
#   the same source, not used to fit the model. It holds on average over calibration sets;
#   with one set of `n` rows the realised rate scatters by about `sqrt(alpha / n)`.
# * A low likelihood flags "unlike the training data", not "wrong": flows are known to
#   give high likelihood to some simple out-of-distribution inputs (such as near-constant
#   images), so check a detector on the anomalies you care about.

# %% [markdown]
# ## What you learned
#
# * Held-out log-likelihood ranks density models on the same data in the same units; a
#   closed-form Gaussian is the baseline a flow has to beat.
# * `data.standardizer_log_det` puts log-likelihoods of standardised data back in the
#   data's own units.
# * A flow's log-likelihood is an anomaly score: take the threshold from held-out rows, and
#   check the detector on the kinds of anomaly you care about (AUROC above).
# * `jaxflows.compare` gives the paired difference of two models' test log-likelihoods and
#   its standard error; `jaxflows.anomaly` turns scores into conformal p-values and flags
#   with a false-alarm rate you choose.
# * MAF: Papamakarios et al. (2017); RealNVP: Dinh et al. (2017), "Density estimation using
#   Real NVP".
