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
# # Bring your own network: flax.linen conditioners
#
# A coupling layer (RealNVP, Dinh et al. 2017) keeps some coordinates `x_m` and maps each
# of the others through a monotone transformer, `y_i = mu_i(x_m) + sigma_i(x_m) x_i`. The
# network that computes the transformer's parameters from `x_m` is the *conditioner*. It
# can be any network at all: the layer stays invertible because of the mask, not because
# of the network.
#
# In `jaxflows` a conditioner is a pair of pure functions,
# `init(key, in_dim, out_dim, context_dim) -> params` and
# `apply(params, x, context) -> theta`. `jaxflows.nn.from_linen(module)` turns a
# `flax.linen` module into one; its parameters are the module's variables, a plain nested
# dict, so training, checkpoints and `jax.vmap` treat them like any other parameters.
#
# This notebook trains a RealNVP whose conditioner is a small residual network with
# LayerNorm and GELU, compares it with the built-in MLP, then builds an autoregressive
# network for a MAF from masked dense layers.

# %%
import os

# The test suite sets JAXFLOWS_NB_SMALL=1 to run this notebook at toy sizes.
SMALL = os.environ.get("JAXFLOWS_NB_SMALL") == "1"

# %%
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxflows
from jaxflows import data
from jaxflows.nn import MaskedDense, from_linen, made_degrees
from jaxflows.testing import check_bijector

N_POINTS = 2_000 if SMALL else 10_000
NUM_EPOCHS = 3 if SMALL else 40

# %% [markdown]
# ## Data
#
# Two moons: two noisy half circles, split into training and test rows.

# %%
x = data.two_moons(0, N_POINTS)
train, test = data.split(x, (0.9, 0.1), seed=0)
print("train", train.shape, "test", test.shape)

# %% [markdown]
# ## A residual conditioner in flax.linen
#
# The module reads one event `x` (and a context, if the flow has one) and returns
# `out_dim` numbers: `dim * num_params` of the layer's transformer (2 per coordinate for
# the affine map). The layer sets `out_dim`: `from_linen` looks for a field of that name
# and fills it in (`module.clone(out_dim=...)`).
#
# `from_linen(..., zero_last=True)` (the default) sets the kernel and bias of the layer
# that produces the output to zero, so every flow layer starts as the identity map, as
# with the built-in networks. Every transformer is the identity at `theta = 0`.

# %%
class ResNet(nn.Module):
    """Dense -> residual blocks (LayerNorm, GELU, Dense) -> Dense."""
    out_dim: int = 0
    width: int = 64
    blocks: int = 2

    @nn.compact
    def __call__(self, x, context=None):
        h = nn.Dense(self.width)(x if context is None else jnp.concatenate([x, context]))
        for _ in range(self.blocks):
            h = h + nn.Dense(self.width)(nn.gelu(nn.LayerNorm()(h)))
        return nn.Dense(self.out_dim)(nn.gelu(nn.LayerNorm()(h)))


resnet_flow = jaxflows.realnvp(2, num_layers=6, conditioner=ResNet())
mlp_flow = jaxflows.realnvp(2, num_layers=6, hidden=(64, 64))

resnet_params = resnet_flow.init(jax.random.key(1))
mlp_params = mlp_flow.init(jax.random.key(1))
count = lambda p: sum(a.size for a in jax.tree_util.tree_leaves(p))  # noqa: E731
print("ResNet conditioner flow:", count(resnet_params), "parameters")
print("built-in MLP flow:     ", count(mlp_params), "parameters")
# one layer's params: the module's variables, stacked over the 6 layers
print(jax.tree_util.tree_map(jnp.shape, resnet_params["bijector"])["params"]["Dense_0"])

# the flow starts as the identity map: log p(x) is the base density
np.testing.assert_allclose(resnet_flow.log_prob(resnet_params, test[:5]),
                           jax.scipy.stats.norm.logpdf(test[:5]).sum(-1), atol=1e-4)

# %% [markdown]
# Before training, `jaxflows.testing.check_bijector` runs the conformance suite on one
# layer (round trips, log-determinants against `jax.jacfwd`, `jit`/`vmap`, gradients), at
# random parameters.

# %%
from jaxflows.bijectors import affine_coupling, alternating_mask  # noqa: E402

check_bijector(affine_coupling(2, alternating_mask(2), conditioner=ResNet()), 2, unchanged=[0])
print("one ResNet coupling layer passes check_bijector")

# %% [markdown]
# ## Train both with the same budget
#
# `jaxflows.fit` trains by maximum likelihood with Adam and returns the best parameters
# on a held-out 10% of the training rows.

# %%
results = {}
for name, flow, params in (("built-in MLP", mlp_flow, mlp_params),
                           ("flax ResNet", resnet_flow, resnet_params)):
    params, history = jaxflows.fit(flow, params, train, key=jax.random.key(2),
                                   num_epochs=NUM_EPOCHS, batch_size=256,
                                   optimizer=optax.adam(1e-3), progress=False)
    test_ll = flow.log_prob(params, test)
    results[name] = (flow, params, history, test_ll)
    print(f"{name:13s} test log-likelihood {float(test_ll.mean()):.3f} "
          f"+- {2 * float(test_ll.std() / np.sqrt(test_ll.size)):.3f} nats")
    assert np.isfinite(test_ll).all()

plt.figure(figsize=(5, 3))
for name, (_, _, history, _) in results.items():
    plt.plot(history["val_loss"], label=name)
plt.xlabel("epoch"); plt.ylabel("validation NLL (nats)"); plt.legend()
plt.title("validation loss")
plt.show()

# %% [markdown]
# ## Densities
#
# The density on a grid is one `log_prob` call on an array of shape `(rows, cols, 2)`.

# %%
xs = np.linspace(-1.5, 2.5, 160)
ys = np.linspace(-1.0, 1.5, 100)
grid = np.stack(np.meshgrid(xs, ys), axis=-1)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharex=True, sharey=True)
for ax, (name, (flow, params, _, test_ll)) in zip(axes, results.items()):
    ax.pcolormesh(xs, ys, jnp.exp(flow.log_prob(params, grid)), shading="auto", cmap="magma")
    ax.set_title(f"{name}: test LL {float(test_ll.mean()):.2f}")
    ax.set_aspect("equal"); ax.set_xlabel("$x_1$")
axes[0].set_ylabel("$x_2$")
plt.show()

# %% [markdown]
# ## Save and load
#
# The checkpoint records that the flow uses a user network (its class name), but a file
# holds parameters, not code. `jaxflows.load(path, conditioner=ResNet())` rebuilds the flow
# with the same module; without it, `load` says which module it needs.

# %%
flow, params, _, test_ll = results["flax ResNet"]
print("config records:", flow.config["kwargs"]["conditioner"])
path = jaxflows.save(os.path.join(tempfile.mkdtemp(), "resnet.ckpt"), flow, params)

try:
    jaxflows.load(path)
except ValueError as err:
    print("load without the network:", str(err)[:160], "...")

restored = jaxflows.load(path, conditioner=ResNet())
np.testing.assert_allclose(restored.flow.log_prob(restored.params, test), test_ll, atol=1e-4)
print("reloaded: same test log-likelihoods")

# %% [markdown]
# ## An autoregressive network for a MAF
#
# A MAF layer (Papamakarios et al. 2017) computes `theta_i` from `x_<i` only, so its
# conditioner must be *autoregressive*: row `i` of its `(dim, num_params)` output may read
# inputs `0..i-1` and nothing after. MADE (Germain et al. 2015) gets that by masking the
# weights of dense layers with *degrees*; `jaxflows.nn.MaskedDense` is such a layer and
# `made_degrees(dim, hidden, num_params)` gives the degrees to wire them with. The layer
# applies its variable order outside the network, so the network is written for the
# natural order.
#
# Element-wise activations and residual sums of layers with equal degrees keep the
# property. A LayerNorm over the hidden units does not (every unit then depends on every
# input), and the layer refuses such a network when it is built: it computes the
# network's Jacobian at random inputs and names the output that reads a later input.

# %%
class MaskedResNet(nn.Module):
    out_dim: int = 0
    width: int = 64
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x, context=None):
        dim = x.shape[-1]
        d_in, (d_h,), d_out = made_degrees(dim, [self.width], self.out_dim // dim)
        h = MaskedDense(self.width, d_in, d_h)(x)
        for _ in range(2):
            u = nn.LayerNorm()(h) if self.layer_norm else h
            h = h + MaskedDense(self.width, d_h, d_h)(nn.gelu(u))
        return MaskedDense(self.out_dim, d_h, d_out, strict=True)(nn.gelu(h))


try:
    jaxflows.maf(2, num_layers=4, conditioner=MaskedResNet(layer_norm=True))
except ValueError as err:
    print("refused:", err)

maf_flow = jaxflows.maf(2, num_layers=4, conditioner=MaskedResNet())
maf_params, maf_history = jaxflows.fit(maf_flow, maf_flow.init(jax.random.key(3)), train,
                                       key=jax.random.key(4), num_epochs=NUM_EPOCHS,
                                       batch_size=256, optimizer=optax.adam(1e-3),
                                       progress=False)
maf_ll = maf_flow.log_prob(maf_params, test)
print(f"MAF with a masked ResNet: test log-likelihood {float(maf_ll.mean()):.3f} nats")

samples = maf_flow.sample(maf_params, jax.random.key(5), (2000,))
plt.figure(figsize=(4, 3))
plt.scatter(*samples.T, s=2, alpha=0.5, label="MAF samples")
plt.scatter(*test[:2000].T, s=2, alpha=0.3, label="test data")
plt.xlabel("$x_1$"); plt.ylabel("$x_2$"); plt.legend(markerscale=5)
plt.gca().set_aspect("equal")
plt.title("MAF with a masked flax ResNet")
plt.show()

# %% [markdown]
# Sampling a MAF solves for one variable after another. With the built-in MADE,
# `jaxflows` does that at the cost of about one network pass (it caches hidden units by
# degree); with your own network it runs the reference `lax.scan`, one full network pass
# per variable, which is fine for small `dim` and slower for large ones.

# %% [markdown]
# ## What you learned
#
# * A conditioner is two pure functions, `init(key, in_dim, out_dim, context_dim)` and
#   `apply(params, x, context)`; `conditioner=` on `coupling`, `affine_coupling`,
#   `spline_coupling`, `realnvp`, `nsf`, `maf`, `iaf` and the autoregressive layers takes one,
#   or a `flax.linen` module directly.
# * `jaxflows.nn.from_linen` keeps the module's variables as the parameters and, with
#   `zero_last=True`, zeroes the last layer so every flow layer starts as the identity.
# * Coupling conditioners can be any network. Autoregressive ones must respect the order:
#   build them from `MaskedDense` with `made_degrees`; the layer checks the Jacobian when
#   it is built and refuses a network that reads ahead.
# * A checkpoint records which network was used; `jaxflows.load(path, conditioner=...)`
#   rebuilds the flow with it.
# * `jaxflows.testing.check_bijector` checks a layer with your network (or your own
#   bijector) before you train it.
#
# See `docs/conditioners.md` for the reference.
