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
# # Variational inference with an IAF
#
# Sometimes there is no data, only an unnormalised density `p~(x)` (a Bayesian posterior,
# a physics model). Variational inference fits a flow `q` to it by maximising the
# evidence lower bound
#
# $$\mathrm{ELBO}(\theta) = E_{x\sim q_\theta}\big[\log \tilde p(x) - \log q_\theta(x)\big] = \log Z - \mathrm{KL}(q_\theta \,\|\, p) \le \log Z .$$
#
# Each step draws samples from `q` and scores them under `q`. An **IAF** does both in one
# parallel pass per layer (`flow.sample_and_log_prob`), which is why it is the flow of
# choice here (see the MAF vs IAF notebook).
#
# The target is a 2-D "banana": `x_1 ~ N(0, 1.5^2)`, `x_2 | x_1 ~ N(x_1^2 / 2 - 1, 0.5^2)`, a
# curved ridge that no Gaussian fits well. We give it without its normalising constant; the
# true `log Z = log(2 pi * 1.5 * 0.5) = log(1.5 pi)`, so we can check the bound.

# %%
import os

# JAXFLOWS_NB_SMALL=1 runs this notebook at toy sizes (the test suite does); unset, it runs
# the full tutorial.
SMALL = os.environ.get("JAXFLOWS_NB_SMALL") == "1"

# %%
import math

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxflows
from jaxflows import vi

NUM_STEPS = 300 if SMALL else 4000
NUM_SAMPLES = 64 if SMALL else 128
LOG_Z = math.log(1.5 * math.pi)


def log_banana(x):
    """Unnormalised log density of ONE point x: (2,)."""
    return -0.5 * (x[0] / 1.5) ** 2 - 0.5 * ((x[1] - 0.5 * x[0] ** 2 + 1.0) / 0.5) ** 2


# %% [markdown]
# ## Fit
#
# `vi.fit_vi` maximises a Monte-Carlo ELBO with reparameterised gradients, running the
# steps inside a jitted loop. `log_density` is a function of one point; the library
# vectorises it.

# %%
flow = jaxflows.iaf(2, num_layers=5, hidden=(32, 32))
params = flow.init(jax.random.key(0))
params, history = vi.fit_vi(flow, params, log_banana, key=jax.random.key(1),
                            num_steps=NUM_STEPS, num_samples=NUM_SAMPLES,
                            optimizer=optax.adam(3e-3))
elbo_curve = np.asarray(history["elbo"])
print(f"{NUM_STEPS} steps in {history['seconds']:.1f} s; "
      f"ELBO over the last 100 steps {elbo_curve[-100:].mean():.3f}, log Z = {LOG_Z:.3f}")

# %%
window = 50
smooth = np.convolve(elbo_curve, np.ones(window) / window, mode="valid")
plt.figure(figsize=(6, 3.2))
steps = np.arange(1, len(elbo_curve) + 1)
plt.plot(steps, elbo_curve, alpha=0.3, label="ELBO per step")
plt.plot(steps[window - 1:], smooth, label=f"{window}-step mean")
plt.xscale("log")
plt.axhline(LOG_Z, color="k", ls="--", label="log Z")
plt.ylim(LOG_Z - 6, LOG_Z + 0.5)
plt.xlabel("step"); plt.ylabel("nats"); plt.legend()
plt.show()

# %% [markdown]
# ## Samples against the target
#
# Samples from `q` should fill the banana-shaped contours of the target.

# %%
samples = flow.sample(params, jax.random.key(2), (3000,))
xs, ys = np.linspace(-5, 5, 200), np.linspace(-3, 11, 200)
grid = np.stack(np.meshgrid(xs, ys), -1)
target = jax.vmap(jax.vmap(log_banana))(jnp.asarray(grid))
fitted = flow.log_prob(params, grid)

fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True, sharey=True)
levels = [-9, -6, -3]                  # of the normalised log density log p~(x) - log Z
axes[0].contour(xs, ys, target - LOG_Z, levels=levels, colors="k")
axes[0].scatter(*samples.T, s=1, alpha=0.3)
axes[0].set_title("IAF samples on target contours")
axes[0].set(xlabel="$x_1$", ylabel="$x_2$"); axes[1].set_xlabel("$x_1$")
axes[1].contour(xs, ys, target - LOG_Z, levels=levels, colors="k")
axes[1].contour(xs, ys, fitted, levels=levels, colors="C1", linestyles="--")
axes[1].set_title("target (black) vs q (orange dashed)")
plt.show()

# %% [markdown]
# ## How good is the fit? Importance weights
#
# With `w = p~(x) / q(x)` for `x ~ q`, the effective sample size `ESS = (sum w)^2 / sum w^2`
# is `n` when `q` matches the target exactly and falls towards 1 as they diverge; the
# average weight estimates `Z`. `vi.importance_ess` returns both.

# %%
stats = vi.importance_ess(flow, params, log_banana, jax.random.key(3), num_samples=4096)
print(f"ESS {float(stats['ess']):.0f} of 4096 ({100 * float(stats['ess_fraction']):.1f}%)")
print(f"importance-sampling log Z {float(stats['log_evidence']):.3f}, "
      f"ELBO {float(stats['elbo']):.3f}, true log Z {LOG_Z:.3f}")
assert float(stats["elbo"]) <= LOG_Z + 0.05
assert np.isfinite(float(stats["log_evidence"]))

# %% [markdown]
# The ELBO stays below `log Z` (the gap is `KL(q || p)`), while the importance-sampling
# estimate is close to `log Z` once `q` covers the target. A small ESS fraction would say
# that `q` misses part of the target (often the tails): train longer, or use more layers.

# %% [markdown]
# ## What you learned
#
# * `vi.fit_vi` fits a flow to an unnormalised log-density by maximising the ELBO, with
#   reparameterised gradients through `sample_and_log_prob`.
# * An IAF is the flow for this job: drawing samples and scoring them is one parallel
#   pass (Kingma et al., 2016, "Improved Variational Inference with Inverse Autoregressive
#   Flow"; flows for variational inference: Rezende and Mohamed, 2015).
# * The ELBO is a lower bound on `log Z`; importance weights give a sharper estimate and an
#   effective sample size that says how well `q` covers the target.
