"""jaxflows' MAF and IAF: the adapter ``speed.py`` times in-process against flowjax.

Run alone, it times jaxflows by itself on ``_runner.py``'s schedule:

    .venv/bin/python benchmarks/bench_jaxflows.py --out /tmp/jaxflows.json

Same schedule as the peers (``_runner.py``): S, L and the dim sweep, MAF
and IAF, both directions, on briefly trained params.  Flows are
``jaxflows.maf`` / ``jaxflows.iaf`` with the default options (ReLU MADE,
affine transformer, reversed order between layers, standard normal base).

Extra sections (jaxflows only):

- ``compile``: trace+lower and XLA compile time of ``log_prob`` and
  ``sample`` at S for 5, 10 and 20 layers (MAF and IAF).
- ``exactness``: at L on trained params, the sequential direction against
  the parallel one (``to_latent(from_latent(z)) == z`` for the MAF,
  ``from_latent(to_latent(x)) == x`` for the IAF), and, when the flow
  factories take an inversion ``method`` option with a ``"scan"`` value,
  the default method against the ``lax.scan`` reference (max abs error of
  samples and log densities).
- ``mlp_ceiling`` (inside config L): a bare ReLU MLP 64 -> 512 -> 512 -> 128
  applied 5 times to a batch of 4096 (no masks, no transformer): the rate a
  MADE pass could reach on this machine.
"""

from __future__ import annotations

import inspect
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import _runner as R  # noqa: E402


def make_adapter():
    import warnings

    warnings.filterwarnings("ignore", message=".*pytype_aval_mappings.*")
    import jax
    import jax.numpy as jnp
    import optax

    import jaxflows

    factories = {"maf": jaxflows.maf, "iaf": jaxflows.iaf}

    def make(kind, dim, hidden, num_layers, seed, **options):
        flow = factories[kind](dim, num_layers=num_layers, hidden=tuple(hidden), **options)
        return flow, flow.init(jax.random.key(seed))

    def log_prob(model, x):
        flow, params = model
        fn = jax.jit(flow.log_prob)
        x = jnp.asarray(x)
        return lambda: fn(params, x)

    def sample(model, n, seed):
        flow, params = model
        fn = jax.jit(lambda p, k: flow.sample(p, k, (n,)))
        key = jax.random.key(seed)
        return lambda: fn(params, key)

    def trainer(model, loss_fn, lr, init_aux):
        flow, params = model
        opt = optax.adam(lr)

        @jax.jit
        def step(p, s, aux):
            val, grads = jax.value_and_grad(loss_fn)(p, aux)
            updates, s = opt.update(grads, s, p)
            return optax.apply_updates(p, updates), s, val

        eval_loss = jax.jit(loss_fn)
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
            model=lambda: (flow, state["p"]),
            loss=lambda: eval_loss(state["p"], state["aux"]),
        )

    def mle_trainer(model, x, lr):
        flow = model[0]
        return trainer(model, lambda p, x: -jnp.mean(flow.log_prob(p, x)), lr, jnp.asarray(x))

    def rkl_trainer(model, target, batch, lr):
        flow = model[0]
        prec = jnp.asarray(target["precision"])
        log_norm = float(target["log_norm"])

        def loss(p, aux):
            y, log_q = flow.sample_and_log_prob(p, aux[0], (batch,))
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
        """Trace+lower and compile time of log_prob / sample at S, by depth.

        One throwaway compile first (process-level warm-up), then the best
        of 3 fresh builds per (depth, flow, direction).
        """
        cfg = C.CONFIGS["S"]
        batch = C.BATCH["log_prob"]

        def builder(kind, direction, layers):
            def build():
                flow, params = make(kind, cfg["dim"], cfg["hidden"], layers, seed=0)
                if direction == "log_prob":
                    return jax.jit(flow.log_prob), (params, jnp.zeros((batch, cfg["dim"])))
                return jax.jit(lambda p, k: flow.sample(p, k, (batch,))), (params, jax.random.key(0))

            return build

        C.compile_time(builder("maf", "log_prob", 2), repeats=1)
        out = {}
        for layers in (5, 10, 20):
            row = {}
            for kind in ("maf", "iaf"):
                for direction in ("log_prob", "sample"):
                    row[f"{kind}_{direction}"] = C.compile_time(builder(kind, direction, layers))
            out[str(layers)] = row
            C.log(f"    {layers} layers: " + ", ".join(f"{k} {C.fmt_s(v['total_s'])}" for k, v in row.items()))
        ratios = {k: out["20"][k]["total_s"] / out["5"][k]["total_s"] for k in out["5"]}
        return {"by_layers": out, "ratio_20_over_5": ratios}

    def exactness_section(settings):
        """Sequential direction vs parallel direction (and vs scan, if offered)."""
        cfg = C.CONFIGS["L"]
        dim, hidden, layers = cfg["dim"], cfg["hidden"], cfg["num_layers"]
        steps = settings["train_steps"]
        out = {"config": "L", "train_steps": steps}
        x_train = C.gaussian_samples(C.BATCH["train"], dim, sample_seed=456)
        x_eval = jnp.asarray(C.gaussian_samples(1024, dim, sample_seed=789))
        z = jax.random.normal(jax.random.key(11), (1024, dim))
        method_param = _method_parameter(jaxflows.maf)
        out["method_parameter"] = method_param
        for kind in ("maf", "iaf"):
            model = make(kind, dim, hidden, layers, seed=0)
            if kind == "maf":
                tr = mle_trainer(model, x_train, C.TRAIN["learning_rate"])
            else:
                tr = rkl_trainer(model, C.gaussian_target(dim), C.BATCH["train"], C.TRAIN["learning_rate"])
            for _ in range(steps):
                tr.step()
            flow, params = tr.model()
            from_latent = jax.jit(flow.from_latent)
            to_latent = jax.jit(flow.to_latent)
            if kind == "maf":  # sequential: from_latent
                err = jnp.max(jnp.abs(to_latent(params, from_latent(params, z)) - z))
            else:  # sequential: to_latent
                err = jnp.max(jnp.abs(from_latent(params, to_latent(params, x_eval)) - x_eval))
            row = {"round_trip_max_abs": float(err)}
            if method_param is not None:
                try:
                    ref_flow = factories[kind](dim, num_layers=layers, hidden=tuple(hidden), **{method_param: "scan"})
                    if kind == "maf":
                        a, b = from_latent(params, z), jax.jit(ref_flow.from_latent)(params, z)
                    else:
                        a, b = to_latent(params, x_eval), jax.jit(ref_flow.to_latent)(params, x_eval)
                    row["vs_scan_max_abs"] = float(jnp.max(jnp.abs(a - b)))
                    lp_a = jax.jit(flow.log_prob)(params, x_eval)
                    lp_b = jax.jit(ref_flow.log_prob)(params, x_eval)
                    row["log_prob_vs_scan_max_abs"] = float(jnp.max(jnp.abs(lp_a - lp_b)))
                except Exception as exc:  # record, never hide
                    row["vs_scan_error"] = f"{type(exc).__name__}: {exc}"
            out[kind] = row
            C.log(f"    {kind}: {row}")
        return out

    dev = jax.devices()[0]
    from importlib.metadata import version

    return R.Adapter(
        library="jaxflows",
        versions={
            "jaxflows": getattr(jaxflows, "__version__", "unknown"),
            "jax": jax.__version__,
            "jaxlib": version("jaxlib"),
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
            "maf": "jaxflows.maf(dim, num_layers=, hidden=) defaults",
            "iaf": "jaxflows.iaf(dim, num_layers=, hidden=) defaults",
            "jit": "jax.jit of the flow's pure functions",
        },
        extra_sections={
            "compile": compile_section,
            "exactness": exactness_section,
            "mlp_ceiling": lambda settings: mlp_ceiling(settings, jax, jnp),
        },
    )


def _method_parameter(factory):
    """Name of the factory's inversion-method keyword, if it has one."""
    for name in inspect.signature(factory).parameters:
        if "method" in name:
            return name
    return None


def mlp_ceiling(settings, jax, jnp):
    """Rate of a bare ReLU MLP with L's shapes (the MADE pass's ceiling)."""
    cfg = C.CONFIGS["L"]
    dim, hidden, layers, batch = cfg["dim"], cfg["hidden"], cfg["num_layers"], C.BATCH["log_prob"]
    widths = [dim, *hidden, 2 * dim]
    keys = jax.random.split(jax.random.key(0), layers * len(widths))
    params = [
        [
            (jax.random.normal(keys[l * len(widths) + i], (a, b)) / jnp.sqrt(a), jnp.zeros(b))
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
        ]
        for l in range(layers)
    ]

    @jax.jit
    def apply(params, x):
        total = 0.0
        for mlp in params:
            h = x
            for i, (w, b) in enumerate(mlp):
                h = h @ w + b
                if i < len(mlp) - 1:
                    h = jax.nn.relu(h)
            total = total + h[:, :dim]
            x = x + 0.01 * h[:, dim:]
        return total

    x = jax.random.normal(jax.random.key(1), (batch, dim))
    t = C.time_call(lambda: apply(params, x), block=jax.block_until_ready, target_s=settings["target_s"])
    flops = C.made_flops(batch, dim, hidden, layers)
    t["flops"] = flops
    t["gflops"] = flops / t["median_s"] / 1e9
    t["what"] = f"{layers} x ReLU MLP {'->'.join(map(str, widths))} on batch {batch}, unmasked"
    C.log(f"    {C.fmt_s(t['median_s'])}  {t['gflops']:.1f} GFLOP/s")
    return t


def main(argv=None):
    parser = C.common_arg_parser(__doc__.splitlines()[0])
    parser.set_defaults(sections="S,L,sweep,compile,exactness,mlp_ceiling")
    args = parser.parse_args(argv)
    settings = C.settings_from_args(args)
    R.run(make_adapter(), settings, args.out)


if __name__ == "__main__":
    main()
