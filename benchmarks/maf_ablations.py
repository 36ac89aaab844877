"""Controlled ablations of the MAF's defaults against flowjax's MAF, in one process.

    .venv/bin/python benchmarks/maf_ablations.py                       # all variants, 3 seeds
    .venv/bin/python benchmarks/maf_ablations.py --datasets digits --variants previous,flowjax --seeds 0

Question: at equal architecture, data and budget, which design choices decide
whether a MAF's test log-likelihood reaches flowjax's?  Each variant changes
one thing from a baseline (or combines changes); flowjax's MAF trains in the
same process on the same arrays.  Both sides get 5 layers, the same hidden
widths, Adam at 1e-3, the same batch size, at most ``--epochs`` epochs,
early stopping after 10 epochs without a better validation loss (flowjax:
``max_patience=9``, which stops at the same epoch), 10% of the training rows
held out for validation, and the best-validation params tested.  Test
log-likelihoods are in nats in the data's own units.

Variants (``previous`` is the MAF as it was before these ablations):

- ``previous``: reverse order between layers, scale floor 1e-3, hidden weights
  ``N(0, 1/fan_in)`` with ``fan_in`` the layer's full input width, hidden biases
  ``U(-1, 1)``, zero output layer.
- ``random_order``: a random order per layer (flowjax's default for dim > 2).
- ``floor_1e-2``: scale floor 1e-2 (flowjax's).
- ``masked_fan_in``: hidden weights ``N(0, 1/m)`` with ``m`` the number of
  inputs each unit's mask lets through (its *masked* fan-in): every unit's
  pre-activation has about unit variance on standardised inputs, so its ReLU
  kink falls inside the data (with the full fan-in, low-degree units see one
  or two inputs scaled by ``1/sqrt(width)`` and half of them never activate).
- ``flowjax_init``: flowjax's (equinox's) initialisation: weights and biases
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, output layer too (not zero).
- ``new+flowjax_output`` / ``new+flowjax_hidden``: the new defaults with only
  the output layer (resp. only the hidden layers) initialised as flowjax does.
- ``bounded_input``: the conditioner reads ``5 tanh(x / 5)`` (finite samples by
  design, see ``jaxflows.nn.squash_inputs``).
- ``new``: the combination chosen as the new default (``jaxflows.maf``'s defaults).
- ``new+no_bound`` / ``new+bound_10`` / ``new+tanh_5``: the defaults without the
  input clamp, with ``10 tanh(x / 10)``, or with ``5 tanh(x / 5)`` (the clamp of
  the defaults before ``input_squash="soft_clip"``, which reads ``x`` unchanged
  within ``+-4`` and saturates at ``+-6``).  The variants above that clamp use
  ``5 tanh(x / 5)``, as measured then.
- ``new+natural_first``: the defaults with the first layer of the density
  direction autoregressing in the data's own order (flowjax's layout).
- ``new+diag_base``: the defaults with a trainable diagonal Gaussian base
  (``jaxflows.diag_normal``; flowjax's ``Normal`` base trains its loc and scale).
- ``flowjax``: ``flowjax.flows.masked_autoregressive_flow`` trained by
  ``flowjax.train.fit_to_data``.
- ``flowjax_loop``: the same flowjax MAF trained by the real-data report's loop
  (``realdata_flowjax.run_one``: validation, patience and epoch cap as
  ``jaxflows.fit``).
- ``flowjax_loop+fixed_base``: the same with flowjax's ``StandardNormal`` base
  (nothing trainable in the base).

Writes ``results/maf-ablations.json`` and ``.md`` (means +- SE over seeds, the
per-seed numbers in the JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore", message="jax.core.pytype_aval_mappings is deprecated")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NUM_LAYERS = 5

# dataset -> (hidden, batch); rows as in the real-data report except BSDS300, subsampled
DATASETS = {
    "banana8": ((64, 64), 256),
    "wine_red": ((64, 64), 128),
    "miniboone": ((256, 256), 256),
    "digits": ((128, 128), 128),
    "bsds300": ((128, 128), 256),
}
PREVIOUS = dict(permutation="reverse", min_scale=1e-3, init="previous", input_bound=None)
VARIANTS = {
    "previous": PREVIOUS,
    "random_order": dict(PREVIOUS, permutation="random"),
    "floor_1e-2": dict(PREVIOUS, min_scale=1e-2),
    "masked_fan_in": dict(PREVIOUS, init="masked_fan_in"),
    "flowjax_init": dict(PREVIOUS, init="flowjax"),
    "bounded_input": dict(PREVIOUS, input_bound=5.0, input_squash="tanh"),
    "random+floor": dict(PREVIOUS, permutation="random", min_scale=1e-2),
    "random+floor+masked": dict(PREVIOUS, permutation="random", min_scale=1e-2, init="masked_fan_in"),
    "random+floor+masked+bound": dict(PREVIOUS, permutation="random", min_scale=1e-2,
                                      init="masked_fan_in", input_bound=5.0, input_squash="tanh"),
    "new+flowjax_init": dict(PREVIOUS, permutation="random", min_scale=1e-2, input_bound=5.0,
                             input_squash="tanh", init="flowjax"),
    "new+flowjax_output": dict(PREVIOUS, permutation="random", min_scale=1e-2, input_bound=5.0,
                               input_squash="tanh", init="flowjax_output"),
    "new+flowjax_hidden": dict(PREVIOUS, permutation="random", min_scale=1e-2, input_bound=5.0,
                               input_squash="tanh", init="flowjax_hidden"),
    "new": "defaults",  # jf.maf with its current defaults
    # jf.maf's defaults with one setting changed
    "new+no_bound": ("defaults", dict(input_bound=None)),
    "new+bound_10": ("defaults", dict(input_bound=10.0, input_squash="tanh")),
    # the clamp of the previous defaults, 5 tanh(x / 5) (it bends the bulk of the data)
    "new+tanh_5": ("defaults", dict(input_bound=5.0, input_squash="tanh")),
    # the first layer on the density side (x -> z) autoregresses in the data's own order,
    # the others in random orders (flowjax's layout: a permutation after each layer)
    "new+natural_first": ("defaults", dict(), "natural_first"),
    # the defaults with a trainable diagonal Gaussian base (flowjax's Normal base trains
    # its loc and scale with the flow)
    "new+diag_base": ("defaults", dict(), "diag_base"),
    "flowjax": None,  # flowjax's MAF trained by its own fit_to_data
    # flowjax's MAF trained by the real-data report's loop (realdata_flowjax.run_one: the
    # same validation rows, patience and epoch cap rules as jaxflows.fit)
    "flowjax_loop": None,
    # the same, with a fixed standard normal base (flowjax's StandardNormal)
    "flowjax_loop+fixed_base": None,
}


def load_dataset(name, data_dir, seed):
    """``(train, test, test_offset)``: train rows (validation is split off by
    each library), test rows, per-row log-Jacobian of the standardisation."""
    import _realdata_common as RC

    if name == "banana8":
        import jax
        from jaxflows.targets import banana

        t = banana(8)
        k1, k2 = jax.random.split(jax.random.PRNGKey(1000 + seed))
        trn = np.asarray(t.sample(k1, 20000), np.float64)
        tst = np.asarray(t.sample(k2, 20000), np.float64)
        mean, scale = RC.fit_standardiser(trn)
        z = [((a - mean) / scale).astype(np.float32) for a in (trn, tst)]
        offset = np.full(len(tst), -np.sum(np.log(scale)))
        truth = np.asarray(t.log_prob(tst), np.float64)
        return z[0], z[1], offset, truth
    budget = "full"
    if name == "bsds300":
        RC.BUDGETS["ablation"] = dict(RC.BUDGETS["full"])
        RC.BUDGETS["ablation"]["bsds300"] = dict(RC.BUDGETS["full"]["bsds300"], n_train=18000,
                                                 n_val=2000, n_test=20000)
        budget = "ablation"
    p = RC.prepare(name, data_dir, budget=budget, seed=seed)
    train = np.concatenate([p["train"], p["val"]])
    return train, p["test"], p["test_offset"], None


def reinit(flow_params, hidden, dim, how, key):
    """Replace the MADE init of a stacked MAF's params (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    from jaxflows.nn import hidden_degrees

    bij = flow_params["bijector"]
    hid, out = bij["hidden"], bij["out"]
    num_layers = hid[0]["w"].shape[0]
    keys = jax.random.split(key, 2 * len(hid) + 2)
    new_hidden = []
    prev_deg = np.arange(1, dim + 1)
    for l, layer in enumerate(hid):
        n_in, n_out = layer["w"].shape[1:]
        deg = hidden_degrees(n_out, dim)
        if how == "masked_fan_in":
            m = np.maximum((prev_deg[:, None] <= deg[None, :]).sum(0), 1)
            w = jax.random.normal(keys[2 * l], (num_layers, n_in, n_out)) / jnp.sqrt(m)
            b = layer["b"]
        elif how == "flowjax_output":  # only the output layer differs from the default init
            w, b = layer["w"], layer["b"]
        else:  # flowjax, flowjax_hidden
            lim = 1.0 / math.sqrt(n_in)
            w = jax.random.uniform(keys[2 * l], (num_layers, n_in, n_out), minval=-lim, maxval=lim)
            b = jax.random.uniform(keys[2 * l + 1], (num_layers, n_out), minval=-lim, maxval=lim)
        new_hidden.append(dict(layer, w=w, b=b))
        prev_deg = deg
    if how in ("flowjax", "flowjax_output"):
        n_in, n_out = out["w"].shape[1:]
        lim = 1.0 / math.sqrt(n_in)
        out = dict(out,
                   w=jax.random.uniform(keys[-2], (num_layers, n_in, n_out), minval=-lim, maxval=lim),
                   b=jax.random.uniform(keys[-1], (num_layers, n_out), minval=-lim, maxval=lim))
    return dict(flow_params, bijector=dict(bij, hidden=tuple(new_hidden), out=out))


def _with_natural_first(build):
    """``build()`` with the last layer's order (the first one the density direction
    applies) set to the natural order."""
    from jaxflows import models

    original = models.layer_orders

    def orders(dim, num_layers, permutation="reverse", seed=0):
        out = original(dim, num_layers, permutation, seed).copy()
        out[-1] = np.arange(dim)
        return out

    models.layer_orders = orders
    try:
        return build()
    finally:
        models.layer_orders = original


def run_jaxflows(spec, train, test, hidden, batch, epochs, seed):
    import jax
    import optax

    import jaxflows as jf

    dim = train.shape[1]
    if spec == "defaults" or isinstance(spec, tuple):
        changed = spec[1] if isinstance(spec, tuple) else {}
        if isinstance(spec, tuple) and spec[2:] == ("diag_base",):
            changed = dict(changed, base=jf.distributions.diag_normal(dim))
        if isinstance(spec, tuple) and spec[2:] == ("natural_first",):
            flow = _with_natural_first(lambda: jf.maf(dim, num_layers=NUM_LAYERS, hidden=hidden, **changed))
        else:
            flow = jf.maf(dim, num_layers=NUM_LAYERS, hidden=hidden, **changed)
        params = flow.init(jax.random.PRNGKey(seed))
    else:
        flow = jf.maf(dim, num_layers=NUM_LAYERS, hidden=hidden, min_scale=spec["min_scale"],
                      permutation=spec["permutation"], permutation_seed=seed,
                      input_bound=spec["input_bound"], input_squash=spec.get("input_squash", "tanh"))
        params = flow.init(jax.random.PRNGKey(seed))
        if spec["init"] != "previous":
            params = reinit(params, hidden, dim, spec["init"], jax.random.PRNGKey(seed + 777))
    t0 = time.perf_counter()
    params, hist = jf.fit(flow, params, train, key=jax.random.PRNGKey(seed + 1),
                          optimizer=optax.adam(1e-3), batch_size=batch, num_epochs=epochs,
                          val_fraction=0.1, patience=10, progress=False)
    secs = time.perf_counter() - t0
    log_q = np.asarray(jax.jit(flow.log_prob)(params, test), np.float64)
    return log_q, secs, hist["num_epochs_run"], hist["best_epoch"], flow, params


def run_flowjax(train, test, hidden, batch, epochs, seed):
    import equinox as eqx
    import jax
    import optax
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow
    from flowjax.train import fit_to_data

    dim = train.shape[1]
    key = jax.random.key(seed)
    flow = masked_autoregressive_flow(key, base_dist=Normal(np.zeros(dim, np.float32)),
                                      flow_layers=NUM_LAYERS, nn_width=hidden[0], nn_depth=len(hidden))
    t0 = time.perf_counter()
    flow, losses = fit_to_data(jax.random.key(seed + 1), flow, train, optimizer=optax.adam(1e-3),
                               max_epochs=epochs, max_patience=9, batch_size=batch, val_prop=0.1,
                               show_progress=False)
    secs = time.perf_counter() - t0
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    lp = jax.jit(lambda p, x: eqx.combine(p, static).log_prob(x))
    log_q = np.asarray(lp(params, test), np.float64)
    val = losses["val"]
    return log_q, secs, len(val), int(np.argmin(val)), flow


def run_flowjax_loop(train, test, hidden, batch, epochs, seed, fixed_base=False):
    """flowjax's MAF through the report's training loop, on a 10% validation split of ``train``."""
    import realdata_flowjax as FJ

    perm = np.random.default_rng(seed + 10_000).permutation(len(train))
    n_val = round(0.1 * len(train))
    prep = dict(train=train[perm[n_val:]], val=train[perm[:n_val]], test=test, dim=train.shape[1],
                test_offset=np.zeros(len(test)), bits_per_dim=False)
    budget = dict(hidden=hidden, lr=1e-3, batch=batch, epochs=epochs, patience=10, max_s=1e9)
    out, flow = FJ.run_one(prep, budget, seed, return_flow=True, fixed_base=fixed_base)
    return (np.asarray(out["_log_q"], np.float64), out["train_s"], out["epochs_run"],
            out["best_epoch"], flow)


def sample_check(kind, flow, params, n, train, seed):
    """Non-finite samples and samples beyond 100 training standard deviations (standardised units)."""
    import jax

    if kind.startswith("flowjax"):
        import equinox as eqx

        p, static = eqx.partition(flow, eqx.is_inexact_array)
        draw = jax.jit(lambda p, k: eqx.combine(p, static).sample(k, (n,)))
        x = np.asarray(draw(p, jax.random.key(seed + 5)))
    else:
        x = np.asarray(jax.jit(flow.sample, static_argnums=2)(params, jax.random.PRNGKey(seed + 5), (n,)))
    std = train.std(axis=0)
    finite = np.all(np.isfinite(x), axis=1)
    far = np.any(np.abs(x - train.mean(axis=0)) > 100 * std, axis=1) & finite
    return int((~finite).sum()), int(far.sum())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--samples", type=int, default=20000, help="samples per model for the finiteness count")
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(HERE), "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "maf-ablations"))
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    runs = []
    t_all = time.perf_counter()
    for name in args.datasets.split(","):
        hidden, batch = DATASETS[name]
        for seed in seeds:
            train, test, offset, truth = load_dataset(name, args.data_dir, seed)
            # alternate the order of the variants between seeds (machine noise, warm caches)
            order = variants if seed % 2 == 0 else variants[::-1]
            for v in order:
                if v.startswith("flowjax"):
                    run = run_flowjax if v == "flowjax" else run_flowjax_loop
                    extra = dict(fixed_base=True) if v == "flowjax_loop+fixed_base" else {}
                    log_q, secs, ep, best, flow = run(train, test, hidden, batch, args.epochs, seed,
                                                      **extra)
                    params = None
                else:
                    log_q, secs, ep, best, flow, params = run_jaxflows(VARIANTS[v], train, test, hidden,
                                                                      batch, args.epochs, seed)
                ll = log_q + offset
                nonfinite, far = sample_check(v, flow, params, args.samples, train, seed)
                rec = dict(dataset=name, variant=v, seed=seed, test_ll=float(np.mean(ll)),
                           test_ll_nonfinite=int((~np.isfinite(ll)).sum()), train_s=secs,
                           epochs=int(ep), best_epoch=int(best), samples=args.samples,
                           sample_nonfinite=nonfinite, sample_far=far)
                if truth is not None:
                    rec["kl"] = float(np.mean(truth - ll))
                runs.append(rec)
                print(f"{name:10s} seed {seed} {v:22s} test LL {rec['test_ll']:9.3f}"
                      + (f"  KL {rec['kl']:.3f}" if "kl" in rec else "")
                      + f"  epochs {ep:3d} (best {best:3d})  {secs:6.1f} s  samples: {nonfinite} "
                        f"non-finite, {far} beyond 100 sd", flush=True)
    meta = dict(command=" ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:])),
                epochs=args.epochs, seeds=seeds, total_s=time.perf_counter() - t_all)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as fh:
        json.dump(dict(meta=meta, runs=runs), fh, indent=1)
    md = markdown(runs, meta)
    with open(args.out + ".md", "w") as fh:
        fh.write(md)
    print(md)


def markdown(runs, meta):
    names = list(dict.fromkeys(r["dataset"] for r in runs))
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    lines = [f"MAF ablations: test log-likelihood (nats, data units), mean ± SE over seeds "
             f"{meta['seeds']}; ≤ {meta['epochs']} epochs. Command: `{meta['command']}` "
             f"({meta['total_s']:.0f} s).", "",
             "| variant | " + " | ".join(names) + " | non-finite / far samples |",
             "|---|" + "---|" * len(names) + "---|"]
    for v in variants:
        cells, bad = [], [0, 0, 0]
        for n in names:
            rs = [r for r in runs if r["dataset"] == n and r["variant"] == v]
            if not rs:
                cells.append("-")
                continue
            x = np.array([r["test_ll"] for r in rs])
            se = x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
            cell = f"{x.mean():.2f} ± {se:.2f}"
            if "kl" in rs[0]:
                k = np.array([r["kl"] for r in rs])
                cell += f" (KL {k.mean():.3f})"
            cells.append(cell)
            for r in rs:
                bad[0] += r["sample_nonfinite"]
                bad[1] += r["sample_far"]
                bad[2] += r["samples"]
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {bad[0]} / {bad[1]} of {bad[2]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
