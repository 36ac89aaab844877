"""Density-estimation report: jaxflows (MAF, MAF MoG, RealNVP, NSF) and flowjax's MAF,
on real data and on targets with an exact density, over several seeds.

    .venv/bin/python benchmarks/realdata.py --budget full                    # the whole report
    .venv/bin/python benchmarks/realdata.py --budget small --seeds 0         # smoke test
    .venv/bin/python benchmarks/realdata.py --datasets miniboone,banana8 --models maf,flowjax_maf
    .venv/bin/python benchmarks/realdata.py --render A.json B.json           # merge result files

Datasets (``--data-dir``, default ``../shared/data`` beside the repository;
nothing is copied into the repository): BSDS300 patches built by the
published recipe (``bsds300/make_patches.py``, subsampled), MINIBOONE
(train on ``val.npy``, test on the paper's ``test.npy``), UCI wine quality
red and white, scikit-learn's digits (dequantised), MNIST in bits/dim
(uniform dequantisation, logit transform, both in the log-det), and four
targets with an exact density from ``jaxflows.targets`` (``ring2``,
``banana8``, ``funnel4``, ``mog16``), where the report adds
``KL(p || q) = E_p[log p - log q]``: how close each model gets to the truth.
See ``_realdata_common.py`` for the preparation, units and budgets.

For every seed each dataset is prepared once (split, subsampled and
standardised with that seed; the train rows' statistics), and every model —
the jaxflows factories with ``jaxflows.fit`` and flowjax's MAF with the same
training loop (``realdata_flowjax.run_one``) — trains in this one process on
the same arrays, the model order alternating between seeds.  Budget: every
model on a dataset has the same architecture, optimiser, batch size, epoch
cap and patience; the best-validation params are tested.  Test
log-likelihoods are reported in the data's own units (the standardisation's
and the logit transform's log-Jacobians added), as the mean over seeds of
each seed's mean over test rows, ± the standard error over seeds.  Each
trained model also draws ``--samples`` samples (a tenth above 128 dims),
counting non-finite ones and finite ones beyond 100 training standard
deviations.  Writes ``results/realdata-<budget>-<device>.json`` and ``.md``
(or ``--out STEM``) and prints the table.

JSON: ``meta`` (budget, seeds, device, machine, load averages, versions,
command, total seconds), ``datasets`` (dim, units, sizes and budget,
published figures, protocol note) and ``runs``: per (dataset, model, seed)
``test_ll`` and, for images, ``test_bpd``, for targets ``kl`` (``mean``,
``two_se`` over rows, ``median``, ``n``, ``nonfinite``), ``samples``
(``n``, ``nonfinite``, ``far``), ``train_s`` (construction + fit, compiles
included), ``eval_s``, ``epochs_run``, ``best_epoch`` (0-based),
``stop_reason``, ``best_val_nll_std``, ``n_params``, the per-epoch
``history`` and ``device``; a failed run has ``error`` instead.
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

import _common as C  # noqa: E402
import _realdata_common as RC  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
JAXFLOWS_MODELS = ("maf", "maf_mog", "realnvp", "nsf")


def build_flow(model: str, dim: int, hidden, seed: int = 0, maf_kwargs=None):
    """The jaxflows model ``model`` at the dataset's architecture (5 layers).  The
    autoregressive models' layer orders are drawn from ``seed`` (``permutation_seed``),
    as flowjax draws its permutations from its key: a seed is a whole random model.
    ``maf_kwargs`` (``--maf-kwargs``) override ``jf.maf``'s defaults, for ablations in the
    report's own protocol."""
    import jaxflows as jf
    from jaxflows import models
    from jaxflows.distributions import mixture_of_gaussians

    kw = dict(num_layers=RC.NUM_LAYERS, hidden=tuple(hidden))
    if model == "maf":
        return jf.maf(dim, permutation_seed=seed, **kw, **(maf_kwargs or {}))
    if model == "maf_mog":
        return jf.maf(dim, base=mixture_of_gaussians(dim, RC.MOG_COMPONENTS), permutation_seed=seed, **kw)
    if model == "realnvp":
        return models.realnvp(dim, **kw)
    if model == "nsf":  # autoregressive RQ-NSF, 8 bins on [-3, 3]
        return models.nsf(dim, permutation_seed=seed, **kw)
    raise ValueError(f"unknown jaxflows model {model!r}; known: {', '.join(JAXFLOWS_MODELS)}")


def sample_counts(draw, key, n: int, train: np.ndarray, chunk: int = 50_000):
    """Draw ``n`` samples in chunks (standardised units); count the non-finite
    ones and the finite ones beyond 100 training standard deviations."""
    import jax

    std, mean = train.std(axis=0), train.mean(axis=0)
    out = {"n": 0, "nonfinite": 0, "far": 0}
    for i, start in enumerate(range(0, n, chunk)):
        x = np.asarray(draw(jax.random.fold_in(key, i), min(chunk, n - start)))
        finite = np.all(np.isfinite(x), axis=1)
        far = np.any(np.abs(x - mean) > 100 * std, axis=1) & finite
        out["n"] += len(x)
        out["nonfinite"] += int((~finite).sum())
        out["far"] += int(far.sum())
    return out


def num_samples(dim: int, requested: int, peer: bool = False) -> int:
    """``requested`` samples, a tenth above 128 dims (a 784-dim MAF draws 1e5).  flowjax's
    MAF samples with ``dim`` full network passes per layer: it draws a tenth of that
    (100 samples above 128 dims), as a reference count, not a guarantee."""
    if peer:
        return max(requested // 10, 1) if dim <= 128 else 100
    return requested if dim <= 128 else max(requested // 10, 1)


def evaluate_rows(log_prob, params, test, eb: int = 1000):
    import jax.numpy as jnp

    rows = []
    for start in range(0, len(test), eb):
        idx = np.arange(start, start + eb)
        m = int((idx < len(test)).sum())
        rows.append(np.asarray(log_prob(params, jnp.asarray(test[np.minimum(idx, len(test) - 1)])))[:m])
    return np.concatenate(rows)


def run_jaxflows(model: str, prep, budget, seed: int, n_samples: int, maf_kwargs=None):
    import functools

    import jax
    import optax

    import jaxflows as jf

    train, val, test, dim = prep["train"], prep["val"], prep["test"], prep["dim"]
    t_start = time.perf_counter()
    flow = build_flow(model, dim, budget["hidden"], seed, maf_kwargs)
    key_init, key_fit, key_sample = jax.random.split(jax.random.key(seed), 3)
    params0 = flow.init(key_init)
    n_params = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(params0)))
    batch = min(int(budget["batch"]), len(train))
    params, hist = jf.fit(flow, params0, train, key=key_fit, optimizer=optax.adam(budget["lr"]),
                          batch_size=batch, num_epochs=int(budget["epochs"]), val_data=val,
                          patience=int(budget["patience"]), progress=False)
    jax.block_until_ready(params)
    train_s = time.perf_counter() - t_start

    t0 = time.perf_counter()
    log_q = evaluate_rows(jax.jit(flow.log_prob), params, test)
    eval_s = time.perf_counter() - t0
    out = RC.test_metrics(log_q, prep["test_offset"], dim, prep["bits_per_dim"], prep.get("truth"))
    out["_ll"] = np.asarray(log_q, np.float64) + prep["test_offset"]  # per row, for jf.compare
    draw = jax.jit(lambda k, n: flow.sample(params, k, (n,)), static_argnums=1)
    out["samples"] = sample_counts(draw, key_sample, num_samples(dim, n_samples), train)
    dev = jax.devices()[0]
    out.update(
        library="jaxflows", model=model, seed=seed, epochs_run=hist["num_epochs_run"],
        best_epoch=int(hist["best_epoch"]), best_val_nll_std=float(min(hist["val_loss"])),
        stopped_early=hist["stopped_early"],
        stop_reason="patience" if hist["stopped_early"] else "epochs", train_s=train_s,
        eval_s=eval_s, n_params=n_params, epoch_s_median=float(np.median(hist["epoch_seconds"])),
        skipped_steps=int(sum(hist["skipped_steps"])),
        history={k_: hist[k_] for k_ in ("train_loss", "val_loss", "epoch_seconds")},
        device=f"{dev.platform}:{dev.device_kind}",
    )
    return out


def run_flowjax(prep, budget, seed: int, n_samples: int):
    """flowjax's MAF, trained in this process by ``realdata_flowjax.run_one`` (the
    same loop as ``jaxflows.fit``: same batches per epoch, validation, patience)."""
    import equinox as eqx
    import jax

    import realdata_flowjax as FJ

    out, flow = FJ.run_one(prep, dict(budget, max_s=float("inf")), seed, return_flow=True)
    log_q = out.pop("_log_q")
    if prep.get("truth") is not None:
        out.update(RC.test_metrics(log_q, prep["test_offset"], prep["dim"], False, prep["truth"]))
    out["_ll"] = np.asarray(log_q, np.float64) + prep["test_offset"]  # per row, for jf.compare
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    draw = jax.jit(lambda p, k, n: eqx.combine(p, static).sample(k, (n,)), static_argnums=2)
    out["samples"] = sample_counts(lambda k, n: draw(params, k, n), jax.random.key(seed + 99),
                                   num_samples(prep["dim"], n_samples, peer=True), prep["train"])
    out["seed"] = seed
    return out


def compare_with_peer(runs, name: str, seed: int, prep):
    """Each jaxflows model against flowjax's MAF on the same test rows of one seed:
    ``jaxflows.compare`` (paired difference of per-row log-likelihoods ± its standard
    error over rows, rows won).  Drops the per-row arrays from ``runs``."""
    import jaxflows as jf

    rows = {r["model"]: r.pop("_ll") for r in runs if "_ll" in r}
    peer = rows.get("flowjax_maf")
    out = []
    for model, ll in rows.items():
        if model == "flowjax_maf" or peer is None:
            continue
        ok = np.isfinite(ll) & np.isfinite(peer)
        c = jf.compare(ll[ok], peer[ok], dim=prep["dim"] if prep["bits_per_dim"] else None,
                       names=(model, "flowjax_maf"))
        c.update(dataset=name, seed=seed, model=model, peer="flowjax_maf",
                 rows_dropped_nonfinite=int((~ok).sum()))
        out.append(c)
    return out


def _csv(value, known, what):
    items = list(known) if value in (None, "all") else [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in known]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)}; known: {', '.join(known)}")
    return items


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.path.join(REPO, "..", "shared", "data"),
                    help="folder holding bsds300/, miniboone/, mnist/, uci/ (default ../shared/data)")
    ap.add_argument("--budget", default="full", choices=sorted(RC.BUDGETS))
    ap.add_argument("--datasets", default="all", help=f"comma list of {', '.join(RC.DATASETS)}")
    ap.add_argument("--models", default="all", help=f"comma list of {', '.join(RC.MODELS)}")
    ap.add_argument("--seeds", default="0,1,2", help="comma list of seeds (default 0,1,2)")
    ap.add_argument("--samples", type=int, default=1_000_000,
                    help="samples drawn per jaxflows model for the finiteness count (a tenth above 128 "
                         "dims; flowjax draws a tenth of the jaxflows count)")
    ap.add_argument("--out", default=None, help="output stem (default results/realdata-<budget>-<device>)")
    ap.add_argument("--maf-kwargs", type=json.loads, default=None, metavar="JSON",
                    help="keyword arguments for jf.maf over its defaults, e.g. '{\"input_bound\": 10}' "
                         "(an ablation in the report's protocol; recorded in the JSON's meta)")
    ap.add_argument("--render", nargs="+", metavar="JSON",
                    help="print the table of earlier result files (several: merged; with --out also "
                         "write it there; with --datasets only those datasets) and exit")
    a = ap.parse_args(argv)
    if a.render:
        report = merge_reports(a.render)
        if a.datasets != ap.get_default("datasets"):  # --datasets keeps those datasets' runs only
            keep = set(_csv(a.datasets, RC.DATASETS, "datasets"))
            report["runs"] = [r for r in report["runs"] if r["dataset"] in keep]
            report["comparisons"] = [c for c in report["comparisons"] if c["dataset"] in keep]
            report["datasets"] = {d: v for d, v in report["datasets"].items() if d in keep}
        table = RC.markdown(report)
        if a.out:  # the merged report, as a run writes one
            write_report(a.out, report, table)
        print(table)
        return report
    datasets = _csv(a.datasets, RC.DATASETS, "datasets")
    models = _csv(a.models, RC.MODELS, "models")
    seeds = [int(x) for x in a.seeds.split(",")]
    data_dir = os.path.abspath(a.data_dir)
    if not os.path.isdir(data_dir):
        raise SystemExit(f"--data-dir {data_dir} does not exist")

    import jax

    import jaxflows

    versions = {"jaxflows": jaxflows.__version__, "jax": jax.__version__}
    if "flowjax_maf" in models:
        from importlib.metadata import version

        versions.update({f"peer:{p}": version(p) for p in ("flowjax", "equinox", "paramax")})
    dev = jax.devices()[0]
    device = f"{dev.platform}:{dev.device_kind}"
    t_all = time.perf_counter()
    report = {
        "meta": {"budget": a.budget, "device": device, "machine": C.machine_info(),
                 "load_start": C.load_average(), "seeds": seeds, "data_dir": data_dir,
                 "command": "python benchmarks/realdata.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "versions": versions, "num_layers": RC.NUM_LAYERS, "mog_components": RC.MOG_COMPONENTS,
                 "maf_kwargs": a.maf_kwargs},
        "datasets": {}, "runs": [], "comparisons": [],
    }
    for name in datasets:
        for i, seed in enumerate(seeds):
            t0 = time.perf_counter()
            prep = RC.prepare(name, data_dir, a.budget, seed)
            report["datasets"][name] = {
                "dim": prep["dim"], "units": prep["units"], "budget": prep["budget"],
                "published": RC.PUBLISHED.get(name), "published_bpd": RC.PUBLISHED_BPD.get(name),
                "protocol": RC.PROTOCOL[name]}
            C.log(f"{name} seed {seed}: dim {prep['dim']}, train/val/test {len(prep['train'])}/"
                  f"{len(prep['val'])}/{len(prep['test'])}, prepared in {time.perf_counter() - t0:.1f} s")
            # flowjax and jaxflows interleaved, the order alternating between seeds
            order = models if i % 2 == 0 else models[::-1]
            seed_runs = []
            for model in order:
                try:
                    if model == "flowjax_maf":
                        r = run_flowjax(prep, prep["budget"], seed, a.samples)
                    else:
                        r = run_jaxflows(model, prep, prep["budget"], seed, a.samples, a.maf_kwargs)
                    kl = f", KL {r['kl']['mean']:.3f}" if "kl" in r else ""
                    C.log(f"  {model}: test LL {r['test_ll']['mean']:.3f}{kl} ({r['epochs_run']} epochs, "
                          f"{r['train_s']:.1f} s; samples {r['samples']['nonfinite']} non-finite, "
                          f"{r['samples']['far']} far of {r['samples']['n']})")
                except Exception as err:  # record it; the rest of the report still runs
                    r = {"library": "flowjax" if model == "flowjax_maf" else "jaxflows",
                         "model": model, "seed": seed, "error": f"{type(err).__name__}: {err}"}
                    C.log(f"  {model}: {r['error']}")
                r["dataset"] = name
                report["runs"].append(r)
                seed_runs.append(r)
            for c in compare_with_peer(seed_runs, name, seed, prep):
                report["comparisons"].append(c)
                C.log(f"  {c['model']} - flowjax_maf: {c['difference']:+.3f} ± {c['difference_se']:.3f} "
                      f"nats per row (paired over {c['n']} test rows), wins {c['wins_a']} / {c['wins_b']}")
    order = {m: i for i, m in enumerate(RC.MODELS)}
    dorder = {d: i for i, d in enumerate(RC.DATASETS)}
    report["runs"].sort(key=lambda r: (dorder[r["dataset"]], order[r["model"]], r.get("seed", 0)))
    report["meta"]["load_end"] = C.load_average()
    report["meta"]["total_s"] = time.perf_counter() - t_all

    stem = a.out or os.path.join(
        HERE, "results", f"realdata-{a.budget}-{C.slug(dev.platform if dev.platform == 'cpu' else dev.device_kind)}")
    table = RC.markdown(report)
    write_report(stem, report, table)
    print(table)
    return report


def write_report(stem: str, report, table: str) -> None:
    """``stem.json`` (the runs) and ``stem.md`` (their table)."""
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    C.write_json(stem + ".json", report)
    with open(stem + ".md", "w") as fh:
        fh.write(table + "\n")


def merge_reports(paths):
    """One report from several result files (e.g. models or seeds run separately): a later
    file's run for the same (dataset, model, seed) replaces an earlier one's, and a row-paired
    comparison is kept only while both of its runs are the ones it was computed from."""
    reports = []
    for path in paths:
        with open(path) as fh:
            reports.append(json.load(fh))
    merged = {"meta": dict(reports[0]["meta"]), "datasets": {}, "runs": []}
    runs, comps, source = {}, {}, {}
    for i, r in enumerate(reports):
        for x in r["runs"]:
            runs[(x["dataset"], x["model"], x.get("seed", 0))] = x
            source[(x["dataset"], x["model"], x.get("seed", 0))] = i
        for c in r.get("comparisons", []):
            comps[(c["dataset"], c["model"], c["seed"])] = (i, c)
        merged["datasets"].update(r["datasets"])
    merged["runs"] = list(runs.values())
    merged["comparisons"] = [c for (name, model, seed), (i, c) in comps.items()
                             if source.get((name, model, seed)) == i
                             and source.get((name, c.get("peer", "flowjax_maf"), seed)) == i]
    if len(reports) > 1:
        merged["meta"]["total_s"] = sum(r["meta"]["total_s"] for r in reports)
        merged["meta"]["seeds"] = sorted({x.get("seed", 0) for x in merged["runs"]})
        merged["meta"]["command"] = [r["meta"].get("command", r["meta"].get("note", "")) for r in reports]
    order = {d: i for i, d in enumerate(RC.DATASETS)}
    models = {m: i for i, m in enumerate(RC.MODELS)}
    merged["runs"].sort(key=lambda r: (order[r["dataset"]], models[r["model"]], r.get("seed", 0)))
    merged["datasets"] = {d: merged["datasets"][d] for d in sorted(merged["datasets"], key=order.get)}
    return merged


if __name__ == "__main__":
    main()
