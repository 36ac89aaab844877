"""Speed benchmark: jaxflows and flowjax in ONE process, calls interleaved.

    python benchmarks/speed.py                # full run (47 min on 2 cores shared at load 11-21)
    python benchmarks/speed.py --quick        # smoke run (under 2 minutes of CPU time)
    python benchmarks/speed.py --render benchmarks/results/speed-cpu.json   # tables again

Why one process: two libraries timed in separate processes, one after the
other, on a machine whose load changes from minute to minute, are not
compared side by side.  Here flowjax (``peer_flowjax.py``'s adapter) and
jaxflows (``bench_jaxflows.py``'s adapter) are built in the same process,
both jitted with their parameters passed as jit *arguments* (flowjax
through a function of its ``eqx.partition``-ed array leaves), and every
measurement alternates single calls of the two: within a run the order of
each pair of calls is swapped from one pair to the next, and the library
that goes first is swapped between runs.  Each run gives a ratio
(flowjax's median time / jaxflows' median time in that run); the table
reports the min / median / max of those ratios over ``--runs`` runs.

torch peers cannot share a process with JAX's thread pool fairly, so zuko
still runs in its own process (``peer_zuko.py``, with the python of
``.venv-bench`` when that exists, else skipped; ``--zuko-python`` to
choose); its numbers are reported in a separate table and are not
interleaved.

Sections (``--sections``, default all):

- ``S``: dim 8, 8 layers, one hidden layer of 50: MAF log_prob and sample
  at batch 4096, MAF train step (Adam, batch 512), on params trained by
  those steps.
- ``L``: dim 64, 5 layers, two hidden layers of 512: the MAF train step
  interleaved with a 2048^2 float32 matmul (its rate as a share of the
  matmul's, per run); MAF log_prob, MAF sample and IAF log_prob (the IAF
  trained by reverse KL; its log_prob of data it did not sample) at batch
  4096; exactness of jaxflows' cached inversion against its ``lax.scan``
  reference (``method="scan"``) on those params, in float64 and float32.
- ``sweep``: dims 8..128, 8 layers, one hidden layer of max(50, 2 dim),
  batch 4096; both directions of the MAF and the IAF.
- ``compile``: trace + lower + XLA compile of log_prob / sample at S for
  5, 10, 20 layers (best of 3 fresh builds), both libraries.
- ``memory``: XLA's buffer assignment of the compiled L sample and
  log_prob programs (``Compiled.memory_analysis()``: arguments + outputs +
  temporaries - aliased bytes), both libraries, batch 4096.

Writes ``benchmarks/results/speed-<device>.{json,md,png}`` (``-quick``
appended for ``--quick``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _common as C  # noqa: E402

LIBS = ("jaxflows", "flowjax")
SECTIONS = ("S", "L", "sweep", "compile", "memory")


# --------------------------------------------------------------------------
# Interleaved timing (library agnostic: tested in tests/test_benchmarks_smoke.py)
# --------------------------------------------------------------------------


def interleaved(
    thunks: Dict[str, Callable[[], Any]],
    *,
    block: Callable[[Any], Any] = lambda out: out,
    runs: int = 3,
    reps: Optional[int] = None,
    target_s: float = 1.0,
    min_reps: int = 1,
    max_reps: int = 30,
    clock: Callable[[], float] = time.perf_counter,
) -> Dict[str, Any]:
    """Time several zero-argument callables against each other, interleaved.

    Every thunk is called once untimed-for-the-ratio (its first call:
    compile + one run, reported as ``first_s``), then once more to estimate
    its cost.  Unless ``reps`` is given, each run makes ``reps`` rounds so
    that a run takes about ``target_s`` (clamped to ``[min_reps,
    max_reps]``).  A round calls every thunk once; the order of the thunks
    is reversed every other round, and the first round's order is reversed
    every other run, so no thunk always runs first (after the other's cache
    and thread-pool effects) and drift in the machine's load hits all of
    them alike.

    Returns ``{"order": [...], "reps": n, "libs": {name: {"first_s",
    "median_s", "min_s", "run_medians_s"}}}``; ``ratio(result, a, b)`` turns
    it into per-run ratios.
    """
    names = list(thunks)
    first, est = {}, {}
    for n in names:
        t0 = clock()
        block(thunks[n]())
        first[n] = clock() - t0
    for n in names:
        t0 = clock()
        block(thunks[n]())
        est[n] = clock() - t0
    if reps is None:
        per_round = sum(est.values()) or 1e-9
        reps = int(min(max(target_s / per_round, min_reps), max_reps))
    runs_times: Dict[str, List[List[float]]] = {n: [] for n in names}
    for r in range(runs):
        times: Dict[str, List[float]] = {n: [] for n in names}
        for i in range(reps):
            order = names if (r + i) % 2 == 0 else names[::-1]
            for n in order:
                t0 = clock()
                block(thunks[n]())
                times[n].append(clock() - t0)
        for n in names:
            runs_times[n].append(times[n])
    libs = {}
    for n in names:
        flat = [t for run in runs_times[n] for t in run]
        libs[n] = {
            "first_s": first[n],
            "median_s": statistics.median(flat),
            "min_s": min(flat),
            "run_medians_s": [statistics.median(run) for run in runs_times[n]],
            "times_s": [[round(t, 6) for t in run] for run in runs_times[n]],
        }
    return {"order": names, "runs": runs, "reps": reps, "libs": libs}


def spread(values: Sequence[float]) -> Dict[str, float]:
    """``{"min", "median", "max", "per_run"}`` of a list of per-run values."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "per_run": list(values)}


def ratio(result: Dict[str, Any], slow: str = "flowjax", fast: str = "jaxflows") -> Dict[str, float]:
    """Per-run ``median(slow) / median(fast)`` (a speedup of ``fast``), spread over runs."""
    a = result["libs"][slow]["run_medians_s"]
    b = result["libs"][fast]["run_medians_s"]
    return spread([x / y for x, y in zip(a, b)])


def compiled_memory(jitted, *args) -> Dict[str, int]:
    """XLA's buffer assignment of the compiled program (bytes).

    ``peak_bytes = argument + output + temp - alias``: the device memory the
    executable holds while it runs (temporaries are XLA's planned peak of
    live intermediate buffers), not a measured resident set size.
    """
    stats = jitted.lower(*args).compile().memory_analysis()
    out = {
        k: int(getattr(stats, f"{k}_size_in_bytes"))
        for k in ("argument", "output", "temp", "alias", "generated_code")
    }
    out["peak_bytes"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


class Bench:
    """Both adapters in this process, and the settings of the run."""

    def __init__(self, settings: Dict[str, Any]):
        import bench_jaxflows
        import peer_flowjax

        self.s = settings
        self.jf = bench_jaxflows.make_adapter()
        self.fj = peer_flowjax.make_adapter()
        self.ad = {"jaxflows": self.jf, "flowjax": self.fj}
        self.block = self.jf.block
        self.flip = 0  # which library goes first in a section's first run

    def inter(self, thunks: Dict[str, Callable[[], Any]], **kw) -> Dict[str, Any]:
        """``interleaved`` with the run's settings; the first library alternates between sections."""
        if self.flip % 2:
            thunks = dict(reversed(list(thunks.items())))
        self.flip += 1
        kw.setdefault("runs", self.s["runs"])
        kw.setdefault("target_s", self.s["target_s"])
        return interleaved(thunks, block=self.block, **kw)

    def models(self, kind: str, dim: int, hidden, layers: int) -> Dict[str, Any]:
        return {lib: self.ad[lib].make(kind, dim, hidden, layers, seed=0) for lib in LIBS}

    def train(self, kind, models, dim, steps, lr, *, extra=None, timed=True) -> Dict[str, Any]:
        """Train both libraries' flows (MAF: maximum likelihood, IAF: reverse KL).

        Timed: the steps themselves are the interleaved measurement (both
        libraries take the same number of steps; ``extra`` thunks, e.g. a
        matmul, join the interleaving).  Returns the trained models and the
        timing.
        """
        x_train = C.gaussian_samples(C.BATCH["train"], dim, sample_seed=456)
        target = C.gaussian_target(dim)
        trainers = {}
        for lib in LIBS:
            if kind == "maf":
                trainers[lib] = self.ad[lib].mle_trainer(models[lib], x_train, lr)
            else:
                trainers[lib] = self.ad[lib].rkl_trainer(models[lib], target, C.BATCH["train"], lr)
        before = {lib: float(trainers[lib].loss()) for lib in LIBS}
        timing = None
        if timed:
            runs = self.s["runs"]
            reps = max((steps - 2) // runs, 1)
            thunks = {lib: trainers[lib].step for lib in LIBS}
            thunks.update(extra or {})
            timing = self.inter(thunks, runs=runs, reps=reps)
            timing["steps"] = 2 + runs * reps
        else:
            for _ in range(steps):
                for lib in LIBS:
                    trainers[lib].step()
        after = {lib: float(trainers[lib].loss()) for lib in LIBS}
        trained = {lib: trainers[lib].model() for lib in LIBS}
        return {"models": trained, "timing": timing, "loss_before": before, "loss_after": after}

    def log_prob(self, models, x) -> Dict[str, Any]:
        return self.inter({lib: self.ad[lib].log_prob(models[lib], x) for lib in LIBS})

    def sample(self, models, n) -> Dict[str, Any]:
        return self.inter({lib: self.ad[lib].sample(models[lib], n, 7) for lib in LIBS})

    def sequential(self, thunks) -> Dict[str, Any]:
        """Slow calls (seconds each for flowjax at L): a run's budget doubled, one round at least."""
        return self.inter(thunks, min_reps=1, target_s=2 * self.s["target_s"])


def _show(label: str, res: Dict[str, Any]) -> None:
    r = ratio(res)
    C.log(
        f"    {label}: jaxflows {C.fmt_s(res['libs']['jaxflows']['median_s'])}, "
        f"flowjax {C.fmt_s(res['libs']['flowjax']['median_s'])}; "
        f"ratio {r['min']:.2f} / {r['median']:.2f} / {r['max']:.2f}"
    )


def section_S(b: Bench) -> Dict[str, Any]:
    cfg = C.CONFIGS["S"]
    dim, hidden, layers = cfg["dim"], cfg["hidden"], cfg["num_layers"]
    out: Dict[str, Any] = {"config": {**cfg, "batch": C.BATCH}}
    C.log(f"S: MAF train step x{b.s['train_steps']} (interleaved)")
    tr = b.train("maf", b.models("maf", dim, hidden, layers), dim, b.s["train_steps"], C.TRAIN["learning_rate"])
    out["train_step"] = tr["timing"]
    out["train_loss"] = {"before": tr["loss_before"], "after": tr["loss_after"]}
    _show("train step", tr["timing"])
    maf = tr["models"]
    x = C.gaussian_samples(C.BATCH["log_prob"], dim, sample_seed=123)
    C.log("S: MAF log_prob")
    out["log_prob"] = b.log_prob(maf, x)
    _show("log_prob", out["log_prob"])
    C.log("S: MAF sample")
    out["sample"] = b.sample(maf, C.BATCH["sample"])
    _show("sample", out["sample"])
    return out


def section_L(b: Bench) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp

    cfg = C.CONFIGS["L"]
    dim, hidden, layers = cfg["dim"], cfg["hidden"], cfg["num_layers"]
    lr, steps = C.TRAIN["learning_rate"], b.s["train_steps"]
    out: Dict[str, Any] = {"config": {**cfg, "batch": C.BATCH}}
    C.log(f"L: MAF train step x{steps}, interleaved with a {C.MATMUL_N}^2 float32 matmul")
    tr = b.train("maf", b.models("maf", dim, hidden, layers), dim, steps, lr, extra={"matmul": b.jf.matmul()})
    t = tr["timing"]
    flops = C.train_step_flops(C.BATCH["train"], dim, hidden, layers)
    mm_flops = 2.0 * C.MATMUL_N**3
    t["flops"] = flops
    t["matmul_gflops_per_run"] = [mm_flops / m / 1e9 for m in t["libs"]["matmul"]["run_medians_s"]]
    for lib in LIBS:
        t["libs"][lib]["gflops_per_run"] = [flops / m / 1e9 for m in t["libs"][lib]["run_medians_s"]]
        t["libs"][lib]["pct_of_matmul"] = spread(
            [100 * g / mm for g, mm in zip(t["libs"][lib]["gflops_per_run"], t["matmul_gflops_per_run"])]
        )
    out["train_step"] = t
    out["train_loss"] = {"before": tr["loss_before"], "after": tr["loss_after"]}
    _show("train step", t)
    C.log(f"    jaxflows at {t['libs']['jaxflows']['pct_of_matmul']['median']:.0f}% of the matmul rate "
          f"({statistics.median(t['matmul_gflops_per_run']):.0f} GFLOP/s)")
    maf = tr["models"]
    C.log(f"L: IAF reverse-KL training x{steps} (not timed)")
    iaf_tr = b.train("iaf", b.models("iaf", dim, hidden, layers), dim, steps, lr, timed=False)
    out["iaf_train_loss"] = {"before": iaf_tr["loss_before"], "after": iaf_tr["loss_after"]}
    iaf = iaf_tr["models"]
    x = C.gaussian_samples(C.BATCH["log_prob"], dim, sample_seed=123)
    C.log("L: MAF log_prob")
    out["log_prob"] = b.log_prob(maf, x)
    lp_flops = C.made_flops(C.BATCH["log_prob"], dim, hidden, layers)
    out["log_prob"]["flops"] = lp_flops
    _show("log_prob", out["log_prob"])
    C.log("L: MAF sample (sequential direction)")
    out["sample"] = b.sequential({lib: b.ad[lib].sample(maf[lib], C.BATCH["sample"], 7) for lib in LIBS})
    _show("MAF sample", out["sample"])
    C.log("L: IAF log_prob (sequential direction, data it did not sample)")
    out["iaf_log_prob"] = b.sequential({lib: b.ad[lib].log_prob(iaf[lib], x) for lib in LIBS})
    _show("IAF log_prob", out["iaf_log_prob"])
    C.log("L: exactness of the cached inversion against method='scan'")
    out["exactness"] = exactness(maf["jaxflows"], iaf["jaxflows"], dim, hidden, layers)
    C.log(f"    {json.dumps(out['exactness'])}")
    return out


def exactness(maf, iaf, dim, hidden, layers) -> Dict[str, Any]:
    """Cached inversion vs the ``lax.scan`` reference, on the trained params.

    float64: the trained float32 params cast to float64 and both methods
    run under ``jax.enable_x64``; float32 as timed.  MAF: samples and their
    log densities from ``sample_and_log_prob`` (the sequential direction);
    IAF: latents (``to_latent``) and ``log_prob`` of data it did not sample.
    """
    import jax
    import jax.numpy as jnp

    import jaxflows

    factories = {"maf": jaxflows.maf, "iaf": jaxflows.iaf}
    x_np = C.gaussian_samples(1024, dim, sample_seed=789)
    out: Dict[str, Any] = {"n_events": 1024}
    for precision in ("float64", "float32"):
        with jax.enable_x64(precision == "float64"):
            dt = jnp.float64 if precision == "float64" else jnp.float32
            row = {}
            for kind, (flow, params) in (("maf", maf), ("iaf", iaf)):
                p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dt) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)
                ref = factories[kind](dim, num_layers=layers, hidden=tuple(hidden), method="scan")
                if kind == "maf":
                    f = lambda fl: jax.jit(lambda p, k: fl.sample_and_log_prob(p, k, (1024,)))  # noqa: E731
                    (ya, la), (yb, lb) = f(flow)(p, jax.random.key(5)), f(ref)(p, jax.random.key(5))
                else:
                    x = jnp.asarray(x_np, dt)
                    ya, yb = jax.jit(flow.to_latent)(p, x), jax.jit(ref.to_latent)(p, x)
                    la, lb = jax.jit(flow.log_prob)(p, x), jax.jit(ref.log_prob)(p, x)
                assert ya.dtype == dt, (ya.dtype, dt)
                row[kind] = {
                    "values_max_abs": float(jnp.max(jnp.abs(ya - yb))),
                    "log_prob_max_abs": float(jnp.max(jnp.abs(la - lb))),
                    "log_prob_max_rel": float(jnp.max(jnp.abs(la - lb) / jnp.maximum(jnp.abs(lb), 1.0))),
                }
            out[precision] = row
    return out


def section_sweep(b: Bench) -> Dict[str, Any]:
    batch, layers = C.SWEEP["batch"], C.SWEEP["num_layers"]
    lr, steps = C.SWEEP["learning_rate"], b.s["sweep_train_steps"]
    results: Dict[str, Any] = {}
    for dim in b.s["dims"]:
        hidden = C.sweep_hidden(dim)
        C.log(f"sweep dim {dim}, hidden {hidden}")
        maf = b.train("maf", b.models("maf", dim, hidden, layers), dim, steps, lr, timed=False)["models"]
        iaf = b.train("iaf", b.models("iaf", dim, hidden, layers), dim, steps, lr, timed=False)["models"]
        x = C.gaussian_samples(batch, dim, sample_seed=123)
        row: Dict[str, Any] = {"hidden": hidden}
        row["maf_log_prob"] = b.log_prob(maf, x)
        row["iaf_sample"] = b.sample(iaf, batch)
        row["maf_sample"] = b.sequential({lib: b.ad[lib].sample(maf[lib], batch, 7) for lib in LIBS})
        row["iaf_log_prob"] = b.sequential({lib: b.ad[lib].log_prob(iaf[lib], x) for lib in LIBS})
        for key in ("maf_log_prob", "iaf_sample", "maf_sample", "iaf_log_prob"):
            _show(key, row[key])
        results[str(dim)] = row
    cfg = {k: v for k, v in C.SWEEP.items() if k != "dims"}
    return {"config": {**cfg, "dims": list(b.s["dims"]), "train_steps": steps}, "results": results}


def section_compile(b: Bench) -> Dict[str, Any]:
    """Trace + lower + XLA compile of S's MAF log_prob and sample, by depth.

    Each build is a fresh flow and a fresh ``jax.jit`` (nothing reused);
    best of ``repeats`` builds, after one throwaway build per library.
    Wall time and this process's CPU time (all threads) are both recorded:
    on a shared machine the wall time includes waiting for a core.
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import paramax

    cfg = C.CONFIGS["S"]
    batch = C.BATCH["sample"]
    depths = (5, 10) if b.s["quick"] else (5, 10, 20)
    repeats = 1 if b.s["quick"] else 3

    def build(lib, direction, layers):
        model = b.ad[lib].make("maf", cfg["dim"], cfg["hidden"], layers, seed=0)
        x, key = jnp.zeros((batch, cfg["dim"])), jax.random.key(0)
        if lib == "jaxflows":
            flow, params = model
            if direction == "log_prob":
                return jax.jit(flow.log_prob), (params, x)
            return jax.jit(lambda p, k: flow.sample(p, k, (batch,))), (params, key)
        fp, fs = eqx.partition(model, eqx.is_inexact_array, is_leaf=lambda l: isinstance(l, paramax.NonTrainable))
        if direction == "log_prob":
            return jax.jit(lambda p, x: eqx.combine(p, fs).log_prob(x)), (fp, x)
        return jax.jit(lambda p, k: eqx.combine(p, fs).sample(k, (batch,))), (fp, key)

    def timed(lib, direction, layers):
        best = None
        for _ in range(repeats):
            fn, args = build(lib, direction, layers)
            w0, c0 = time.perf_counter(), time.process_time()
            fn.lower(*args).compile()
            row = {"total_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
            if best is None or row["total_s"] < best["total_s"]:
                best = row
        return best

    out: Dict[str, Any] = {"repeats": repeats, "by_layers": {}}
    for lib in LIBS:
        timed(lib, "log_prob", 2)  # warm-up: imports, first-use caches
    for layers in depths:
        row = {f"{lib}_{d}": timed(lib, d, layers) for lib in LIBS for d in ("log_prob", "sample")}
        out["by_layers"][str(layers)] = row
        C.log(f"    {layers} layers: " + ", ".join(f"{k} {C.fmt_s(v['total_s'])} (cpu {C.fmt_s(v['cpu_s'])})" for k, v in row.items()))
    return out


def section_memory(b: Bench) -> Dict[str, Any]:
    """Compiled memory of L's MAF sample and log_prob (and IAF log_prob), batch 4096."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import paramax

    cfg = C.CONFIGS["L"]
    dim, hidden, layers = cfg["dim"], cfg["hidden"], cfg["num_layers"]
    n = C.BATCH["sample"]
    x = jnp.zeros((n, dim), jnp.float32)
    key = jax.random.key(0)
    out: Dict[str, Any] = {"batch": n, "config": "L"}
    for kind in ("maf", "iaf"):
        flow, params = b.jf.make(kind, dim, hidden, layers, seed=0)
        fmodel = b.fj.make(kind, dim, hidden, layers, seed=0)
        fp, fs = eqx.partition(fmodel, eqx.is_inexact_array, is_leaf=lambda l: isinstance(l, paramax.NonTrainable))
        progs = {"log_prob": (
            (jax.jit(flow.log_prob), (params, x)),
            (jax.jit(lambda p, x: eqx.combine(p, fs).log_prob(x)), (fp, x)),
        )}
        if kind == "maf":
            progs["sample"] = (
                (jax.jit(lambda p, k: flow.sample(p, k, (n,))), (params, key)),
                (jax.jit(lambda p, k: eqx.combine(p, fs).sample(k, (n,))), (fp, key)),
            )
        for what, ((jfn, jargs), (ffn, fargs)) in progs.items():
            row = {"jaxflows": compiled_memory(jfn, *jargs), "flowjax": compiled_memory(ffn, *fargs)}
            row["ratio"] = row["jaxflows"]["peak_bytes"] / row["flowjax"]["peak_bytes"]
            out[f"{kind}_{what}"] = row
            C.log(f"    {kind} {what}: jaxflows {row['jaxflows']['peak_bytes'] / 2**20:.1f} MiB, "
                  f"flowjax {row['flowjax']['peak_bytes'] / 2**20:.1f} MiB ({row['ratio']:.2f}x)")
    return out


def run_zuko(python: str, quick: bool, timeout: float) -> Dict[str, Any]:
    """zuko in its own process (``peer_zuko.py``, sections S and L)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "zuko.json")
        cmd = [python, os.path.join(HERE, "peer_zuko.py"), "--out", path, "--sections", "S,L"]
        if quick:
            cmd.append("--quick")
        C.log("zuko (own process): " + " ".join(cmd))
        try:
            rc = subprocess.run(cmd, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if not os.path.exists(path):
            return {"error": f"no result (exit {rc})"}
        with open(path) as fh:
            doc = json.load(fh)
        if rc != 0:
            doc["error"] = f"exit {rc} (partial)"
        return doc


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _get(doc, *path):
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _spread_text(sp: Optional[Dict[str, float]], fmt: str = "{:.2f}×") -> str:
    if not sp:
        return "-"
    return f"{fmt.format(sp['median'])} ({fmt.format(sp['min'])}–{fmt.format(sp['max'])})"


def _row(label: str, res: Optional[Dict[str, Any]]) -> Optional[str]:
    if not res:
        return None
    jf, fj = res["libs"]["jaxflows"]["median_s"], res["libs"]["flowjax"]["median_s"]
    return f"| {label} | {C.fmt_s(jf)} | {C.fmt_s(fj)} | {_spread_text(ratio(res))} |"


def targets(doc: Dict[str, Any]) -> List[tuple]:
    """(goal, threshold text, measured text, met) for every speed goal that was measured."""
    rows = []

    def r(path, goal, label):
        res = _get(doc, *path)
        if res:
            sp = ratio(res)
            rows.append((label, f"≥ {goal:g}×", _spread_text(sp), sp["median"] >= goal))

    r(("S", "log_prob"), 2, "S MAF log_prob vs flowjax")
    r(("S", "sample"), 3, "S MAF sample vs flowjax")
    r(("S", "train_step"), 2, "S MAF train step vs flowjax")
    r(("L", "sample"), 10, "L MAF sample (trained) vs flowjax")
    r(("L", "iaf_log_prob"), 10, "L IAF log_prob (trained, unseen data) vs flowjax")
    pct = _get(doc, "L", "train_step", "libs", "jaxflows", "pct_of_matmul")
    if pct:
        rows.append(("L MAF train step, % of the matmul rate", "≥ 80%", _spread_text(pct, "{:.0f}%"), pct["median"] >= 80))
    ex = _get(doc, "L", "exactness", "float64")
    if ex:
        worst = max(v for k in ex for v in (ex[k]["values_max_abs"], ex[k]["log_prob_max_abs"]))
        rows.append(("cached vs scan inversion, float64 (max abs)", "≤ 1e-5", f"{worst:.1e}", worst <= 1e-5))
    sweep = _get(doc, "sweep", "results")
    if sweep:
        worst, where = None, None
        for dim, row in sweep.items():
            for key in ("maf_log_prob", "iaf_sample", "maf_sample", "iaf_log_prob"):
                m = ratio(row[key])["median"]
                if worst is None or m < worst:
                    worst, where = m, f"{key} at dim {dim}"
        rows.append(("slowest sweep point vs flowjax", "≥ 1×", f"{worst:.2f}× ({where})", worst >= 1.0))
    comp = _get(doc, "compile", "by_layers")
    if comp and "10" in comp:
        t10 = comp["10"]["jaxflows_sample"]
        rows.append(("compile, S MAF sample, 10 layers (wall; CPU)", "≤ 0.5 s",
                     f"{C.fmt_s(t10['total_s'])}; {C.fmt_s(t10['cpu_s'])}", t10["total_s"] <= 0.5))
        if "20" in comp and "5" in comp:
            f = comp["20"]["jaxflows_sample"]["cpu_s"] / comp["5"]["jaxflows_sample"]["cpu_s"]
            rows.append(("compile flat in depth (S MAF sample, CPU time 20 vs 5 layers)", "≤ 1.3×", f"{f:.2f}×", f <= 1.3))
    mem = _get(doc, "memory")
    if mem:
        for key, label in (("maf_sample", "L MAF sample"), ("maf_log_prob", "L MAF log_prob"), ("iaf_log_prob", "L IAF log_prob")):
            if key in mem:
                rr = mem[key]["ratio"]
                rows.append((f"peak memory, {label} vs flowjax", "≤ 1.5×", f"{rr:.2f}×", rr <= 1.5))
    return rows


def render(doc: Dict[str, Any]) -> str:
    m = doc["machine"]
    vers = ", ".join(f"{k} {v}" for k, v in doc["versions"].items())
    mm = doc.get("matmul", {})
    lines = [
        f"## Speed on {doc['device']} ({doc['created']}{', --quick' if doc.get('quick') else ''})",
        "",
        f"{m.get('cpu')}, {m.get('usable_cores')} usable cores; {vers}. jaxflows and flowjax in one "
        f"process, calls interleaved, {doc['settings']['runs']} runs per measurement; ratio = flowjax "
        "time / jaxflows time, median over runs (min–max). float32 matmul 2048²: "
        f"{mm.get('start_gflops', 0):.0f} GFLOP/s at the start, {mm.get('end_gflops', 0):.0f} at the end; "
        f"load average {doc.get('load_start')} → {doc.get('load_end')}; wall {doc.get('wall_s', 0):.0f} s.",
        "",
    ]
    rows = targets(doc)
    if rows:
        lines += ["### Goals", "", "| goal | threshold | measured | met |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {'yes' if d else '**no**'} |" for a, b, c, d in rows]
        lines.append("")
    head = ["| measurement | jaxflows | flowjax | speedup |", "|---|---|---|---|"]
    if doc.get("S"):
        lines += ["### S: dim 8, 8 layers, hidden (50,)", "",
                  "log_prob and sample at batch 4096, Adam train step at batch 512, on trained params.", ""] + head
        lines += [x for x in (_row("MAF log_prob", doc["S"].get("log_prob")),
                              _row("MAF sample", doc["S"].get("sample")),
                              _row("MAF train step", doc["S"].get("train_step"))) if x] + [""]
    L = doc.get("L")
    if L:
        lines += ["### L: dim 64, 5 layers, hidden (512, 512)", "",
                  "Batch 4096 (train step 512); MAF trained by maximum likelihood, IAF by reverse KL; "
                  "the IAF's log_prob is of data it did not sample.", ""] + head
        lines += [x for x in (_row("MAF log_prob", L.get("log_prob")), _row("MAF sample (sequential)", L.get("sample")),
                              _row("IAF log_prob (sequential)", L.get("iaf_log_prob")),
                              _row("MAF train step", L.get("train_step"))) if x]
        ts = L.get("train_step")
        if ts:
            mmr = statistics.median(ts["matmul_gflops_per_run"])
            lines += ["", f"Train step rate (FLOPs of the masked matmuls, forward + backward, "
                      f"{ts['flops'] / 1e9:.2f} GFLOP per step) against a 2048² float32 matmul interleaved with it "
                      f"({mmr:.0f} GFLOP/s, median over runs): jaxflows "
                      f"{_spread_text(ts['libs']['jaxflows']['pct_of_matmul'], '{:.0f}%')}, flowjax "
                      f"{_spread_text(ts['libs']['flowjax']['pct_of_matmul'], '{:.0f}%')}."]
        ex = L.get("exactness")
        if ex:
            lines += ["", "Cached inversion vs the `lax.scan` reference (`method=\"scan\"`), trained params, "
                      f"{ex['n_events']} events, max abs difference:", "",
                      "| precision | MAF samples | MAF log density | IAF latents | IAF log density |", "|---|---|---|---|---|"]
            for prec in ("float64", "float32"):
                e = ex[prec]
                lines.append(f"| {prec} | {e['maf']['values_max_abs']:.1e} | {e['maf']['log_prob_max_abs']:.1e} | "
                             f"{e['iaf']['values_max_abs']:.1e} | {e['iaf']['log_prob_max_abs']:.1e} |")
        lines.append("")
    sw = doc.get("sweep")
    if sw:
        cfg = sw["config"]
        lines += [f"### Dim sweep: {cfg['num_layers']} layers, one hidden layer of max(50, 2·dim), batch {cfg['batch']}", "",
                  "Median time, jaxflows / flowjax, and speedup (median over runs, min–max).", "",
                  "| dim | MAF log_prob (parallel) | IAF sample (parallel) | MAF sample (sequential) | IAF log_prob (sequential) |",
                  "|---|---|---|---|---|"]
        for dim, row in sw["results"].items():
            cells = []
            for key in ("maf_log_prob", "iaf_sample", "maf_sample", "iaf_log_prob"):
                res = row[key]
                cells.append(f"{C.fmt_s(res['libs']['jaxflows']['median_s'])} / {C.fmt_s(res['libs']['flowjax']['median_s'])}: "
                             f"{_spread_text(ratio(res))}")
            lines.append(f"| {dim} | " + " | ".join(cells) + " |")
        lines.append("")
    comp = doc.get("compile")
    if comp:
        lines += [f"### Compile time at S (trace + lower + XLA compile, best of {comp['repeats']} fresh builds; wall / CPU)", "",
                  "| layers | jaxflows MAF log_prob | jaxflows MAF sample | flowjax MAF log_prob | flowjax MAF sample |",
                  "|---|---|---|---|---|"]
        for layers, row in comp["by_layers"].items():
            cells = [f"{C.fmt_s(row[k]['total_s'])} / {C.fmt_s(row[k]['cpu_s'])}"
                     for k in ("jaxflows_log_prob", "jaxflows_sample", "flowjax_log_prob", "flowjax_sample")]
            lines.append(f"| {layers} | " + " | ".join(cells) + " |")
        lines.append("")
    mem = doc.get("memory")
    if mem:
        lines += [f"### Memory at L, batch {mem['batch']}", "",
                  "XLA's buffer assignment of the compiled program (`jax.jit(f).lower(...).compile()"
                  ".memory_analysis()`: arguments + outputs + temporaries − aliased; the temporaries are "
                  "XLA's planned peak of live intermediates), not a measured resident set.", "",
                  "| program | jaxflows | flowjax | ratio |", "|---|---|---|---|"]
        for key in ("maf_sample", "maf_log_prob", "iaf_log_prob"):
            if key in mem:
                r_ = mem[key]
                lines.append(f"| {key.replace('_', ' ', 1)} | {r_['jaxflows']['peak_bytes'] / 2**20:.1f} MiB | "
                             f"{r_['flowjax']['peak_bytes'] / 2**20:.1f} MiB | {r_['ratio']:.2f}× |")
        lines.append("")
    z = doc.get("zuko")
    if z and "configs" in z:
        lines += ["### zuko (its own process, not interleaved: a rough comparison)", "",
                  f"zuko {z.get('versions', {}).get('zuko', '?')}, torch {z.get('versions', {}).get('torch', '?')}.", "",
                  "| measurement | zuko | jaxflows (interleaved run above) | zuko / jaxflows |", "|---|---|---|---|"]
        for cfgname, path, label in (("S", ("maf", "log_prob"), "S MAF log_prob"), ("S", ("maf", "sample"), "S MAF sample"),
                                     ("S", ("maf", "train_step"), "S MAF train step"), ("L", ("maf", "log_prob"), "L MAF log_prob"),
                                     ("L", ("maf", "sample"), "L MAF sample"), ("L", ("iaf", "log_prob"), "L IAF log_prob")):
            zt = _get(z, "configs", cfgname, *path, "median_s")
            key = {"log_prob": "log_prob", "sample": "sample", "train_step": "train_step"}[path[1]]
            if path[0] == "iaf":
                key = "iaf_log_prob"
            jt = _get(doc, cfgname, key, "libs", "jaxflows", "median_s")
            if zt and jt:
                lines.append(f"| {label} | {C.fmt_s(zt)} | {C.fmt_s(jt)} | {zt / jt:.2f}× |")
        lines.append("")
    elif z:
        lines += [f"zuko: {z.get('error', 'not run')}", ""]
    return "\n".join(lines)


def plot(doc: Dict[str, Any], path: str) -> Optional[str]:
    """Time against dim of the sweep, both directions, log-log."""
    sw = _get(doc, "sweep", "results")
    if not sw:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        C.log("matplotlib not available: no plot")
        return None
    colors = {"jaxflows": "tab:blue", "flowjax": "tab:orange"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, title, keys in (
        (axes[0], "parallel direction", ("maf_log_prob", "iaf_sample")),
        (axes[1], "sequential direction", ("maf_sample", "iaf_log_prob")),
    ):
        for lib in LIBS:
            for key, style, marker in zip(keys, ("-", "--"), ("o", "s")):
                pts = sorted((int(d), r[key]["libs"][lib]["median_s"]) for d, r in sw.items())
                ax.plot(*zip(*pts), style, marker=marker, color=colors[lib], label=f"{lib} {key.replace('_', ' ', 1)}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("dim")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("seconds per call (batch 4096)")
    fig.suptitle(f"MAF / IAF time against dim, one process, interleaved ({doc['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _default_python(venv: str) -> Optional[str]:
    path = os.path.join(ROOT, venv, "bin", "python")
    return path if os.path.exists(path) else None


def measure(args) -> Dict[str, Any]:
    import jax

    spec = args.sections or ("S,sweep,compile,memory" if args.quick else ",".join(SECTIONS))
    sections = [s.strip() for s in spec.split(",") if s.strip()]
    for s in sections:
        if s not in SECTIONS:
            raise SystemExit(f"--sections: unknown section {s!r}; known: {', '.join(SECTIONS)}")
    dims = tuple(int(d) for d in args.dims.split(",")) if args.dims else ((8,) if args.quick else C.SWEEP["dims"])
    settings = {
        "sections": sections,
        "runs": args.runs,
        "target_s": 0.1 if args.quick else 0.5,
        "train_steps": 8 if args.quick else C.TRAIN["steps"],
        "sweep_train_steps": 2 if args.quick else C.SWEEP["train_steps"],
        "dims": dims,
        "quick": bool(args.quick),
    }
    t0 = time.perf_counter()
    b = Bench(settings)
    dev = jax.devices()[0]
    doc: Dict[str, Any] = {
        "device": "cpu" if dev.platform == "cpu" else C.slug(dev.device_kind),
        "device_kind": f"{dev.platform}:{dev.device_kind}",
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "machine": C.machine_info(),
        "versions": {**b.jf.versions, **{k: v for k, v in b.fj.versions.items() if k not in b.jf.versions}},
        "notes": {"jaxflows": b.jf.notes, "flowjax": b.fj.notes},
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "load_start": C.load_average(),
    }
    matmul = b.jf.matmul()
    start = C.matmul_rate(matmul, block=b.block)
    C.log(f"matmul {start['gflops']:.0f} GFLOP/s, load {doc['load_start']}")
    runners = {"S": section_S, "L": section_L, "sweep": section_sweep, "compile": section_compile, "memory": section_memory}
    for name in SECTIONS:
        if name in sections:
            doc[name] = runners[name](b)
    end = C.matmul_rate(matmul, block=b.block)
    doc["matmul"] = {"n": C.MATMUL_N, "start_gflops": start["gflops"], "end_gflops": end["gflops"]}
    doc["load_end"] = C.load_average()
    doc["wall_s"] = time.perf_counter() - t0
    zpy = args.zuko_python if args.zuko_python is not None else _default_python(".venv-bench")
    if zpy and zpy != "none" and not args.quick:
        doc["zuko"] = run_zuko(zpy, args.quick, args.zuko_timeout)
    return doc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default=None,
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default all; --quick: S,sweep,compile,memory)")
    p.add_argument("--runs", type=int, default=3, help="interleaved runs per measurement (the ratio's spread is over these; >= 3)")
    p.add_argument("--dims", default=None, help="sweep dims (default 8,16,32,64,128; --quick: 8)")
    p.add_argument("--quick", action="store_true", help="smoke run (under 2 minutes of CPU time): sections S, sweep at dim 8, compile at "
                        "5 and 10 layers, memory; short budgets, 8 train steps, no zuko")
    p.add_argument("--zuko-python", default=None,
                   help="python with zuko and torch for the separate zuko process (default .venv-bench/bin/python if "
                        "it exists; 'none' to skip)")
    p.add_argument("--zuko-timeout", type=float, default=900.0)
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--render", default=None, help="only render the tables and the plot from this JSON")
    args = p.parse_args(argv)
    if args.runs < 3:
        p.error("--runs: at least 3 (the spread of the ratio is over runs)")

    if args.render:
        with open(args.render) as fh:
            doc = json.load(fh)
    else:
        doc = measure(args)
    stem = os.path.join(args.results_dir, f"speed-{doc['device']}" + ("-quick" if doc.get("quick") else ""))
    if not args.render:
        C.write_json(stem + ".json", doc)
    text = render(doc)
    print(text)
    os.makedirs(args.results_dir, exist_ok=True)
    with open(stem + ".md", "w") as fh:
        fh.write(text + "\n")
    png = plot(doc, stem + ".png")
    C.log(f"wrote {stem}.json, .md" + (", .png" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
