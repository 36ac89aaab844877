"""Real-data report: datasets, budgets, units and statistics (stdlib + NumPy only).

Both sides of the report import this file: ``realdata.py`` (jaxflows, project
venv) prepares every dataset once, writes the arrays to ``.npz`` files, and
``realdata_flowjax.py`` (bench venv, no scikit-learn) reads the same files, so
the two libraries train and test on identical bytes.

Units.  A model sees ``z = T(x)`` (standardised, and for MNIST dequantised and
logit-transformed); the report gives ``log p(x) = log q(T(x)) + log|det dT/dx|``
in the data's own units (see :func:`prepare`'s ``test_offset``):

- MINIBOONE: the units of ``val.npy`` / ``test.npy``, which are the MAF paper's
  (its authors standardised with their train+validation statistics), so our
  numbers are comparable with the paper's in units.
- BSDS300: patch units of the published recipe (``(pixel + u) / 256``, patch
  mean removed, 63 dims), the units of the paper's file.
- Wine: the CSV's physical units (11 features; ``quality`` dropped).
- Digits: dequantised pixel units ``x + u``, ``u ~ U[0, 1)``, pixels ``0..16``.
- MNIST: dequantised pixel units ``p + u`` in ``[0, 256)``; the model sees
  ``logit(lambda + (1 - 2 lambda) (p + u) / 256)`` with ``lambda = 1e-6`` (the
  MAF paper's MNIST value), standardised; bits/dim ``= -log p / (784 ln 2)``.

For dequantised integer data with unit-width bins (digits, MNIST) the
continuous log-density lower-bounds the discrete log-probability, so bits/dim
upper-bounds the discrete code length.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
from typing import Any, Dict, List, Optional

import numpy as np

REAL_DATASETS = ("bsds300", "miniboone", "wine_red", "wine_white", "digits", "mnist")
# targets with an exact density (jaxflows.targets): the report gives KL(p || q) to the truth
TARGET_DATASETS = ("ring2", "banana8", "funnel4", "mog16")
DATASETS = REAL_DATASETS + TARGET_DATASETS
MODELS = ("maf", "maf_mog", "realnvp", "nsf", "flowjax_maf")
MODEL_LABELS = {
    "maf": "MAF(5)",
    "maf_mog": "MAF MoG(5)",
    "realnvp": "RealNVP(5)",
    "nsf": "NSF(5), autoregressive",
    "flowjax_maf": "flowjax MAF(5)",
}
MOG_COMPONENTS = 10  # the MAF paper's MoG base has 10 components
MNIST_LAMBDA = 1e-6
LN2 = math.log(2.0)

# --------------------------------------------------------------------------
# Budgets.  Every model on a dataset gets the same architecture (5 layers,
# MADE / coupling / conditioner MLP with ``hidden`` units), optimiser (Adam,
# ``lr``), batch size and epoch cap; ``patience`` is early stopping on the
# validation loss; the params of the best validation epoch are tested.
# ``n_*``: row counts (None: all rows the source has).
# --------------------------------------------------------------------------

_TARGET_SMALL = dict(hidden=(32, 32), n_train=2000, n_val=500, n_test=2000, epochs=3, batch=256,
                     lr=1e-3, patience=5)
_TARGET_FULL = dict(hidden=(64, 64), n_train=5000, n_val=1000, n_test=10000, epochs=60,
                    batch=256, lr=1e-3, patience=10)
BUDGETS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "small": {  # smoke test: a few minutes for everything
        "bsds300": dict(hidden=(64, 64), n_train=4000, n_val=500, n_test=2000,
                        epochs=2, batch=256, lr=1e-3, patience=5),
        "miniboone": dict(hidden=(64, 64), epochs=3, batch=256, lr=1e-3, patience=5),
        "wine_red": dict(hidden=(32, 32), epochs=3, batch=128, lr=1e-3, patience=5),
        "wine_white": dict(hidden=(32, 32), epochs=3, batch=128, lr=1e-3, patience=5),
        "digits": dict(hidden=(64, 64), epochs=3, batch=128, lr=1e-3, patience=5),
        # a MADE over 784 dims needs >= 783 hidden units (jaxflows enforces it)
        "mnist": dict(hidden=(800,), n_train=300, n_val=128, n_test=200,
                      epochs=1, batch=128, lr=1e-3, patience=5),
        **{t: dict(_TARGET_SMALL) for t in TARGET_DATASETS},
    },
    "full": {  # the report: epoch caps (no seconds caps: a shared machine's load must not decide)
        "bsds300": dict(hidden=(128, 128), n_train=20000, n_val=2000, n_test=20000,
                        epochs=50, batch=256, lr=1e-3, patience=10),
        "miniboone": dict(hidden=(256, 256), epochs=200, batch=256, lr=1e-3, patience=15),
        "wine_red": dict(hidden=(64, 64), epochs=300, batch=128, lr=1e-3, patience=20),
        "wine_white": dict(hidden=(64, 64), epochs=200, batch=128, lr=1e-3, patience=20),
        "digits": dict(hidden=(128, 128), epochs=200, batch=128, lr=1e-3, patience=15),
        # one hidden layer of 1024 as in the MAF paper (a MADE over 784 dims needs >= 783)
        "mnist": dict(hidden=(1024,), n_train=None, n_val=600, n_test=5000,
                      epochs=12, batch=128, lr=1e-3, patience=3),
        **{t: dict(_TARGET_FULL) for t in TARGET_DATASETS},
    },
}
NUM_LAYERS = 5

# Published test log-likelihoods (nats, higher is better) on the *full*
# protocol (../shared/data/README.md; MAF paper, Papamakarios et al. 2017,
# table 2; NSF: Durkan et al. 2019, autoregressive RQ-NSF), and MNIST
# bits/pixel (MAF paper, unconditional MNIST, appendix).  flowjax's MAF is
# compared with the paper's MAF(5).
PUBLISHED = {
    "bsds300": {"maf": 155.69, "maf_mog": 156.36, "realnvp": 152.97, "nsf": 157.31,
                "flowjax_maf": 155.69},
    "miniboone": {"maf": -11.75, "maf_mog": -11.68, "realnvp": -13.55, "nsf": -9.22,
                  "flowjax_maf": -11.75},
}
PUBLISHED_BPD = {"mnist": {"maf": 1.89, "flowjax_maf": 1.89}}

PROTOCOL = {
    "bsds300": "paper: 1,000,000 train / 50,000 val / 250,000 test patches, MADE 512x2, batch "
               "norm, trained to convergence. Here: patches by the same recipe but subsampled "
               "(sizes below), smaller nets, minutes of CPU: NOT the paper's protocol.",
    "miniboone": "paper: trained on 29,556 rows. Here: trained on val.npy (3,284 rows, 10% of it "
                 "held out for early stopping), tested on the paper's exact test.npy, same units: "
                 "small-data regime, NOT the paper's protocol.",
    "wine_red": "no published figure; random 70/10/20 split, quality column dropped.",
    "wine_white": "no published figure; random 70/10/20 split, quality column dropped.",
    "digits": "no published figure; sklearn digits dequantised, random 70/10/20 split.",
    **{t: "exact-density target from jaxflows.targets; fresh samples per seed; KL(p||q) = "
          "E_p[log p - log q] on the test rows (0 is a perfect fit)." for t in TARGET_DATASETS},
    "mnist": "paper: 50,000 train images, MADE 1024, to convergence. Here: trained on the 6,000 "
             "MNIST_val images (600 held out), tested on 5,000 of the official 10,000 test "
             "images (a fixed random half: the NSF's test pass is expensive on CPU), a few CPU "
             "minutes: NOT the paper's protocol.",
}


# --------------------------------------------------------------------------
# Standardisation and statistics
# --------------------------------------------------------------------------

def fit_standardiser(x: np.ndarray):
    """``(mean, scale)`` per column of the train rows (scale 1 for constant columns)."""
    x = np.asarray(x, np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(scale > 0, scale, 1.0)


def summarize(values: np.ndarray) -> Dict[str, float]:
    """Mean and two standard errors of per-row values (``std(ddof=1) / sqrt(n)``)."""
    v = np.asarray(values, np.float64)
    finite = np.isfinite(v)
    n = int(finite.sum())
    mean = float(v[finite].mean()) if n else float("nan")
    se = float(v[finite].std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    median = float(np.median(v[finite])) if n else float("nan")
    return {"mean": mean, "two_se": 2.0 * se, "median": median, "n": n,
            "nonfinite": int((~finite).sum())}


def _split(n: int, fractions, seed: int):
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum((0.0,) + tuple(fractions)) * n).astype(int)
    bounds[-1] = n
    return [perm[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _subsample(x: np.ndarray, n: Optional[int], rng) -> np.ndarray:
    if n is None or n >= len(x):
        return x
    return x[np.sort(rng.choice(len(x), size=n, replace=False))]


# --------------------------------------------------------------------------
# Raw sources (each returns float64 arrays in the data's own units)
# --------------------------------------------------------------------------

def _bsds300(data_dir: str, b: Dict[str, Any], seed: int):
    """Patches by ``bsds300/make_patches.py`` (imported from the data folder: its
    own code, pillow needed), at the budget's sizes."""
    path = os.path.join(data_dir, "bsds300", "make_patches.py")
    spec = importlib.util.spec_from_file_location("_bsds300_make_patches", path)
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    rng = np.random.default_rng(seed)
    train_imgs = mp.load_gray(os.path.join(data_dir, "bsds300", "train"))
    test_imgs = mp.load_gray(os.path.join(data_dir, "bsds300", "test"))
    if len(train_imgs) != 200 or len(test_imgs) != 100:
        raise ValueError(f"{data_dir}/bsds300 should hold 200 train and 100 test JPEGs, found "
                         f"{len(train_imgs)} and {len(test_imgs)}")
    trn = mp.sample_patches(train_imgs, b["n_train"], rng)
    val = mp.sample_patches(train_imgs, b["n_val"], rng)
    tst = mp.sample_patches(test_imgs, b["n_test"], rng)
    return trn.astype(np.float64), val.astype(np.float64), tst.astype(np.float64)


def _miniboone(data_dir: str, b: Dict[str, Any], seed: int):
    val = np.load(os.path.join(data_dir, "miniboone", "val.npy")).astype(np.float64)
    test = np.load(os.path.join(data_dir, "miniboone", "test.npy")).astype(np.float64)
    tr, va = _split(len(val), (0.9, 0.1), seed)
    return val[tr], val[va], test


def _wine(data_dir: str, colour: str, seed: int):
    path = os.path.join(data_dir, "uci", f"wine_quality_{colour}", f"winequality-{colour}.csv")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    header, body = rows[0], rows[1:]
    if header[-1].strip('"') != "quality":
        raise ValueError(f"{path}: expected 'quality' as the last column, got {header[-1]!r}")
    x = np.asarray([[float(v) for v in r[:-1]] for r in body if r], np.float64)
    tr, va, te = _split(len(x), (0.7, 0.1, 0.2), seed)
    return x[tr], x[va], x[te]


def _digits(seed: int):
    from sklearn.datasets import load_digits  # only the jaxflows side prepares data

    x = np.asarray(load_digits().data, np.float64)
    x = x + np.random.default_rng(seed + 1).uniform(0.0, 1.0, size=x.shape)
    tr, va, te = _split(len(x), (0.7, 0.1, 0.2), seed)
    return x[tr], x[va], x[te]


def _mnist(data_dir: str, b: Dict[str, Any], seed: int):
    """Dequantised pixels ``p + u`` in ``[0, 256)``, flattened to 784."""
    rng = np.random.default_rng(seed + 2)

    def load(name):
        with np.load(os.path.join(data_dir, "mnist", name)) as f:
            return f["data"].reshape(len(f["data"]), -1).astype(np.float64)

    pool, test = load("MNIST_val.npz"), load("MNIST_test.npz")
    tr, va = _split(len(pool), (1.0 - b["n_val"] / len(pool), b["n_val"] / len(pool)), seed)
    trn, val = pool[tr], pool[va]
    trn = _subsample(trn, b.get("n_train"), rng)
    test = _subsample(test, b.get("n_test"), rng)
    val = _subsample(val, b.get("n_val"), rng)
    deq = [a + rng.uniform(0.0, 1.0, size=a.shape) for a in (trn, val, test)]
    return tuple(deq)


def _target(name: str, b: Dict[str, Any], seed: int):
    """Fresh samples of an exact-density target and the exact log p of the test rows."""
    import jax  # the targets are JAX code (jaxflows.targets)
    from jaxflows.targets import TARGETS

    t = TARGETS[name]()
    keys = jax.random.split(jax.random.PRNGKey(10_000 + seed), 3)
    trn, val, tst = (np.asarray(t.sample(k, n), np.float64)
                     for k, n in zip(keys, (b["n_train"], b["n_val"], b["n_test"])))
    return trn, val, tst, np.asarray(t.log_prob(tst), np.float64)


def logit_transform(x256: np.ndarray, lam: float = MNIST_LAMBDA):
    """``y = logit(s)``, ``s = lam + (1 - 2 lam) x256 / 256``, and the exact per-row
    ``log|det dy/dx256| = sum_i [log(1 - 2 lam) - log 256 - log s_i - log(1 - s_i)]``."""
    s = lam + (1.0 - 2.0 * lam) * (x256 / 256.0)
    y = np.log(s) - np.log1p(-s)
    log_det = np.sum(math.log(1.0 - 2.0 * lam) - math.log(256.0) - np.log(s) - np.log1p(-s),
                     axis=1)
    return y, log_det


# --------------------------------------------------------------------------
# prepare / save / load
# --------------------------------------------------------------------------

def prepare(name: str, data_dir: str, budget: str = "full", seed: int = 0) -> Dict[str, Any]:
    """Train / validation / test arrays as the model sees them, plus units.

    Returns a dict with ``train``, ``val``, ``test`` (float32 ``(n, dim)``,
    standardised with the train rows' mean and scale), ``test_offset``
    (float64 ``(n_test,)``: ``log|det dT/dx|`` per test row, added to the
    model's log-density to get nats in the data's own units), ``dim``,
    ``units``, ``bits_per_dim`` (whether bits/dim is meaningful) and ``budget``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    b = dict(BUDGETS[budget][name])
    per_row, truth = None, None
    if name in TARGET_DATASETS:
        trn, val, tst, truth = _target(name, b, seed)
        units = "the target's own units (exact density known)"
    elif name == "bsds300":
        trn, val, tst = _bsds300(data_dir, b, seed)
        units = "patch units ((pixel + u) / 256, patch mean removed)"
    elif name == "miniboone":
        trn, val, tst = _miniboone(data_dir, b, seed)
        units = "units of val.npy/test.npy (the MAF paper's standardised units)"
    elif name in ("wine_red", "wine_white"):
        trn, val, tst = _wine(data_dir, name.split("_")[1], seed)
        units = "the CSV's physical units"
    elif name == "digits":
        trn, val, tst = _digits(seed)
        units = "dequantised pixel units (0..16 + U[0,1))"
    else:  # mnist
        trn, val, tst = _mnist(data_dir, b, seed)
        (trn, _), (val, _), (tst, per_row) = (logit_transform(a) for a in (trn, val, tst))
        units = "dequantised pixel units (0..255 + U[0,1)); logit with lambda=1e-6 in the log-det"
    mean, scale = fit_standardiser(trn)
    std_log_det = -float(np.sum(np.log(scale)))
    offset = np.full(len(tst), std_log_det) + (0.0 if per_row is None else per_row)
    z = [((a - mean) / scale).astype(np.float32) for a in (trn, val, tst)]
    b.update(n_train=len(trn), n_val=len(val), n_test=len(tst))
    return {
        "name": name, "train": z[0], "val": z[1], "test": z[2], "test_offset": offset,
        "dim": int(trn.shape[1]), "units": units, "bits_per_dim": name in ("digits", "mnist"),
        "budget": b, "standardiser_log_det": std_log_det, "truth": truth,
    }


def test_metrics(log_q: np.ndarray, offset: np.ndarray, dim: int, bits: bool,
                 truth: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Per-row test log-likelihood in the data's units (``log_q + offset``),
    its mean +- 2 SE, bits/dim ``-ll / (dim ln 2)`` when ``bits``, and
    ``KL(p || q) = mean(log p - ll)`` when the exact ``truth = log p`` is known."""
    ll = np.asarray(log_q, np.float64) + np.asarray(offset, np.float64)
    out = {"test_ll": summarize(ll)}
    if bits:
        out["test_bpd"] = summarize(-ll / (dim * LN2))
    if truth is not None:
        out["kl"] = summarize(np.asarray(truth, np.float64) - ll)
    return out


# --------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------

def _fmt_pm(s: Optional[Dict[str, float]], digits: int = 2) -> str:
    if not s or not np.isfinite(s.get("mean", float("nan"))):
        return "failed" if s is not None else "-"
    bad = f" ({s['nonfinite']} non-finite rows dropped)" if s.get("nonfinite") else ""
    return f"{s['mean']:.{digits}f} ± {s['two_se']:.{digits}f}{bad}"


def over_seeds(values) -> Dict[str, float]:
    """Mean and standard error (``std(ddof=1) / sqrt(n)``) of per-seed values."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    n = len(v)
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(v.mean()) if n else float("nan"), "se": se, "n": n}


def _fmt_seeds(s: Dict[str, float], digits: int = 2) -> str:
    if not s["n"] or not np.isfinite(s["mean"]):
        return "-"
    se = f"{s['se']:.{digits}f}" if np.isfinite(s["se"]) else "n/a"
    return f"{s['mean']:.{digits}f} ± {se}"


def aggregate(report: Dict[str, Any]):
    """Group runs by (dataset, model): per-seed means, then mean ± SE over seeds."""
    groups: Dict[tuple, list] = {}
    for r in report["runs"]:
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    rows = []
    for (name, model), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        row = {"dataset": name, "model": model, "library": rs[0]["library"],
               "seeds": sorted(r.get("seed", 0) for r in ok),
               "errors": [r["error"] for r in rs if "error" in r]}
        for key in ("test_ll", "test_bpd", "kl"):
            row[key] = over_seeds([r[key]["mean"] for r in ok if key in r])
        for key in ("train_s", "epochs_run"):
            row[key] = float(np.mean([r[key] for r in ok])) if ok else float("nan")
        row["best_epoch"] = float(np.mean([r["best_epoch"] + 1 for r in ok])) if ok else float("nan")
        samp = [r["samples"] for r in ok if "samples" in r]
        row["samples"] = {k: int(sum(x[k] for x in samp)) for k in ("n", "nonfinite", "far")} if samp else None
        rows.append(row)
    return rows


def verdict(per_seed, over) -> str:
    """``better`` / ``worse`` when the mean over seeds of the paired differences is more
    than 2 standard errors (over seeds) from 0 AND every seed's row-paired difference is
    more than 2 standard errors (over rows) from 0 on the same side; else ``level``."""
    z = [c["z"] for c in per_seed]
    if len(per_seed) > 1 and np.isfinite(over["se"]) and abs(over["mean"]) > 2 * over["se"]:
        if over["mean"] > 0 and all(v >= 2 for v in z):
            return "better"
        if over["mean"] < 0 and all(v <= -2 for v in z):
            return "worse"
    return "level (within noise)"


def comparison_lines(report: Dict[str, Any]) -> List[str]:
    """The "which is better" table: each jaxflows model against flowjax's MAF,
    ``jaxflows.compare`` on the same test rows per seed, then over seeds."""
    comps = report.get("comparisons") or []
    if not comps:
        return []
    lines = ["", "Each jaxflows model against flowjax's MAF on the same test rows "
             "(`jaxflows.compare`: per seed, the paired difference of per-row log-likelihoods "
             "± its standard error over rows, and the rows each model scores higher on; then the "
             "mean of the seeds' differences ± the standard error over seeds). Verdict: "
             "`better`/`worse` only when the mean over seeds is more than 2 SE from 0 and every "
             "seed's row-paired difference is more than 2 SE from 0 on the same side.", "",
             "| dataset | model − flowjax MAF | per seed: difference ± SE (rows won / lost) "
             "| over seeds | verdict |", "|---|---|---|---|---|"]
    groups: Dict[tuple, list] = {}
    for c in comps:
        groups.setdefault((c["dataset"], c["model"]), []).append(c)
    dorder = {d: i for i, d in enumerate(DATASETS)}
    morder = {m: i for i, m in enumerate(MODELS)}
    for (name, model) in sorted(groups, key=lambda k: (dorder.get(k[0], 99), morder.get(k[1], 99))):
        cs = sorted(groups[(name, model)], key=lambda c: c["seed"])
        seeds = "; ".join(f"{c['difference']:+.3f} ± {c['difference_se']:.3f} "
                          f"({c['wins_a']} / {c['wins_b']})" for c in cs)
        over = over_seeds([c["difference"] for c in cs])
        over_s = (f"{over['mean']:+.3f} ± {over['se']:.3f}" if np.isfinite(over["se"])
                  else f"{over['mean']:+.3f} (one seed)")
        lines.append(f"| {name} | {MODEL_LABELS[model]} | {seeds} | {over_s} "
                     f"| {verdict(cs, over)} |")
    return lines


def seed_paired_lines(report: Dict[str, Any]) -> List[str]:
    """Each jaxflows model against flowjax's MAF paired by seed (same split, same test
    rows): per seed the difference of the two mean test log-likelihoods, then their mean ±
    the standard error over seeds.  Needs no per-row log-likelihoods, so it also pairs runs
    made in separate processes (a model re-run with new defaults against the stored peer)."""
    means = {(r["dataset"], r["model"], r.get("seed", 0)): r["test_ll"]["mean"]
             for r in report["runs"] if "test_ll" in r}
    lines = []
    for (name, model) in sorted({(d, m) for d, m, _ in means if m != "flowjax_maf"},
                                key=lambda k: (DATASETS.index(k[0]), MODELS.index(k[1]))):
        seeds = sorted(s for d, m, s in means if (d, m) == (name, model)
                       and (name, "flowjax_maf", s) in means)
        if not seeds:
            continue
        diffs = [means[(name, model, s)] - means[(name, "flowjax_maf", s)] for s in seeds]
        over = over_seeds(diffs)
        over_s = f"{over['mean']:+.3f} ± {over['se']:.3f}" if np.isfinite(over["se"]) else f"{over['mean']:+.3f}"
        lines.append(f"| {name} | {MODEL_LABELS[model]} | {', '.join(f'{v:+.2f}' for v in diffs)} "
                     f"| {over_s} ({len(seeds)} seeds) |")
    if not lines:
        return []
    return ["", "Paired by seed (the difference of the seed means, then mean ± SE over seeds):", "",
            "| dataset | model − flowjax MAF | per seed | over seeds |", "|---|---|---|---|"] + lines


def markdown(report: Dict[str, Any]) -> str:
    """One table (mean ± SE over seeds), then each dataset's protocol note."""
    meta = report["meta"]
    lines = [
        f"Density estimation on real data and exact-density targets, budget `{meta['budget']}`, "
        f"device: {meta['device']} ({meta['machine']['cpu']}, {meta['machine']['usable_cores']} "
        f"cores). Seeds {meta.get('seeds')}. Total wall time {meta.get('total_s', float('nan')):.0f} s.",
        "",
        "Test log-likelihood in nats (higher is better) in the data's own units: the mean over "
        "seeds of each seed's mean over test rows, ± the standard error over seeds. `KL` is "
        "KL(p‖q) = E_p[log p − log q] in nats for targets with an exact density (lower is "
        "better, 0 is perfect). Bits/dim (lower is better) for dequantised images. `samples`: "
        "non-finite samples and finite samples beyond 100 training standard deviations, of all "
        "drawn (summed over seeds). `published` is the paper's figure on the full protocol: our "
        "protocol differs everywhere (see the protocol notes below), so it is context, not a target.",
        "",
        "| dataset | dim | train/val/test rows | model | test LL (nats) | KL to truth | bits/dim "
        "| samples: non-finite / far of n | published | epochs (best) | train s | budget |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in aggregate(report):
        d = report["datasets"][r["dataset"]]
        b = d["budget"]
        rows = f"{b['n_train']}/{b['n_val']}/{b['n_test']}"
        pub = PUBLISHED.get(r["dataset"], {}).get(r["model"])
        pub_bpd = PUBLISHED_BPD.get(r["dataset"], {}).get(r["model"])
        pub_s = f"{pub:.2f}" if pub is not None else (f"{pub_bpd:.2f} bits/dim" if pub_bpd else "-")
        label = MODEL_LABELS[r["model"]]
        if not r["seeds"]:
            lines.append(f"| {r['dataset']} | {d['dim']} | {rows} | {label} | error: "
                         f"{r['errors'][0][:60]} | - | - | - | {pub_s} | - | - | - |")
            continue
        bud = f"h={'x'.join(map(str, b['hidden']))}, bs {b['batch']}, lr {b['lr']:g}, ≤{b['epochs']} ep"
        smp = r["samples"]
        smp_s = f"{smp['nonfinite']} / {smp['far']} of {smp['n']:,}" if smp else "-"
        err = f" ({len(r['errors'])} failed)" if r["errors"] else ""
        lines.append(
            f"| {r['dataset']} | {d['dim']} | {rows} | {label} | {_fmt_seeds(r['test_ll'])}{err} "
            f"| {_fmt_seeds(r['kl'], 3)} | {_fmt_seeds(r['test_bpd'], 3)} | {smp_s} | {pub_s} "
            f"| {r['epochs_run']:.0f} ({r['best_epoch']:.0f}) | {r['train_s']:.1f} | {bud} |")
    lines += comparison_lines(report) + seed_paired_lines(report)
    lines += ["", "Notes:"]
    for name, d in report["datasets"].items():
        lines.append(f"- **{name}** ({d['units']}): {PROTOCOL[name]}")
    lines.append("- Each model trains until the epoch cap or early stopping (patience on the "
                 "validation NLL); the best-validation params are tested. Epochs and seconds are "
                 "means over seeds.")
    return "\n".join(lines)
