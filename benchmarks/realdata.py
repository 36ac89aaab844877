"""Real-data density-estimation report: jaxflows (MAF, MAF MoG, RealNVP, NSF) and flowjax's MAF.

    .venv/bin/python benchmarks/realdata.py --budget full            # the report, ~40 min on 2 CPU cores
    .venv/bin/python benchmarks/realdata.py --budget small           # smoke test, a few minutes
    .venv/bin/python benchmarks/realdata.py --datasets miniboone,wine_red --models maf,flowjax_maf

Datasets (``--data-dir``, default ``../shared/data`` beside the repository;
nothing is copied into the repository): BSDS300 patches built by the
published recipe (``bsds300/make_patches.py``, subsampled), MINIBOONE
(train on ``val.npy``, test on the paper's ``test.npy``), UCI wine quality
red and white, scikit-learn's digits (dequantised), MNIST in bits/dim
(uniform dequantisation, logit transform, both in the log-det).  See
``_realdata_common.py`` for the preparation, units and budgets.

Each dataset is prepared once (standardised with its train rows' statistics)
and written to a temporary ``.npz``; the jaxflows models train in this
process with ``jaxflows.fit``, then flowjax's MAF trains in one subprocess of
the bench venv (``--bench-python``) on the same files.  Test log-likelihoods
are reported in the data's own units (the standardisation's and the logit
transform's log-Jacobians added), in nats ± 2 standard errors over test rows,
with the training wall time and the device.  Writes
``results/realdata-<budget>-<device>.json`` and ``.md`` and prints the table.

Budget: every model on a dataset has the same architecture, optimiser,
batch size, epoch cap, seconds cap and patience.  ``jaxflows.fit`` has no
seconds cap, so the jaxflows side sets the epoch count from a short
calibration fit (three epochs of up to 8 batches, whose compiled step the
real fit reuses; its time is counted in ``train_s``): ``epochs = min(cap,
floor(seconds left / estimated epoch seconds))``, at least 1.

JSON: ``meta`` (budget, device, machine, load averages, versions, command,
total seconds), ``datasets`` (dim, units, sizes and budget, published
figures, protocol note) and ``runs``: per (dataset, model) ``test_ll`` and,
for images, ``test_bpd`` (``mean``, ``two_se``, ``median``, ``n``,
``nonfinite``), ``train_s`` (construction + calibration + fit, compiles
included), ``eval_s`` (test pass), ``epochs_run``, ``best_epoch`` (0-based),
``stop_reason`` (``epochs``, ``seconds`` or ``patience``),
``best_val_nll_std`` (validation NLL in the model's standardised units),
``n_params``, the per-epoch ``history`` and ``device``; a failed run has
``error`` instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
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


def build_flow(model: str, dim: int, hidden):
    """The jaxflows model ``model`` at the dataset's architecture (5 layers)."""
    import jaxflows as jf
    from jaxflows import flows
    from jaxflows.distributions import mixture_of_gaussians

    kw = dict(num_layers=RC.NUM_LAYERS, hidden=tuple(hidden))
    if model == "maf":
        return jf.maf(dim, **kw)
    if model == "maf_mog":
        return jf.maf(dim, base=mixture_of_gaussians(dim, RC.MOG_COMPONENTS), **kw)
    if model == "realnvp":
        return flows.realnvp(dim, **kw)
    if model == "nsf":
        return flows.nsf(dim, **kw)  # autoregressive RQ-NSF, 8 bins on [-3, 3]
    raise ValueError(f"unknown jaxflows model {model!r}; known: {', '.join(JAXFLOWS_MODELS)}")


def run_jaxflows(model: str, prep, budget, seed: int):
    import jax
    import jax.numpy as jnp
    import optax

    import jaxflows as jf

    train, val, test, dim = prep["train"], prep["val"], prep["test"], prep["dim"]
    t_start = time.perf_counter()
    flow = build_flow(model, dim, budget["hidden"])
    key_init, key_fit = jax.random.split(jax.random.key(seed))
    params0 = flow.init(key_init)
    n_params = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(params0)))
    opt = optax.adam(budget["lr"])  # one object: fit's compiled step is memoised on it
    batch = min(int(budget["batch"]), len(train))
    steps = len(train) // batch
    val_batches = math.ceil(len(val) / batch)

    # calibration: 3 epochs of k steps and one validation batch; the first compiles,
    # the faster of the other two (robust to a load spike) sets the step time
    k = min(steps, 8)
    _, cal = jf.fit(flow, params0, train[: k * batch], key=key_fit, optimizer=opt,
                    batch_size=batch, num_epochs=3, val_data=val[:batch], patience=None,
                    progress=False)
    unit = min(cal["epoch_seconds"][1:]) / (k + 1 / 3)  # a validation batch ~ 1/3 of a step
    est_epoch = unit * (steps + val_batches / 3)
    calib_s = time.perf_counter() - t_start
    left = float(budget["max_s"]) - calib_s
    epochs = int(max(1, min(int(budget["epochs"]), math.floor(left / est_epoch))))

    params, hist = jf.fit(flow, params0, train, key=key_fit, optimizer=opt, batch_size=batch,
                          num_epochs=epochs, val_data=val, patience=int(budget["patience"]),
                          progress=False)
    jax.block_until_ready(params)
    train_s = time.perf_counter() - t_start

    t0 = time.perf_counter()
    log_prob = jax.jit(flow.log_prob)
    rows, eb = [], 1000
    for start in range(0, len(test), eb):
        idx = np.arange(start, start + eb)
        m = int((idx < len(test)).sum())
        rows.append(np.asarray(log_prob(params, jnp.asarray(test[np.minimum(idx, len(test) - 1)])))[:m])
    eval_s = time.perf_counter() - t0
    out = RC.test_metrics(np.concatenate(rows), prep["test_offset"], dim, prep["bits_per_dim"])
    if hist["stopped_early"]:
        reason = "patience"
    elif epochs < int(budget["epochs"]):
        reason = "seconds"
    else:
        reason = "epochs"
    dev = jax.devices()[0]
    out.update(
        library="jaxflows", model=model, epochs_run=hist["num_epochs_run"],
        epochs_planned=epochs, best_epoch=int(hist["best_epoch"]),
        best_val_nll_std=float(min(hist["val_loss"])), stopped_early=hist["stopped_early"],
        stop_reason=reason, train_s=train_s, calib_s=calib_s, est_epoch_s=est_epoch,
        eval_s=eval_s, n_params=n_params,
        epoch_s_median=float(np.median(hist["epoch_seconds"])),
        skipped_steps=int(sum(hist["skipped_steps"])),
        history={k_: hist[k_] for k_ in ("train_loss", "val_loss", "epoch_seconds")},
        device=f"{dev.platform}:{dev.device_kind}",
    )
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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--bench-python", default=os.path.join(REPO, ".venv-bench", "bin", "python"),
                    help="python of the venv with flowjax (for flowjax_maf)")
    ap.add_argument("--render", nargs="+", metavar="JSON",
                    help="print the table of earlier result files (several: merged) and exit")
    a = ap.parse_args(argv)
    if a.render:
        report = merge_reports(a.render)
        print(RC.markdown(report))
        return report
    datasets = _csv(a.datasets, RC.DATASETS, "datasets")
    models = _csv(a.models, RC.MODELS, "models")
    data_dir = os.path.abspath(a.data_dir)
    if not os.path.isdir(data_dir):
        raise SystemExit(f"--data-dir {data_dir} does not exist")

    import jax

    import jaxflows

    dev = jax.devices()[0]
    device = f"{dev.platform}:{dev.device_kind}"
    t_all = time.perf_counter()
    report = {
        "meta": {"budget": a.budget, "device": device, "machine": C.machine_info(),
                 "load_start": C.load_average(), "seed": a.seed, "data_dir": data_dir,
                 "command": "python benchmarks/realdata.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "versions": {"jaxflows": jaxflows.__version__, "jax": jax.__version__},
                 "num_layers": RC.NUM_LAYERS, "mog_components": RC.MOG_COMPONENTS},
        "datasets": {}, "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="realdata-") as tmp:
        jobs = []
        for name in datasets:
            t0 = time.perf_counter()
            prep = RC.prepare(name, data_dir, a.budget, a.seed)
            path = os.path.join(tmp, f"{name}.npz")
            RC.save_prepared(path, prep)
            jobs.append({"dataset": name, "path": path, "budget": prep["budget"], "seed": a.seed})
            report["datasets"][name] = {
                "dim": prep["dim"], "units": prep["units"], "budget": prep["budget"],
                "standardiser_log_det": prep["standardiser_log_det"],
                "prepare_s": time.perf_counter() - t0,
                "published": RC.PUBLISHED.get(name), "published_bpd": RC.PUBLISHED_BPD.get(name),
                "protocol": RC.PROTOCOL[name]}
            C.log(f"{name}: dim {prep['dim']}, train/val/test {len(prep['train'])}/"
                  f"{len(prep['val'])}/{len(prep['test'])}, prepared in {time.perf_counter() - t0:.1f} s")
            for model in models:
                if model not in JAXFLOWS_MODELS:
                    continue
                try:
                    r = run_jaxflows(model, prep, prep["budget"], a.seed)
                    C.log(f"  {model}: test LL {r['test_ll']['mean']:.3f} ± {r['test_ll']['two_se']:.3f}"
                          f" ({r['epochs_run']} epochs, {r['train_s']:.1f} s, stop: {r['stop_reason']})")
                except Exception as err:  # record it; the rest of the report still runs
                    r = {"library": "jaxflows", "model": model, "error": f"{type(err).__name__}: {err}"}
                    C.log(f"  {model}: {r['error']}")
                r["dataset"] = name
                report["runs"].append(r)
        if "flowjax_maf" in models:
            report["runs"] += run_flowjax(a.bench_python, jobs, tmp, report)
    order = {m: i for i, m in enumerate(RC.MODELS)}
    dorder = {d: i for i, d in enumerate(datasets)}
    report["runs"].sort(key=lambda r: (dorder[r["dataset"]], order[r["model"]]))
    report["meta"]["load_end"] = C.load_average()
    report["meta"]["total_s"] = time.perf_counter() - t_all

    stem = f"realdata-{a.budget}-{C.slug(dev.platform if dev.platform == 'cpu' else dev.device_kind)}"
    os.makedirs(a.out_dir, exist_ok=True)
    C.write_json(os.path.join(a.out_dir, stem + ".json"), report)
    table = RC.markdown(report)
    with open(os.path.join(a.out_dir, stem + ".md"), "w") as fh:
        fh.write(table + "\n")
    print(table)
    return report


def merge_reports(paths):
    """One report from several result files (e.g. datasets run in separate sessions):
    runs and datasets concatenated, total seconds summed, load averages listed."""
    reports = []
    for path in paths:
        with open(path) as fh:
            reports.append(json.load(fh))
    merged = {"meta": dict(reports[0]["meta"]), "datasets": {}, "runs": []}
    for r in reports:  # a later file's datasets replace an earlier file's
        names = set(r["datasets"])
        merged["runs"] = [x for x in merged["runs"] if x["dataset"] not in names] + r["runs"]
        merged["datasets"].update(r["datasets"])
    if len(reports) > 1:
        merged["meta"]["total_s"] = sum(r["meta"]["total_s"] for r in reports)
        merged["meta"]["load_start"] = [r["meta"]["load_start"] for r in reports]
        merged["meta"]["load_end"] = [r["meta"]["load_end"] for r in reports]
        merged["meta"]["command"] = [r["meta"]["command"] for r in reports]
    order = {d: i for i, d in enumerate(RC.DATASETS)}
    models = {m: i for i, m in enumerate(RC.MODELS)}
    merged["runs"].sort(key=lambda r: (order[r["dataset"]], models[r["model"]]))
    return merged


def run_flowjax(python: str, jobs, tmp: str, report):
    """flowjax's MAF on every prepared dataset, in one subprocess of the bench venv."""
    if not os.path.exists(python):
        C.log(f"flowjax skipped: {python} not found (pass --bench-python)")
        return [{"dataset": j["dataset"], "library": "flowjax", "model": "flowjax_maf",
                 "error": f"no bench venv at {python}"} for j in jobs]
    jobs_path, out_path = os.path.join(tmp, "jobs.json"), os.path.join(tmp, "flowjax.json")
    with open(jobs_path, "w") as fh:
        json.dump(jobs, fh, default=C._json_default)
    cmd = [python, os.path.join(HERE, "realdata_flowjax.py"), "--jobs", jobs_path, "--out", out_path]
    proc = subprocess.run(cmd)
    if proc.returncode != 0 or not os.path.exists(out_path):
        return [{"dataset": j["dataset"], "library": "flowjax", "model": "flowjax_maf",
                 "error": f"realdata_flowjax.py exited with {proc.returncode}"} for j in jobs]
    with open(out_path) as fh:
        out = json.load(fh)
    report["meta"]["versions"].update({f"peer:{k}": v for k, v in out["versions"].items()})
    return out["runs"]


if __name__ == "__main__":
    main()
