"""flowjax's MAF on the real-data report's datasets (runs in the bench venv).

    .venv-bench/bin/python benchmarks/realdata_flowjax.py --jobs JOBS.json --out OUT.json

``realdata.py`` writes ``JOBS.json`` (one entry per dataset: the prepared
``.npz`` it wrote, the budget, the seed) and calls this script, so flowjax
trains and tests on the same bytes as jaxflows.  Without ``--jobs`` it
prepares the datasets itself (``--data-dir``, ``--budget``, ``--datasets``;
``digits`` needs scikit-learn, which the bench venv lacks).

Model: ``masked_autoregressive_flow(invert=True)`` (parallel ``log_prob``),
5 layers, MADE with ``nn_depth = len(hidden)`` hidden layers of
``nn_width = hidden[0]`` ReLU units, flowjax's affine transformer
(``softplus(.) + 0.01`` scale) and its random permutation between layers,
a ``Normal`` base whose loc and scale train with the flow (flowjax's usual
choice; ``fixed_base=True``: ``StandardNormal``, nothing trainable).

Training mirrors ``jaxflows.fit`` as the jaxflows side uses it: Adam at the
budget's learning rate, each epoch a fresh shuffle into full batches (the last
partial batch dropped), one host sync per epoch, the validation NLL after
every epoch, early stopping with the budget's patience, the params of the best
validation epoch tested.  Stopping on seconds: after an epoch, training stops
if one more epoch as long as the last would pass ``max_s`` (compile included;
after the first epoch, whose time holds the compile, only if ``max_s`` is
already spent).
The step is ``jax.jit`` over the ``eqx.partition``-ed array leaves and
``paramax.unwrap`` as in flowjax's ``MaximumLikelihoodLoss``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402
import _realdata_common as RC  # noqa: E402


def run_one(prep, budget, seed, return_flow=False, fixed_base=False):
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax
    import paramax
    from flowjax.distributions import Normal, StandardNormal
    from flowjax.flows import masked_autoregressive_flow

    hidden = tuple(budget["hidden"])
    if len(set(hidden)) != 1:
        raise ValueError(f"flowjax needs equal hidden widths, got {hidden}")
    dim = int(prep["dim"])
    train, val, test = prep["train"], prep["val"], prep["test"]
    t_start = time.perf_counter()
    key = jax.random.key(seed)
    # flowjax's Normal has a trainable loc and scale; StandardNormal has none
    base = StandardNormal((dim,)) if fixed_base else Normal(jnp.zeros(dim))
    model = masked_autoregressive_flow(key, base_dist=base, flow_layers=RC.NUM_LAYERS,
                                       nn_width=hidden[0], nn_depth=len(hidden), invert=True)
    params, static = eqx.partition(model, eqx.is_inexact_array,
                                   is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable))
    n_params = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(params)))
    opt = optax.adam(budget["lr"])
    opt_state = opt.init(params)

    def log_prob(p, x):
        return paramax.unwrap(eqx.combine(p, static)).log_prob(x)

    @jax.jit
    def step(p, s, x, loss_sum):
        loss, grads = jax.value_and_grad(lambda q: -jnp.mean(log_prob(q, x)))(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss_sum + loss

    @jax.jit
    def eval_sum(p, x, mask):
        lp = log_prob(p, x)
        return jnp.sum(jnp.where(mask, -lp, 0.0))

    @jax.jit
    def eval_rows(p, x):
        return log_prob(p, x)

    def padded_batches(a, size):
        for start in range(0, len(a), size):
            idx = np.arange(start, start + size)
            mask = idx < len(a)
            yield jnp.asarray(a[np.where(mask, idx, 0)]), jnp.asarray(mask), int(mask.sum())

    def val_nll(p):
        total = 0.0
        for x, mask, _ in padded_batches(val, batch):
            total += float(eval_sum(p, x, mask))
        return total / len(val)

    n = len(train)
    batch = min(int(budget["batch"]), n)
    steps = n // batch
    rng = np.random.default_rng(seed + 100)
    history = {"train_loss": [], "val_loss": [], "epoch_seconds": []}
    best = (np.inf, params, -1)
    since_best, stopped_early, stop_reason = 0, False, "epochs"
    for epoch in range(int(budget["epochs"])):
        t0 = time.perf_counter()
        perm = rng.permutation(n)
        loss_sum = jnp.zeros(())
        for s_ in range(steps):
            x = jnp.asarray(train[perm[s_ * batch:(s_ + 1) * batch]])
            params, opt_state, loss_sum = step(params, opt_state, x, loss_sum)
        train_loss = float(loss_sum) / steps  # the one host sync of the epoch's steps
        vl = val_nll(params)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(vl)
        history["epoch_seconds"].append(time.perf_counter() - t0)
        if vl < best[0]:
            best, since_best = (vl, params, epoch), 0
        else:
            since_best += 1
        if since_best >= int(budget["patience"]):
            stopped_early, stop_reason = True, "patience"
            break
        elapsed = time.perf_counter() - t_start
        # the next epoch is predicted to take as long as the last; the first epoch's
        # time holds the compile, so after it only an exhausted budget stops
        predicted = history["epoch_seconds"][-1] if epoch > 0 else 0.0
        if elapsed + predicted > float(budget["max_s"]):
            stop_reason = "seconds"
            break
    train_s = time.perf_counter() - t_start
    best_params = best[1] if best[2] >= 0 else params

    t0 = time.perf_counter()
    eval_batch = 1000
    rows = []
    for x, mask, m in padded_batches(test, eval_batch):
        rows.append(np.asarray(eval_rows(best_params, x))[:m])
    log_q = np.concatenate(rows)
    eval_s = time.perf_counter() - t0
    out = RC.test_metrics(log_q, prep["test_offset"], dim, bool(prep["bits_per_dim"]))
    dev = jax.devices()[0]
    out.update(
        library="flowjax", model="flowjax_maf", epochs_run=len(history["val_loss"]),
        best_epoch=int(best[2]), best_val_nll_std=float(best[0]), stopped_early=stopped_early,
        stop_reason=stop_reason, train_s=train_s, eval_s=eval_s, n_params=n_params,
        epoch_s_median=float(np.median(history["epoch_seconds"])) if history["epoch_seconds"] else None,
        history=history, device=f"{dev.platform}:{dev.device_kind}",
    )
    if return_flow:  # in-process use (realdata.py): the trained flow and per-row log q
        out["_log_q"] = log_q
        return out, eqx.combine(best_params, static)
    return out


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", help="JSON written by realdata.py")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir", default=os.path.join(here, "..", "..", "shared", "data"))
    ap.add_argument("--budget", default="small", choices=sorted(RC.BUDGETS))
    ap.add_argument("--datasets", default="miniboone,wine_red")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    if a.jobs:
        with open(a.jobs) as fh:
            jobs = json.load(fh)
    else:
        jobs = [{"dataset": d, "budget": RC.BUDGETS[a.budget][d], "seed": a.seed, "path": None}
                for d in a.datasets.split(",")]
    import flowjax
    import jax
    from importlib.metadata import version

    results = []
    for job in jobs:
        name = job["dataset"]
        if job["path"]:
            prep = RC.load_prepared(job["path"])
        else:
            prep = RC.prepare(name, a.data_dir, a.budget, a.seed)
        C.log(f"[flowjax] {name}: dim {int(prep['dim'])}, {len(prep['train'])} train rows")
        try:
            r = run_one(prep, job["budget"], int(job["seed"]))
        except Exception as err:  # record and go on: one failure must not sink the report
            r = {"library": "flowjax", "model": "flowjax_maf", "error": f"{type(err).__name__}: {err}"}
        r["dataset"] = name
        if "error" not in r:
            C.log(f"[flowjax] {name}: test LL {r['test_ll']['mean']:.3f} ± {r['test_ll']['two_se']:.3f} "
                  f"({r['epochs_run']} epochs, {r['train_s']:.1f} s, stop: {r['stop_reason']})")
        else:
            C.log(f"[flowjax] {name}: {r['error']}")
        results.append(r)
    C.write_json(a.out, {"versions": {"flowjax": version("flowjax"), "equinox": version("equinox"),
                                      "paramax": version("paramax"), "jax": jax.__version__},
                         "runs": results})


if __name__ == "__main__":
    main()
