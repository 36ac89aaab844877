"""Bring-your-own-network conditioners: flax.linen adapters, masked autoregressive
networks, configs and checkpoints, and check_bijector on a user's own bijector."""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxflows as jf
from jaxflows.bijectors import affine_coupling, alternating_mask, iaf_layer, maf_layer, spline_coupling
from jaxflows.checkpoint import CheckpointError
from jaxflows.conditioners import Conditioner, check_autoregressive, from_linen, made
from jaxflows.nn import MaskedDense, made_degrees
from jaxflows.testing import check_bijector

D = 3
ORDER = np.array([2, 0, 1])


class ResNet(nn.Module):
    """A coupling conditioner: residual block with LayerNorm and GELU."""
    out_dim: int = 0
    width: int = 8

    @nn.compact
    def __call__(self, x, context=None):
        h = nn.Dense(self.width)(x if context is None else jnp.concatenate([x, context]))
        h = h + nn.Dense(self.width)(nn.gelu(nn.LayerNorm()(h)))
        return nn.Dense(self.out_dim)(nn.gelu(h))


class ARNet(nn.Module):
    """An autoregressive conditioner from MaskedDense layers (a residual masked block)."""
    out_dim: int = 0
    width: int = 8

    @nn.compact
    def __call__(self, x, context=None):
        dim = x.shape[-1]
        d_in, (d_h,), d_out = made_degrees(dim, [self.width], self.out_dim // dim,
                                           context=context is not None)
        h = MaskedDense(self.width, d_in, d_h)(x)
        if context is not None:
            h = h + nn.Dense(self.width)(context)
        h = nn.gelu(h)
        h = h + MaskedDense(self.width, d_h, d_h)(nn.gelu(h))
        return MaskedDense(self.out_dim, d_h, d_out, strict=True)(h)


class LayerNormedARNet(nn.Module):
    """Masked layers, but a LayerNorm over the hidden units: not autoregressive."""
    out_dim: int = 0

    @nn.compact
    def __call__(self, x, context=None):
        d_in, (d_h,), d_out = made_degrees(x.shape[-1], [8], self.out_dim // x.shape[-1])
        h = nn.LayerNorm()(nn.gelu(MaskedDense(8, d_in, d_h)(x)))
        return MaskedDense(self.out_dim, d_h, d_out, strict=True)(h)


@pytest.mark.slow
def test_linen_coupling_conformance_float32_and_float64():
    layer = affine_coupling(D, alternating_mask(D), conditioner=ResNet())
    params = layer.init(jax.random.PRNGKey(0))
    # params are the module's variables, a plain nested dict; the last layer starts at zero
    assert set(params) == {"params"} and isinstance(params["params"], dict)
    assert not np.any(np.asarray(params["params"]["Dense_2"]["kernel"]))
    x = jnp.array([0.3, -1.2, 2.0])
    np.testing.assert_allclose(layer.forward(params, x)[0], x, atol=1e-5)  # identity start
    # op by op and the Jacobians: in float64 below
    check_bijector(layer, D, unchanged=[0, 2], check_eager=False, check_jacobians=False)
    spline = spline_coupling(D, alternating_mask(D, 1), num_bins=4, conditioner=ResNet(), context_dim=2)
    check_bijector(spline, D, unchanged=[1], context_dim=2)
    with jax.enable_x64(True):  # vmap and gradients: in float32 above
        check_bijector(layer, D, unchanged=[0, 2], dtype=jnp.float64, check_transforms=False)


@pytest.mark.slow
def test_linen_autoregressive_conformance_float32_and_float64():
    maf_l = maf_layer(D, conditioner=ARNet(), order=ORDER)
    # op by op and the Jacobians: in float64 below
    check_bijector(maf_l, D, order=ORDER, check_eager=False, check_jacobians=False)
    iaf_l = iaf_layer(D, conditioner=ARNet(), context_dim=2)
    check_bijector(iaf_l, D, order=np.arange(D), context_dim=2)
    with jax.enable_x64(True):  # vmap and gradients: in float32 above
        check_bijector(maf_l, D, order=ORDER, dtype=jnp.float64, check_transforms=False)


def test_non_autoregressive_network_is_refused():
    with pytest.raises(ValueError, match=r"not autoregressive: row \d of its output .* depends on its input"):
        maf_layer(D, conditioner=LayerNormedARNet())
    with pytest.raises(ValueError, match="MaskedDense"):
        jf.maf(D, num_layers=2, conditioner=ResNet())  # an unmasked network
    # the check itself, on a hand-written Conditioner: output row i reads x_i
    leaky = Conditioner(lambda k, i, o, c=None: {"w": jnp.zeros((i, o))},
                        lambda p, x, c=None: jnp.repeat(x, 2) + x @ p["w"])
    with pytest.raises(ValueError, match="row 0 .* depends on its input 0"):
        check_autoregressive(leaky, D, 2)


def test_layer_arguments_are_checked():
    with pytest.raises(ValueError, match="method='cached'"):
        maf_layer(D, conditioner=ARNet(), method="cached")
    with pytest.raises(ValueError, match="configure the built-in MADE"):
        maf_layer(D, conditioner=ARNet(), hidden=(8,))
    with pytest.raises(ValueError, match="configure the built-in MLP"):
        affine_coupling(D, alternating_mask(D), conditioner=ResNet(), hidden=(8,))
    with pytest.raises(TypeError, match="conditioner must be"):
        affine_coupling(D, alternating_mask(D), conditioner="resnet")

    class Fixed(nn.Module):  # no out_dim field and the wrong width
        @nn.compact
        def __call__(self, x):
            return nn.Dense(5)(x)

    with pytest.raises(ValueError, match=r"returns shape \(5,\) .* needs \(6,\)"):
        affine_coupling(D, alternating_mask(D), conditioner=Fixed()).init(jax.random.PRNGKey(0))

    class Residual(nn.Module):  # the output is a sum, so no one layer to zero
        out_dim: int = 0

        @nn.compact
        def __call__(self, x):
            return nn.Dense(self.out_dim)(x) + jnp.tile(x, self.out_dim // x.shape[-1])

    with pytest.raises(ValueError, match="zero_last=False"):
        affine_coupling(D, alternating_mask(D), conditioner=Residual()).init(jax.random.PRNGKey(0))
    layer = affine_coupling(D, alternating_mask(D), conditioner=from_linen(Residual(), zero_last=False))
    assert layer.forward(layer.init(jax.random.PRNGKey(0)), jnp.ones(D))[0].shape == (D,)

    class WithBatchNorm(nn.Module):
        out_dim: int = 0

        @nn.compact
        def __call__(self, x):
            return nn.Dense(self.out_dim)(nn.BatchNorm(use_running_average=True)(x))

    with pytest.raises(ValueError, match="batch_stats"):
        affine_coupling(D, alternating_mask(D), conditioner=WithBatchNorm()).init(jax.random.PRNGKey(0))


def test_builtin_made_conditioner_is_the_kernels_made():
    a = maf_layer(D, hidden=(8,), activation="tanh", order=ORDER)
    b = maf_layer(D, conditioner=made((8,), "tanh"), order=ORDER)
    pa = jf.testing.perturb_params(a.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    x = jnp.array([0.5, -1.0, 0.25])
    for fa, fb in ((a.forward, b.forward), (a.inverse, b.inverse)):
        np.testing.assert_allclose(fa(pa, x)[0], fb(pa, x)[0], rtol=1e-6)
    # as a standalone Conditioner it is a MADE in natural order
    c = made((8,))
    check_autoregressive(c, D, 2)


def _data(n=256):
    return np.asarray(jf.data.two_moons(0, n), np.float32)


@pytest.mark.parametrize("factory,net", [("realnvp", ResNet), ("maf", ARNet)])
def test_fit_save_load_with_a_linen_network(tmp_path, factory, net):
    x = _data()
    flow = jf.FACTORIES[factory](2, num_layers=2, conditioner=net())
    assert flow.config["kwargs"]["conditioner"]["type"] == "flax.linen"
    assert flow.config["kwargs"]["conditioner"]["module"].endswith(net.__qualname__)
    params = flow.init(jax.random.PRNGKey(0))
    before = float(-jnp.mean(flow.log_prob(params, x)))
    params, _ = jf.fit(flow, params, x, optimizer=optax.adam(1e-2), num_epochs=3, batch_size=64,
                       val_fraction=0.0, patience=None, key=jax.random.PRNGKey(1), progress=False)
    after = float(-jnp.mean(flow.log_prob(params, x)))
    assert np.isfinite(after) and after < before
    path = str(tmp_path / "model.ckpt")
    jf.save(path, flow, params)

    ck = jf.load(path, conditioner=net())
    np.testing.assert_allclose(ck.flow.log_prob(ck.params, x[:16]), flow.log_prob(params, x[:16]), rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(ck.flow.sample(ck.params, jax.random.PRNGKey(2), (8,)))))
    # without the network, or with another one, load says what it needs
    with pytest.raises(CheckpointError, match=f"flax.linen module .*{net.__qualname__}.*conditioner="):
        jf.load(path)
    other = ARNet if net is ResNet else ResNet
    with pytest.raises(CheckpointError, match=f"built with the flax module .*{net.__qualname__}"):
        jf.load(path, conditioner=other())


class Scale(NamedTuple):
    """A user's bijector without any jaxflows internals: y = x * exp(s) + t."""
    init: callable
    forward: callable
    inverse: callable


def _scale_bijector(dim):
    def init(key):
        return {"s": 0.1 * jax.random.normal(key, (dim,)), "t": jnp.zeros(dim)}

    def forward(p, x, context=None):
        return x * jnp.exp(p["s"]) + p["t"], jnp.sum(p["s"])

    def inverse(p, y, context=None):
        return (y - p["t"]) * jnp.exp(-p["s"]), -jnp.sum(p["s"])

    return Scale(init, forward, inverse)


def test_check_bijector_on_a_minimal_user_bijector():
    check_bijector(_scale_bijector(D), D)
    with jax.enable_x64(True):
        check_bijector(_scale_bijector(D), D, dtype=jnp.float64)
    # the input-validation checks are jaxflows' convention: opt-in
    with pytest.raises(AssertionError, match="expected ValueError"):
        check_bijector(_scale_bijector(D), D, check_inputs=True)
    with pytest.raises(TypeError, match="callable init, forward and inverse"):
        check_bijector(object(), D)


def test_check_bijector_on_a_default_sized_flow():
    """The perturbation is scaled by fan-in: a default-sized flow stays well conditioned
    (round trips and log-dets within float32 tolerance). Its vmap, gradients and op-by-op
    calls are those of the small MAF flows in test_conformance, the same code."""
    check_bijector(jf.maf(4).bijector, 4, check_eager=False, check_transforms=False)


@pytest.mark.parametrize("wrap", [False, True], ids=["linen_module", "from_linen"])
def test_autoregressive_check_runs_once_per_network(monkeypatch, wrap):
    """Layers made per layer by a factory are rebuilt at every trace (a scan over the
    stacked layers); the network they were given is checked once, whether a flax module
    or a Conditioner."""
    import jaxflows.masked as masked
    from jaxflows.bijectors import stack
    from jaxflows.flows import transformed

    calls = []
    probe = masked._probe_jacobians
    monkeypatch.setattr(masked, "_probe_jacobians", lambda *a: calls.append(a) or probe(*a))
    net = from_linen(ARNet()) if wrap else ARNet()
    orders = np.stack([np.arange(D), ORDER])
    flow = transformed(stack(lambda o: maf_layer(D, conditioner=net, order=o), 2, per_layer=orders),
                       "normal", dim=D)
    params = flow.init(jax.random.PRNGKey(0))
    for n in (2, 3):  # two shapes: two traces of the stacked layers
        assert jax.jit(flow.log_prob)(params, jnp.ones((n, D))).shape == (n,)
    assert len(calls) == 1, f"the network was checked {len(calls)} times"
