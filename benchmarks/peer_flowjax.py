"""flowjax's masked autoregressive flows: the adapter ``speed.py`` times in-process.

``speed.py`` builds this adapter beside jaxflows' in one process and
interleaves their calls.  Run alone (any venv with flowjax), it times flowjax
by itself on ``_runner.py``'s schedule:

    .venv/bin/python benchmarks/peer_flowjax.py --out /tmp/flowjax.json

MAF: ``masked_autoregressive_flow(..., invert=True)`` (flowjax's default:
parallel log_prob, ``lax.scan`` sampling).  IAF:
``masked_autoregressive_flow(..., invert=False)`` (parallel sampling,
sequential log_prob).  Affine transformer, ReLU MADE with ``nn_depth``
hidden layers of ``nn_width`` (flowjax needs equal widths, which S, L and the
sweep have), a flip permutation between layers, standard normal base.

Every call is ``jax.jit`` of a function of the *partitioned* array leaves
(``eqx.partition`` once, outside the timed region) so that no equinox
flattening overhead is counted against flowjax.  See ``_runner.py`` for the
schedule and ``_common.py`` for the configs.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import _runner as R  # noqa: E402


def make_adapter():
    import equinox as eqx
    import flowjax
    import jax
    import jax.numpy as jnp
    import optax
    import paramax
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow

    def is_leaf(leaf):
        return isinstance(leaf, paramax.NonTrainable)

    def make(kind, dim, hidden, num_layers, seed):
        if len(set(hidden)) != 1:
            raise ValueError(f"flowjax needs equal hidden widths, got {hidden}")
        return masked_autoregressive_flow(
            jax.random.key(seed),
            base_dist=Normal(jnp.zeros(dim)),
            flow_layers=num_layers,
            nn_width=hidden[0],
            nn_depth=len(hidden),
            invert=(kind == "maf"),
        )

    def split(model):
        return eqx.partition(model, eqx.is_inexact_array, is_leaf=is_leaf)

    def log_prob(model, x):
        params, static = split(model)
        fn = jax.jit(lambda p, x: eqx.combine(p, static).log_prob(x))
        x = jnp.asarray(x)
        return lambda: fn(params, x)

    def sample(model, n, seed):
        params, static = split(model)
        fn = jax.jit(lambda p, k: eqx.combine(p, static).sample(k, (n,)))
        key = jax.random.key(seed)
        return lambda: fn(params, key)

    def trainer(model, loss_fn, lr, init_aux):
        params, static = split(model)
        opt = optax.adam(lr)

        def full_loss(p, aux):
            return loss_fn(eqx.combine(p, static), aux)

        @jax.jit
        def step(p, s, aux):
            val, grads = jax.value_and_grad(full_loss)(p, aux)
            updates, s = opt.update(grads, s, p)
            return optax.apply_updates(p, updates), s, val

        eval_loss = jax.jit(full_loss)
        state = {"p": params, "s": opt.init(params), "aux": init_aux}

        def do_step():
            aux = state["aux"]
            if isinstance(aux, tuple):  # (key,) for reverse KL: fresh key per step
                key, sub = jax.random.split(aux[0])
                state["aux"], aux = (key,), (sub,)
            state["p"], state["s"], val = step(state["p"], state["s"], aux)
            return val

        return R.Trainer(
            step=do_step,
            model=lambda: eqx.combine(state["p"], static),
            loss=lambda: eval_loss(state["p"], state["aux"]),
        )

    def mle_trainer(model, x, lr):
        return trainer(model, lambda d, x: -d.log_prob(x).mean(), lr, jnp.asarray(x))

    def rkl_trainer(model, target, batch, lr):
        prec = jnp.asarray(target["precision"])
        log_norm = float(target["log_norm"])

        def loss(d, aux):
            y, log_q = d.sample_and_log_prob(aux[0], (batch,))
            log_p = log_norm - 0.5 * jnp.einsum("bi,ij,bj->b", y, prec, y)
            return jnp.mean(log_q - log_p)

        return trainer(model, loss, lr, (jax.random.key(3),))

    def matmul():
        ka, kb = jax.random.split(jax.random.key(0))
        a = jax.random.normal(ka, (C.MATMUL_N, C.MATMUL_N), jnp.float32)
        b = jax.random.normal(kb, (C.MATMUL_N, C.MATMUL_N), jnp.float32)
        fn = jax.jit(jnp.matmul)
        return lambda: fn(a, b)

    def compile_section(settings):
        """Trace+lower and compile time of MAF log_prob / sample at S, by depth
        (one throwaway compile, then best of 3 fresh builds)."""
        cfg = C.CONFIGS["S"]
        batch = C.BATCH["log_prob"]

        def builder(direction, layers):
            def build():
                params, static = split(make("maf", cfg["dim"], cfg["hidden"], layers, seed=0))
                if direction == "log_prob":
                    fn = jax.jit(lambda p, x: eqx.combine(p, static).log_prob(x))
                    return fn, (params, jnp.zeros((batch, cfg["dim"])))
                fn = jax.jit(lambda p, k: eqx.combine(p, static).sample(k, (batch,)))
                return fn, (params, jax.random.key(0))

            return build

        C.compile_time(builder("log_prob", 2), repeats=1)
        out = {}
        for layers in (5, 10, 20):
            row = {d: C.compile_time(builder(d, layers)) for d in ("log_prob", "sample")}
            out[str(layers)] = row
            C.log(f"    {layers} layers: " + ", ".join(f"{k} {C.fmt_s(v['total_s'])}" for k, v in row.items()))
        return out

    dev = jax.devices()[0]
    return R.Adapter(
        library="flowjax",
        versions={
            "flowjax": flowjax.__version__ if hasattr(flowjax, "__version__") else _dist_version("flowjax"),
            "equinox": _dist_version("equinox"),
            "paramax": _dist_version("paramax"),
            "jax": jax.__version__,
            "jaxlib": _dist_version("jaxlib"),
            "optax": optax.__version__,
        },
        device=f"{dev.platform}:{dev.device_kind}",
        block=jax.block_until_ready,
        make=make,
        log_prob=log_prob,
        sample=sample,
        mle_trainer=mle_trainer,
        rkl_trainer=rkl_trainer,
        matmul=matmul,
        notes={
            "maf": "masked_autoregressive_flow(invert=True): parallel log_prob, lax.scan sample",
            "iaf": "masked_autoregressive_flow(invert=False): parallel sample, lax.scan log_prob",
            "jit": "jax.jit over eqx.partition'ed array leaves (no filter_jit overhead)",
        },
        extra_sections={"compile": compile_section},
    )


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main(argv=None):
    args = C.common_arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    settings = C.settings_from_args(args)
    R.run(make_adapter(), settings, args.out)


if __name__ == "__main__":
    main()
