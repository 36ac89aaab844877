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
# # Quickstart: a masked autoregressive flow on two moons
#
# A normalizing flow models data `x` as an invertible map of noise, `x = f(z)` with
# `z ~ N(0, I)`. The change of variables gives its exact density,
#
# $$\log p(x) = \log N\big(f^{-1}(x); 0, I\big) + \log\left|\det \frac{\partial f^{-1}}{\partial x}\right| ,$$
#
# so it can be trained by maximum likelihood. This notebook trains a MAF
# (masked autoregressive flow) on the two-moons toy data, plots its density and samples,
# and saves and reloads it.
#
# In `jaxflows` a flow is a `NamedTuple` of pure functions; its parameters are an
# ordinary pytree that you hold and pass in.

# %%
import os

# JAXFLOWS_NB_SMALL=1 runs this notebook at toy sizes (the test suite does); unset, it runs
# the full tutorial.
SMALL = os.environ.get("JAXFLOWS_NB_SMALL") == "1"

# %%
import tempfile

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxflows
from jaxflows import checkpoint, data

N_POINTS = 2_000 if SMALL else 20_000
NUM_EPOCHS = 3 if SMALL else 100
key = jax.random.key(0)

# %% [markdown]
# ## Data
#
# `jaxflows.data.two_moons(seed, n)` draws `n` points of two noisy half circles;
# `data.split` cuts them into a training and a test part (deterministically from a seed).

# %%
x = data.two_moons(0, N_POINTS)
train, test = data.split(x, (0.9, 0.1), seed=0)
print("train", train.shape, "test", test.shape)

plt.figure(figsize=(4, 3))
plt.scatter(*train[:2000].T, s=2, alpha=0.5)
plt.title("two moons (training data)")
plt.xlabel("$x_1$"); plt.ylabel("$x_2$")
plt.gca().set_aspect("equal")
plt.show()

# %% [markdown]
# ## Build and train a MAF
#
# `jaxflows.maf(dim, num_layers, hidden)` stacks MADE layers with the variable order
# reversed between layers. `flow.init(key)` returns the parameters; `jaxflows.fit`
# minimises the mean negative log-likelihood with Adam, holding out 10% of the rows
# for validation, and returns the parameters of the best validation epoch.

# %%
flow = jaxflows.maf(2, num_layers=5, hidden=(64, 64))
params = flow.init(jax.random.key(1))
print("parameters:", sum(p.size for p in jax.tree_util.tree_leaves(params)))

params, history = jaxflows.fit(flow, params, train, key=jax.random.key(2),
                               num_epochs=NUM_EPOCHS, batch_size=256,
                               optimizer=optax.adam(1e-3), progress=False)
print(f"{history['num_epochs_run']} epochs, best epoch {history['best_epoch']}")

plt.figure(figsize=(5, 3))
plt.plot(history["train_loss"], label="train")
plt.plot(history["val_loss"], label="validation")
plt.xlabel("epoch"); plt.ylabel("negative log-likelihood (nats)"); plt.legend()
plt.show()

# %% [markdown]
# ## Test log-likelihood
#
# `flow.log_prob(params, x)` takes any batch shape `(..., dim)`. Jit it once and
# reuse it.

# %%
log_prob = jax.jit(flow.log_prob)
test_ll = log_prob(params, test)
stderr = test_ll.std() / np.sqrt(test_ll.size)
print(f"test log-likelihood: {test_ll.mean():.3f} +- {2 * stderr:.3f} nats")
assert np.isfinite(test_ll).all()

# %% [markdown]
# ## Density and samples
#
# The density on a grid is one `log_prob` call on an array of shape `(rows, cols, 2)`.
# Samples come from `flow.sample(params, key, sample_shape)`: draw `z ~ N(0, I)` and
# map it through the flow (for a MAF this direction runs the `dim` autoregressive steps
# one after another; for two dimensions that costs nothing). `sample_shape` fixes the shape
# of the result, so under `jax.jit` it is a static argument (`static_argnums=2`).

# %%
xs = np.linspace(-1.5, 2.5, 200)
ys = np.linspace(-1.0, 1.5, 130)
grid = np.stack(np.meshgrid(xs, ys), axis=-1)          # (130, 200, 2)
density = jnp.exp(log_prob(params, grid))               # (130, 200)

samples = jax.jit(flow.sample, static_argnums=2)(params, jax.random.key(3), (2000,))

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharex=True, sharey=True)
axes[0].pcolormesh(xs, ys, density, shading="auto", cmap="magma")
axes[0].set_title("model density p(x)")
axes[1].scatter(*samples.T, s=2, alpha=0.5, label="flow samples")
axes[1].scatter(*test[:2000].T, s=2, alpha=0.3, label="test data")
axes[1].set_title("samples vs test data"); axes[1].legend(markerscale=5)
for ax in axes:
    ax.set_aspect("equal"); ax.set_xlabel("$x_1$")
axes[0].set_ylabel("$x_2$")
plt.show()

# %% [markdown]
# ## Save and load a checkpoint
#
# `jaxflows.checkpoint.save(path, flow, params, ...)` writes one file holding the flow's
# configuration (the factory and its arguments), the parameters and any metadata.
# `checkpoint.load(path)` rebuilds the flow from that configuration, so the file alone is
# enough: no model code is needed to load it. The reloaded flow gives the same
# log-likelihoods.

# %%
workdir = tempfile.mkdtemp()
path = checkpoint.save(os.path.join(workdir, "moons.ckpt"), flow, params,
                       metadata={"test_log_likelihood": float(test_ll.mean())})
print("wrote", path, os.path.getsize(path), "bytes")

restored = checkpoint.load(path)
print("config:", restored.config)
print("metadata:", restored.metadata)

restored_ll = restored.flow.log_prob(restored.params, test)
print("max |difference| in log p:", float(jnp.max(jnp.abs(restored_ll - test_ll))))
np.testing.assert_allclose(restored_ll, test_ll, rtol=0, atol=1e-5)

# %% [markdown]
# ## What you learned
#
# * A flow in `jaxflows` is a bundle of pure functions (`init`, `log_prob`, `sample`, ...)
#   and its parameters are a plain pytree that you pass in: `jax.jit`, `jax.grad` and
#   checkpoints see ordinary arrays.
# * `jaxflows.fit` trains by maximum likelihood with a validation split and early stopping,
#   and returns the best parameters with the training history.
# * `log_prob` takes any batch shape, so a density on a grid is one call; `sample` draws
#   new points (with `sample_shape` static under `jit`).
# * `checkpoint.save` / `checkpoint.load` store the flow's configuration with its
#   parameters: the file alone rebuilds the model.
#
# The MAF is from Papamakarios et al. (2017), "Masked Autoregressive Flow for Density
# Estimation"; its layers are MADE networks (Germain et al., 2015). Next:
# `02_maf_vs_iaf` for which direction of a flow is fast.
