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
# # Sampling and latent inference
#
# A flow is one invertible map used in two directions:
#
# * **sampling**, `z -> x`: draw `z ~ N(0, I)` and compute `x = f(z) = f_K(...f_1(z))`;
# * **latent inference**, `x -> z`: compute `z = f^{-1}(x) = f_1^{-1}(...f_K^{-1}(x))`.
#
# Unlike a VAE's approximate encoder, the latent of a data point is exact and unique, and
# mapping it back reconstructs the point exactly (up to floating-point rounding). In
# `jaxflows` the two directions are `flow.from_latent(params, z)` and
# `flow.to_latent(params, x)`.

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
from jax.scipy.stats import norm

import jaxflows
from jaxflows import data

N_POINTS = 2_000 if SMALL else 20_000
NUM_EPOCHS = 3 if SMALL else 100

x = data.two_moons(0, N_POINTS)
flow = jaxflows.maf(2, num_layers=5, hidden=(64, 64))
params, history = jaxflows.fit(flow, flow.init(jax.random.key(0)), x, key=jax.random.key(1),
                               num_epochs=NUM_EPOCHS, batch_size=256, progress=False)
print(f"validation NLL after {history['num_epochs_run']} epochs: {history['val_loss'][-1]:.3f} nats")

# %% [markdown]
# ## Data -> latent
#
# Mapping the data to latent space should give points that look like draws from the base
# `N(0, I)`: the flow has learned to "Gaussianise" the two moons. Colouring each point by
# its moon shows where each moon lands.

# %%
to_latent = jax.jit(flow.to_latent)
from_latent = jax.jit(flow.from_latent)

z = to_latent(params, x)
moon = x[:, 1] > 0.25 - 0.5 * (x[:, 0] - 0.5)   # a rough label, for colour only

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
axes[0].scatter(*x.T, c=moon, s=2, cmap="coolwarm"); axes[0].set_title("data x")
axes[1].scatter(*z.T, c=moon, s=2, cmap="coolwarm"); axes[1].set_title("latent z = f^{-1}(x)")
axes[0].set(xlabel="$x_1$", ylabel="$x_2$"); axes[1].set(xlabel="$z_1$", ylabel="$z_2$")
circle = plt.Circle((0, 0), 2.0, fill=False, ls="--", color="k")
axes[1].add_patch(circle)
for ax in axes:
    ax.set_aspect("equal")
plt.show()
print("latent mean", np.round(z.mean(0), 3), " latent covariance", np.round(np.cov(z.T), 3).tolist())

# %% [markdown]
# ## Exact reconstruction
#
# `from_latent(to_latent(x))` returns `x`. The error is floating-point rounding: about
# `1e-6` in float32.

# %%
x_rec = from_latent(params, z)
err = jnp.abs(x_rec - x).max(axis=-1)
print(f"max reconstruction error {float(err.max()):.2e}, median {float(jnp.median(err)):.2e}")
assert float(err.max()) < 1e-3

plt.figure(figsize=(5, 3))
plt.hist(np.log10(np.maximum(np.asarray(err), 1e-12)), bins=40)
plt.xlabel("log10 max |x_rec - x|"); plt.ylabel("points")
plt.title("reconstruction error, float32")
plt.show()


# %% [markdown]
# ## The density is the latent density times a volume change
#
# The change of variables says `log p(x) = log N(z; 0, I) + log|det dz/dx|`. With the
# latent map in hand we can check `flow.log_prob` against an explicit Jacobian from
# `jax.jacfwd`.

# %%
def log_prob_by_hand(xi):
    zi = flow.to_latent(params, xi)
    jac = jax.jacfwd(lambda v: flow.to_latent(params, v))(xi)
    return norm.logpdf(zi).sum() + jnp.linalg.slogdet(jac)[1]

few = x[:5]
print("by hand:", np.round(jax.vmap(log_prob_by_hand)(few), 4))
print("log_prob:", np.round(flow.log_prob(params, few), 4))
np.testing.assert_allclose(jax.vmap(log_prob_by_hand)(few), flow.log_prob(params, few),
                           rtol=1e-4, atol=1e-4)

# %% [markdown]
# ## Latent -> data: sampling
#
# Sampling is the same map the other way. Drawing a regular polar grid in latent space and
# pushing it through `from_latent` shows how the flow bends space: circles of constant
# base density become the curved level sets of the model.

# %%
radii = np.array([0.5, 1.0, 1.5, 2.0])
angles = np.linspace(0, 2 * np.pi, 400)
rings = np.stack([np.stack([r * np.cos(angles), r * np.sin(angles)], -1) for r in radii])  # (4, 400, 2)
x_rings = from_latent(params, jnp.asarray(rings, jnp.float32))

samples = flow.sample(params, jax.random.key(2), (2000,))
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for r, ring, ring_x in zip(radii, rings, x_rings):
    axes[0].plot(*ring.T, label=f"|z| = {r}")
    axes[1].plot(*ring_x.T)
axes[1].scatter(*samples.T, s=1, alpha=0.3, color="gray")
axes[0].set_title("circles in latent space"); axes[0].legend(fontsize=8)
axes[1].set_title("their images in data space, and samples")
axes[0].set(xlabel="$z_1$", ylabel="$z_2$"); axes[1].set(xlabel="$x_1$", ylabel="$x_2$")
for ax in axes:
    ax.set_aspect("equal")
plt.show()

# %% [markdown]
# ## Interpolation in latent space
#
# Take one point on each moon, map both to latent space, walk the straight line between the
# latents and map every step back. The path in data space follows the model's
# high-density region, while the straight line in data space crosses the empty gap between
# the moons. The log-density along both paths shows the difference.

# %%
a = jnp.array([-0.8, 0.5], jnp.float32)     # on the upper moon
b = jnp.array([1.9, 0.2], jnp.float32)       # on the lower moon
t = jnp.linspace(0.0, 1.0, 60)[:, None]

z_a, z_b = to_latent(params, a), to_latent(params, b)
latent_path = from_latent(params, (1 - t) * z_a + t * z_b)
straight_path = (1 - t) * a + t * b

log_prob = jax.jit(flow.log_prob)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].scatter(*x[:3000].T, s=1, alpha=0.2, color="gray")
axes[0].plot(*latent_path.T, "-o", ms=3, label="linear in latent space")
axes[0].plot(*straight_path.T, "--", label="linear in data space")
axes[0].scatter(*jnp.stack([a, b]).T, color="k", zorder=3)
axes[0].set_aspect("equal"); axes[0].legend(fontsize=8); axes[0].set_title("interpolation paths")
axes[0].set(xlabel="$x_1$", ylabel="$x_2$")
axes[1].plot(t[:, 0], log_prob(params, latent_path), label="latent-space path")
axes[1].plot(t[:, 0], log_prob(params, straight_path), "--", label="data-space path")
axes[1].set_xlabel("t"); axes[1].set_ylabel("log p(x(t))"); axes[1].legend(fontsize=8)
plt.show()

# The endpoints come back exactly.
np.testing.assert_allclose(latent_path[0], a, atol=1e-4)
np.testing.assert_allclose(latent_path[-1], b, atol=1e-4)

# %% [markdown]
# ## What you learned
#
# * `flow.to_latent` (`x -> z`) and `flow.from_latent` (`z -> x`) are exact inverses: a
#   point's latent is unique and maps back to the point up to float32 rounding.
# * `log_prob` is the base density of the latent plus the log-volume change, which you can
#   check against `jax.jacfwd` of `to_latent`.
# * Sampling pushes base draws through `from_latent`; circles of constant base density
#   become the model's curved level sets.
# * Straight lines in latent space stay in the model's high-density region, unlike straight
#   lines in data space: latent interpolation follows the data.
