"""Probability density distillation on digits: a MAF teacher, an IAF student (``jaxflows.distill``).

A MAF (Papamakarios et al. 2017) is trained by maximum likelihood on
scikit-learn's digits (dequantised pixels, standardised with the training
rows' statistics; 80/10/10 split, early stopping on the validation rows).
An IAF (Kingma et al. 2016) of the same size is then fitted to it by
minimising KL(student || teacher) with reparameterised student samples
(``jaxflows.distill``, built on ``jaxflows.fit_vi``).  Reported:

- sampling time of ``n`` samples: the teacher's sampler (sequential, the
  cached MADE inversion) vs the student's (one parallel pass per layer), both
  jitted, timed in the same process, interleaved, median of ``--repeats``;
- KL(student || teacher) before and after distillation (Monte-Carlo, nats);
- sample quality as the teacher sees it: the teacher's mean log-density of
  student samples vs of its own samples (equal when the student matches it);
- test log-likelihood (nats per image, pixel units) of the teacher and of the
  student (``student.log_prob``, the IAF's sequential direction): mean,
  median and the paired per-row difference (``jaxflows.compare`` when every
  row is finite).

::

    .venv/bin/python benchmarks/distill.py            # ~2-3 min on 2 CPU cores
    .venv/bin/python benchmarks/distill.py --quick    # smoke test
    .venv/bin/python benchmarks/distill.py --render benchmarks/results/distill-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_average, machine_info, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(fn, *args):
    import jax
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def ll_stats(ll, to_pixels: float, dim: int):
    ll = np.asarray(ll, np.float64) + to_pixels
    finite = np.isfinite(ll)
    f = ll[finite]
    return {"mean": float(ll.mean()) if finite.all() else float("-inf"),
            "se": float(f.std(ddof=1) / np.sqrt(f.size)),
            "mean_finite_rows": float(f.mean()), "median": float(np.median(ll)),
            "p10": float(np.percentile(ll, 10)), "nonfinite_rows": int((~finite).sum()),
            "bits_per_dim": float(-ll.mean() / (dim * np.log(2))) if finite.all() else float("inf")}


def run(args):
    import jax
    import optax

    import jaxflows as jf

    t_start = time.perf_counter()
    x = jf.data.digits(seed=args.seed).astype(np.float64)
    train, val, test = jf.data.split(x, (0.8, 0.1, 0.1), seed=args.seed)
    std = jf.data.fit_standardizer(train)
    train, val, test = (np.asarray(jf.data.standardize(std, a), np.float32) for a in (train, val, test))
    to_pixels = float(jf.data.standardizer_log_det(std))
    dim = x.shape[1]
    hidden = tuple(args.hidden)
    k_t, k_fit, k_s, k_d, k_kl, k_eval = jax.random.split(jax.random.PRNGKey(args.seed), 6)

    teacher = jf.maf(dim, num_layers=args.layers, hidden=hidden)
    t0 = time.perf_counter()
    tp, hist = jf.fit(teacher, teacher.init(k_t), train, val_data=val, key=k_fit,
                      optimizer=optax.adam(1e-3), batch_size=128, num_epochs=args.epochs,
                      patience=20, progress=False)
    jax.block_until_ready(tp)
    teacher_s = time.perf_counter() - t0
    print(f"teacher: {hist['num_epochs_run']} epochs, {teacher_s:.0f} s", flush=True)

    student = jf.iaf(dim, num_layers=args.layers, hidden=hidden)
    sp0 = student.init(k_s)
    kl = jax.jit(lambda sp: jf.distillation_kl(teacher, tp, student, sp, k_kl, num_samples=8192))
    kl_before = {k: float(v) for k, v in kl(sp0).items()}
    t0 = time.perf_counter()
    sp, dhist = jf.distill(teacher, tp, student, sp0, key=k_d, num_steps=args.steps,
                           num_samples=args.samples, optimizer=optax.adam(args.lr))
    distill_s = time.perf_counter() - t0
    kl_after = {k: float(v) for k, v in kl(sp).items()}
    print(f"distilled: {args.steps} steps, {distill_s:.0f} s, KL {kl_before['kl']:.1f} -> "
          f"{kl_after['kl']:.2f} nats", flush=True)

    # sampling speed: same process, compiled first, interleaved, median of repeats
    n = args.num_samples
    t_draw = jax.jit(lambda p, k: teacher.sample(p, k, (n,)))
    s_draw = jax.jit(lambda p, k: student.sample(p, k, (n,)))
    first = {"teacher": timed(t_draw, tp, k_eval), "student": timed(s_draw, sp, k_eval)}
    times = {"teacher": [], "student": []}
    for r in range(args.repeats):
        k = jax.random.fold_in(k_eval, r + 1)
        times["teacher"].append(timed(t_draw, tp, k))
        times["student"].append(timed(s_draw, sp, k))
    med = {k: statistics.median(v) for k, v in times.items()}

    # sample quality as the teacher sees it
    t_lp = jax.jit(teacher.log_prob)
    xs_t, xs_s = t_draw(tp, k_eval), s_draw(sp, k_eval)
    own = np.asarray(t_lp(tp, xs_t), np.float64)
    of_student = np.asarray(t_lp(tp, xs_s), np.float64)

    # test log-likelihoods (pixel units); the student's density is its sequential direction
    ll_t = np.asarray(t_lp(tp, test), np.float64)
    ll_s = np.asarray(jax.jit(student.log_prob)(sp, test), np.float64)
    d = (ll_s - ll_t)
    paired = {"median_difference": float(np.median(d)), "student_higher_rows": int(np.sum(d > 0)),
              "teacher_higher_rows": int(np.sum(d < 0))}
    if np.isfinite(ll_s).all():
        c = jf.compare(ll_s + to_pixels, ll_t + to_pixels, dim=dim, names=("student", "teacher"))
        paired.update(difference=c["difference"], difference_se=c["difference_se"])
    dev = jax.devices()[0]
    return {
        "config": {"seed": args.seed, "layers": args.layers, "hidden": list(hidden),
                   "teacher_max_epochs": args.epochs, "distill_steps": args.steps,
                   "distill_samples_per_step": args.samples, "distill_lr": args.lr,
                   "timing_samples": n, "repeats": args.repeats,
                   "rows": {"train": len(train), "validation": len(val), "test": len(test)}},
        "teacher": {"epochs_run": hist["num_epochs_run"], "best_epoch": int(hist["best_epoch"]),
                    "train_s": teacher_s, "test": ll_stats(ll_t, to_pixels, dim)},
        "student": {"distill_s": distill_s, "test": ll_stats(ll_s, to_pixels, dim),
                    "kl_history_last100_mean": float(np.mean(dhist["kl"][-100:]))},
        "kl_before": kl_before, "kl_after": kl_after,
        "teacher_log_density_of_samples": {
            "teacher_samples": float(own.mean() + to_pixels),
            "student_samples": float(of_student.mean() + to_pixels),
            "se": float(np.sqrt(own.var() / own.size + of_student.var() / of_student.size))},
        "paired_test": paired,
        "sampling_s": {"teacher_median": med["teacher"], "student_median": med["student"],
                       "speedup": med["teacher"] / med["student"], "all": times, "first_call": first},
        "seconds": time.perf_counter() - t_start, "machine": machine_info(),
        "load_average": load_average(), "device": f"{dev.platform}:{dev.device_kind}",
        "jaxflows": jf.__version__, "jax": jax.__version__,
    }


def render(r) -> str:
    c, t, s, smp = r["config"], r["teacher"]["test"], r["student"]["test"], r["sampling_s"]
    q, p = r["teacher_log_density_of_samples"], r["paired_test"]
    ms = lambda v: f"{1e3 * v:.1f} ms"  # noqa: E731
    lines = [
        "# Probability density distillation: MAF teacher -> IAF student (digits, 64 dims)",
        "",
        f"Both flows: {c['layers']} layers, hidden {c['hidden']}. Teacher trained by maximum "
        f"likelihood ({r['teacher']['epochs_run']} epochs, best {r['teacher']['best_epoch']}, "
        f"{r['teacher']['train_s']:.0f} s); student distilled by KL(student ‖ teacher) for "
        f"{c['distill_steps']} Adam steps ({c['distill_lr']}) of {c['distill_samples_per_step']} "
        f"samples ({r['student']['distill_s']:.0f} s). Seed {c['seed']}; test rows: "
        f"{c['rows']['test']}.",
        "",
        "| | teacher (MAF) | student (IAF) |",
        "|---|---|---|",
        f"| sample {c['timing_samples']} (median of {c['repeats']}, interleaved) | "
        f"{ms(smp['teacher_median'])} | {ms(smp['student_median'])} ({smp['speedup']:.1f}x faster) |",
        f"| test log-likelihood, mean (nats/image) | {t['mean']:.2f} ± {t['se']:.2f} | "
        + (f"{s['mean']:.2f} ± {s['se']:.2f}" if np.isfinite(s["mean"]) else
           f"-inf ({s['nonfinite_rows']} rows); finite rows {s['mean_finite_rows']:.3g}") + " |",
        f"| test log-likelihood, median / 10th percentile | {t['median']:.2f} / {t['p10']:.2f} | "
        f"{s['median']:.2f} / {s['p10']:.3g} |",
        f"| bits/dim (mean) | {t['bits_per_dim']:.3f} | {s['bits_per_dim']:.3f} |",
        f"| teacher's mean log-density of 1000 samples from | {q['teacher_samples']:.2f} | "
        f"{q['student_samples']:.2f} (± {q['se']:.2f} for the difference) |",
        "",
        f"KL(student ‖ teacher), 8192 samples: {r['kl_before']['kl']:.1f} ± "
        f"{r['kl_before']['kl_se']:.1f} nats at initialisation, {r['kl_after']['kl']:.2f} ± "
        f"{r['kl_after']['kl_se']:.2f} after distillation. Per test row, student − teacher: "
        f"median {p['median_difference']:.2f} nats; student higher on {p['student_higher_rows']} "
        f"rows, teacher on {p['teacher_higher_rows']}"
        + (f"; mean {p['difference']:.2f} ± {p['difference_se']:.2f} (paired SE)." if "difference" in p
           else "."),
        "",
        f"Total {r['seconds']:.0f} s on {r['machine']['cpu']} ({r['machine']['usable_cores']} cores, "
        f"load {r['load_average']}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    p.add_argument("--epochs", type=int, default=300, help="teacher's maximum epochs")
    p.add_argument("--steps", type=int, default=5000, help="distillation steps")
    p.add_argument("--samples", type=int, default=128, help="student samples per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-samples", type=int, default=1000, help="samples per timed draw")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="tiny run (smoke test), not written to results/")
    p.add_argument("--out", default=None, help="JSON path (default results/distill-<device>.json)")
    p.add_argument("--render", metavar="JSON", help="print the table of an earlier run")
    args = p.parse_args(argv)
    if args.render:
        print(render(json.load(open(args.render))), end="")
        return 0
    if args.quick:
        args.layers, args.hidden, args.epochs, args.steps, args.repeats = 2, [64], 3, 50, 3
    result = run(args)
    out = None
    if not args.quick or args.out:
        out = args.out or os.path.join(HERE, "results", f"distill-{result['device'].split(':')[0]}.json")
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
