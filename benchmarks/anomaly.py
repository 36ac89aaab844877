"""Calibrated anomaly detection on data with known anomalies: scikit-learn digits, one class held out.

The normal data are the digits of every class but one (``--anomaly-class``,
default 0); the held-out class are the anomalies, never seen in training.
Per seed (``--seeds``) the normal rows (dequantised pixels ``x + u``,
``u ~ U[0, 1)``, standardised with the training rows' statistics) are
shuffled and cut into train 50% / validation 15% (early stopping) /
calibration 15% / test 20%; the anomalies are all rows of the held-out class.

Three detectors score every row ("higher is more normal"), each calibrated the
same way with :mod:`jaxflows.anomaly` on the calibration rows (conformal
p-values; flag ``p <= alpha``):

- **MAF**: ``jaxflows.maf`` (5 layers), trained by maximum likelihood with
  early stopping; score = ``log p(x)``.
- **Gaussian**: scikit-learn ``GaussianMixture(n_components=1)``, full
  covariance; score = ``log p(x)``.
- **Isolation forest**: scikit-learn ``IsolationForest``; score =
  ``score_samples`` (the negated anomaly score).

Reported per detector, mean +- standard error over seeds: the false-alarm
rate on the normal test rows at each requested rate ``alpha`` (beside the
rate the conformal rule guarantees, ``floor(alpha (n_cal + 1)) / (n_cal + 1)``,
and a z-score of the pooled rate against it, whose spread combines the
binomial noise of the test rows and the Beta spread of one calibration set),
the detection rate on the anomalies, and the ROC AUC (normal test rows vs
anomalies).  Also the paired comparison (``jaxflows.compare``) of the MAF and
the Gaussian by test log-likelihood on the normal test rows.

::

    .venv/bin/python benchmarks/anomaly.py                 # ~3 min on 2 CPU cores
    .venv/bin/python benchmarks/anomaly.py --quick         # smoke test
    .venv/bin/python benchmarks/anomaly.py --render benchmarks/results/anomaly-cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_average, machine_info, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DETECTORS = ("MAF", "Gaussian", "Isolation forest")
SPLIT = {"train": 0.50, "validation": 0.15, "calibration": 0.15, "test": 0.20}


def load(anomaly_class: int, seed: int):
    """Dequantised, standardised splits of the normal digits and the held-out class."""
    from sklearn.datasets import load_digits

    from jaxflows import data

    d = load_digits()
    x = data.uniform_dequantize(d.data, seed).astype(np.float64)
    normal, anomalies = x[d.target != anomaly_class], x[d.target == anomaly_class]
    parts = data.split(normal, tuple(SPLIT.values()), seed=seed)
    out = dict(zip(SPLIT, parts))
    out["anomalies"] = anomalies
    std = data.fit_standardizer(out["train"])
    out = {k: np.asarray(data.standardize(std, v), np.float32) for k, v in out.items()}
    out["to_pixels"] = float(data.standardizer_log_det(std))
    return out


def maf_scores(sets, seed: int, cfg):
    import jax
    import optax

    import jaxflows as jf

    flow = jf.maf(64, num_layers=cfg["layers"], hidden=tuple(cfg["hidden"]))
    k_init, k_fit = jax.random.split(jax.random.PRNGKey(seed))
    t0 = time.perf_counter()
    params, hist = jf.fit(flow, flow.init(k_init), sets["train"], val_data=sets["validation"],
                          key=k_fit, optimizer=optax.adam(cfg["lr"]), batch_size=cfg["batch"],
                          num_epochs=cfg["epochs"], patience=cfg["patience"], progress=False)
    jax.block_until_ready(params)
    seconds = time.perf_counter() - t0
    log_prob = jax.jit(flow.log_prob)
    scores = {k: np.asarray(log_prob(params, sets[k]), np.float64)
              for k in ("calibration", "test", "anomalies")}
    info = {"train_s": seconds, "epochs_run": hist["num_epochs_run"], "best_epoch": int(hist["best_epoch"])}
    return scores, info


def gaussian_scores(sets, seed: int):
    from sklearn.mixture import GaussianMixture

    g = GaussianMixture(n_components=1, covariance_type="full", reg_covar=1e-3, random_state=seed)
    g.fit(sets["train"])
    return {k: g.score_samples(sets[k]) for k in ("calibration", "test", "anomalies")}


def iforest_scores(sets, seed: int):
    from sklearn.ensemble import IsolationForest

    f = IsolationForest(n_estimators=200, random_state=seed).fit(sets["train"])
    return {k: f.score_samples(sets[k]) for k in ("calibration", "test", "anomalies")}


def evaluate(scores, rates):
    """False-alarm and detection rates at each rate, and the ROC AUC, for one detector."""
    from sklearn.metrics import roc_auc_score

    from jaxflows import anomaly

    cal = anomaly.calibrate(scores["calibration"])
    out = {"n_calibration": cal.size, "n_test": int(scores["test"].size),
           "n_anomalies": int(scores["anomalies"].size), "rates": {}}
    for a in rates:
        out["rates"][str(a)] = {
            "expected": float(anomaly.expected_false_alarm_rate(cal, a)),
            "false_alarms": int(np.sum(anomaly.flag(cal, scores["test"], a))),
            "false_alarm_rate": float(np.mean(anomaly.flag(cal, scores["test"], a))),
            "detection_rate": float(np.mean(anomaly.flag(cal, scores["anomalies"], a))),
        }
    y = np.r_[np.zeros(scores["test"].size), np.ones(scores["anomalies"].size)]
    out["auc"] = float(roc_auc_score(y, -np.r_[scores["test"], scores["anomalies"]]))
    return out


def mean_se(values):
    v = np.asarray(values, np.float64)
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan"))


def summarise(runs, rates):
    """Mean +- SE over seeds per detector, and the pooled false-alarm z-score."""
    summary = {}
    for det in DETECTORS:
        rs = [r["detectors"][det] for r in runs]
        s = {"auc": mean_se([r["auc"] for r in rs]), "rates": {}}
        for a in rates:
            key = str(a)
            far = [r["rates"][key]["false_alarm_rate"] for r in rs]
            det_rate = [r["rates"][key]["detection_rate"] for r in rs]
            # pooled over seeds: flagged / test rows, against the guaranteed rate; the variance
            # of one seed's count is m e (1 - e) (binomial) + m^2 e (1 - e) / (n_cal + 2) (the
            # Beta spread of the realised rate given one calibration set)
            m = np.array([r["n_test"] for r in rs], np.float64)
            e = np.array([r["rates"][key]["expected"] for r in rs])
            n = np.array([r["n_calibration"] for r in rs], np.float64)
            flagged = np.array([r["rates"][key]["false_alarms"] for r in rs], np.float64)
            var = np.sum(m * e * (1 - e) + m ** 2 * e * (1 - e) / (n + 2))
            z = float((flagged.sum() - (m * e).sum()) / math.sqrt(var)) if var > 0 else float("nan")
            s["rates"][key] = {"false_alarm_rate": mean_se(far), "detection_rate": mean_se(det_rate),
                               "expected": float(np.mean(e)), "pooled_false_alarm_rate":
                               float(flagged.sum() / m.sum()), "pooled_z": z}
        summary[det] = s
    cmp = [r["maf_vs_gaussian"] for r in runs]
    summary["maf_vs_gaussian"] = {k: mean_se([c[k] for c in cmp])
                                  for k in ("mean_a", "mean_b", "difference", "difference_se")}
    return summary


def render(result) -> str:
    cfg, summ, rates = result["config"], result["summary"], result["config"]["rates"]
    pm = lambda ms, f="{:.3f}": (f + " ± " + f).format(*ms)  # noqa: E731
    n_seeds = len(cfg["seeds"])
    r0 = result["runs"][0]["detectors"]["MAF"]
    lines = [
        f"# Calibrated anomaly detection: digits, class {cfg['anomaly_class']} held out",
        "",
        f"Normal: the other 9 classes ({r0['n_calibration']} calibration rows, {r0['n_test']} "
        f"normal test rows per seed); anomalies: the {r0['n_anomalies']} images of class "
        f"{cfg['anomaly_class']}. Mean ± standard error over {n_seeds} seeds ({cfg['seeds']}). "
        "Every detector is calibrated the same way (conformal p-values from the calibration "
        "rows, `jaxflows.anomaly`); 'guaranteed' is floor(α(n+1))/(n+1), and z is the pooled "
        "false-alarm count's distance from it in standard deviations (binomial noise of the "
        "test rows plus the spread of one calibration set).",
        "",
        "| detector | ROC AUC | α | guaranteed false-alarm rate | false alarms on normal test rows "
        "| pooled | z | detection rate on anomalies |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for det in DETECTORS:
        s = summ[det]
        for i, a in enumerate(rates):
            q = s["rates"][str(a)]
            lines.append(f"| {det if i == 0 else ''} | {pm(s['auc']) if i == 0 else ''} | {a} | "
                         f"{q['expected']:.4f} | {pm(q['false_alarm_rate'])} | "
                         f"{q['pooled_false_alarm_rate']:.4f} | {q['pooled_z']:+.1f} | "
                         f"{pm(q['detection_rate'])} |")
    c = summ["maf_vs_gaussian"]
    lines += [
        "",
        "Test log-likelihood of the normal test rows (nats per image, pixel units), "
        "`jaxflows.compare` (mean over seeds ± SE over seeds; the paired SE over rows is "
        f"{c['difference_se'][0]:.2f} nats on average): MAF {pm(c['mean_a'], '{:.2f}')}, Gaussian "
        f"{pm(c['mean_b'], '{:.2f}')}, MAF − Gaussian {pm(c['difference'], '{:.2f}')}.",
        "",
        f"MAF: {cfg['maf']['layers']} layers, hidden {cfg['maf']['hidden']}, Adam {cfg['maf']['lr']}, "
        f"batch {cfg['maf']['batch']}, early stopping (patience {cfg['maf']['patience']}); "
        "epochs run / best epoch per seed: "
        + ", ".join(f"{r['maf']['epochs_run']}/{r['maf']['best_epoch']}" for r in result["runs"])
        + f". Total {result['seconds']:.0f} s on {result['machine']['cpu']} "
          f"({result['machine']['usable_cores']} cores, load {result['load_average']}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--anomaly-class", type=int, default=0, help="digit held out as the anomalies")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--quick", action="store_true", help="tiny run (smoke test), not written to results/")
    p.add_argument("--out", default=None, help="JSON path (default results/anomaly-<device>.json)")
    p.add_argument("--render", metavar="JSON", help="print the tables of an earlier run")
    args = p.parse_args(argv)
    if args.render:
        print(render(json.load(open(args.render))), end="")
        return 0

    import jax

    import jaxflows as jf

    cfg = {"anomaly_class": args.anomaly_class, "seeds": args.seeds, "rates": args.rates,
           "split": SPLIT, "maf": {"layers": args.layers, "hidden": args.hidden, "lr": 1e-3,
                                    "batch": 128, "epochs": args.epochs, "patience": 20}}
    if args.quick:
        cfg["seeds"] = cfg["seeds"][:2]
        cfg["maf"].update(layers=1, hidden=[64], epochs=3)
    t0 = time.perf_counter()
    runs = []
    for seed in cfg["seeds"]:
        sets = load(args.anomaly_class, seed)
        scores = {"MAF": None, "Gaussian": gaussian_scores(sets, seed),
                  "Isolation forest": iforest_scores(sets, seed)}
        scores["MAF"], maf_info = maf_scores(sets, seed, cfg["maf"])
        run = {"seed": seed, "maf": maf_info,
               "detectors": {d: evaluate(scores[d], cfg["rates"]) for d in DETECTORS}}
        # model comparison on the normal test rows, in pixel units (the same offset for both)
        cmp = jf.compare(scores["MAF"]["test"] + sets["to_pixels"],
                         scores["Gaussian"]["test"] + sets["to_pixels"], dim=64, names=("MAF", "Gaussian"))
        run["maf_vs_gaussian"] = {k: cmp[k] for k in ("mean_a", "mean_b", "difference", "difference_se",
                                                      "wins_a", "wins_b")}
        runs.append(run)
        print(f"seed {seed}: " + ", ".join(f"{d} AUC {run['detectors'][d]['auc']:.3f}" for d in DETECTORS)
              + f"; MAF {maf_info['epochs_run']} epochs, {maf_info['train_s']:.0f} s", flush=True)
    dev = jax.devices()[0]
    result = {"config": cfg, "runs": runs, "summary": summarise(runs, cfg["rates"]),
              "seconds": time.perf_counter() - t0, "machine": machine_info(),
              "load_average": load_average(), "device": f"{dev.platform}:{dev.device_kind}",
              "jaxflows": jf.__version__, "jax": jax.__version__}
    out = None
    if not args.quick or args.out:
        out = args.out or os.path.join(HERE, "results", f"anomaly-{dev.platform}.json")
        write_json(out, result)
    text = render(result)
    print(text, end="")
    if out is not None:
        with open(os.path.splitext(out)[0] + ".md", "w") as f:
            f.write(text)
        print(f"wrote {out} and {os.path.splitext(out)[0]}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
