"""Library-agnostic benchmark orchestration (stdlib + NumPy only).

Each library script (``bench_jaxflows.py``, ``peer_flowjax.py``,
``peer_zuko.py``) builds an ``Adapter`` of pure closures for its library and
calls ``run(adapter, settings)``; this module decides what is timed, in what
order, on which params, and writes one JSON document.  Keeping the schedule
here guarantees every library is measured the same way.

Adapter fields (``kind`` is ``"maf"`` or ``"iaf"``; ``x`` a float32 NumPy
array ``(n, dim)``; every ``*_thunk`` is a zero-argument callable whose
result is passed to ``block``):

- ``make(kind, dim, hidden, num_layers, seed) -> model`` (opaque)
- ``log_prob(model, x) -> thunk``: log densities of ``x`` ``(n,)``
- ``sample(model, n, seed) -> thunk``: ``(n, dim)`` samples
- ``mle_trainer(model, x, lr) -> Trainer``: Adam on ``-mean log q(x)``
- ``rkl_trainer(model, target, batch, lr) -> Trainer``: Adam on reverse KL
  ``mean(log q(y) - log p(y))``, ``y ~ q`` (``target`` from
  ``gaussian_target``)
- ``matmul() -> thunk``: one float32 ``MATMUL_N``-square matmul
- ``block(out)``: wait for ``out`` to be computed

A ``Trainer`` is ``(step, model, loss)``: ``step()`` does one full update
(value_and_grad + optimizer) and returns the loss; ``model()`` returns the
current model; ``loss()`` evaluates the current loss.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, NamedTuple, Optional

import _common as C


class Trainer(NamedTuple):
    step: Callable[[], Any]
    model: Callable[[], Any]
    loss: Callable[[], float]


class Adapter(NamedTuple):
    library: str
    versions: Dict[str, str]
    device: str
    block: Callable[[Any], Any]
    make: Callable[..., Any]
    log_prob: Callable[..., Callable[[], Any]]
    sample: Callable[..., Callable[[], Any]]
    mle_trainer: Callable[..., Trainer]
    rkl_trainer: Callable[..., Trainer]
    matmul: Callable[[], Callable[[], Any]]
    notes: Dict[str, str]
    # name -> fn(settings) -> JSON-able result, run when the name is in sections
    extra_sections: Optional[Dict[str, Callable[[Dict[str, Any]], Any]]] = None


def _train(adapter: Adapter, trainer: Trainer, steps: int, target_s: float) -> Dict[str, Any]:
    """Run exactly ``steps`` timed updates; the first is timed separately."""
    before = float(trainer.loss())
    timing = C.time_call(
        trainer.step,
        block=adapter.block,
        min_repeats=max(steps - 1, 1),
        max_repeats=max(steps - 1, 1),
        target_s=0.0,
    )
    after = float(trainer.loss())
    timing["loss_before"] = before
    timing["loss_after"] = after
    timing["steps"] = timing["repeats"] + 1
    return timing


def _seq_timing(adapter: Adapter, thunk: Callable[[], Any], target_s: float) -> Dict[str, Any]:
    """Timing for a possibly slow (sequential) call: few repeats if slow."""
    return C.time_call(
        thunk, block=adapter.block, min_repeats=1, max_repeats=20, target_s=4.0 * target_s, slow_s=C.SEQ_CALL_CAP_S
    )


def _rate(flops: int, timing: Dict[str, Any]) -> Dict[str, Any]:
    timing = dict(timing)
    timing["flops"] = flops
    timing["gflops"] = flops / timing["median_s"] / 1e9
    return timing


def run_config(adapter: Adapter, name: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    """S or L: MAF log_prob / sample / train step, IAF both directions.

    Order: build MAF and IAF; train the MAF by maximum likelihood (timed
    train steps) and the IAF by reverse KL; then time everything else on
    the trained params.
    """
    cfg = C.CONFIGS[name]
    dim, hidden, layers = cfg["dim"], cfg["hidden"], cfg["num_layers"]
    target = C.gaussian_target(dim)
    x_eval = C.gaussian_samples(C.BATCH["log_prob"], dim, sample_seed=123)
    x_train = C.gaussian_samples(C.BATCH["train"], dim, sample_seed=456)
    lr, steps, tgt = C.TRAIN["learning_rate"], settings["train_steps"], settings["target_s"]
    out: Dict[str, Any] = {"config": {**cfg, "batch": C.BATCH}, "maf": {}, "iaf": {}}

    C.log(f"[{adapter.library}] {name}: building")
    maf = adapter.make("maf", dim, hidden, layers, seed=0)
    iaf = adapter.make("iaf", dim, hidden, layers, seed=0)

    C.log(f"[{adapter.library}] {name}: MAF train step x{steps}")
    trainer = adapter.mle_trainer(maf, x_train, lr)
    train = _train(adapter, trainer, steps, tgt)
    out["maf"]["train_step"] = _rate(C.train_step_flops(C.BATCH["train"], dim, hidden, layers), train)
    maf = trainer.model()

    C.log(f"[{adapter.library}] {name}: IAF reverse-KL train x{steps}")
    trainer = adapter.rkl_trainer(iaf, target, C.BATCH["train"], lr)
    out["iaf"]["train_step_rkl"] = _train(adapter, trainer, steps, tgt)
    iaf = trainer.model()
    out["trained"] = (
        f"MAF: {steps} Adam steps (lr {lr}) of maximum likelihood on batch {C.BATCH['train']} of "
        f"samples of gaussian_target({dim}); IAF: {steps} Adam steps (lr {lr}) of reverse KL to "
        f"that Gaussian at batch {C.BATCH['train']}. All timings below use the trained params."
    )

    C.log(f"[{adapter.library}] {name}: MAF log_prob")
    lp_flops = C.made_flops(C.BATCH["log_prob"], dim, hidden, layers)
    t = C.time_call(adapter.log_prob(maf, x_eval), block=adapter.block, target_s=tgt)
    out["maf"]["log_prob"] = _rate(lp_flops, t)
    C.log(f"[{adapter.library}] {name}: MAF sample (sequential)")
    out["maf"]["sample"] = _seq_timing(adapter, adapter.sample(maf, C.BATCH["sample"], 7), tgt)
    C.log(f"[{adapter.library}] {name}: IAF sample")
    t = C.time_call(adapter.sample(iaf, C.BATCH["sample"], 7), block=adapter.block, target_s=tgt)
    out["iaf"]["sample"] = _rate(C.made_flops(C.BATCH["sample"], dim, hidden, layers), t)
    C.log(f"[{adapter.library}] {name}: IAF log_prob (sequential, data it did not sample)")
    out["iaf"]["log_prob"] = _seq_timing(adapter, adapter.log_prob(iaf, x_eval), tgt)
    for kind in ("maf", "iaf"):
        for key, val in out[kind].items():
            C.log(f"    {kind}.{key}: {C.fmt_s(val['median_s'])}" + (f"  {val['gflops']:.1f} GFLOP/s" if "gflops" in val else ""))
    return out


def run_sweep(adapter: Adapter, settings: Dict[str, Any]) -> Dict[str, Any]:
    """Dim sweep of both directions of MAF and IAF (briefly trained params).

    A sequential-direction point is skipped when its predicted single-call
    time (previous dim's median scaled by (d / d_prev)^3: d steps, each a
    pass whose cost grows as d * width + width^2 with width ~ 2d) exceeds
    ``C.SEQ_CALL_CAP_S``.
    """
    batch, layers = C.SWEEP["batch"], C.SWEEP["num_layers"]
    lr, steps, tgt = C.SWEEP["learning_rate"], settings["sweep_train_steps"], settings["target_s"]
    results: Dict[str, Any] = {}
    prev: Dict[str, Any] = {}
    skipped = []
    for dim in settings["dims"]:
        hidden = C.sweep_hidden(dim)
        target = C.gaussian_target(dim)
        x_eval = C.gaussian_samples(batch, dim, sample_seed=123)
        x_train = C.gaussian_samples(C.BATCH["train"], dim, sample_seed=456)
        flops = C.made_flops(batch, dim, hidden, layers)
        row: Dict[str, Any] = {"hidden": hidden, "flops_one_pass": flops}
        C.log(f"[{adapter.library}] sweep dim {dim}")
        maf = adapter.make("maf", dim, hidden, layers, seed=0)
        trainer = adapter.mle_trainer(maf, x_train, lr)
        _train(adapter, trainer, steps, tgt)
        maf = trainer.model()
        iaf = adapter.make("iaf", dim, hidden, layers, seed=0)
        trainer = adapter.rkl_trainer(iaf, target, C.BATCH["train"], lr)
        _train(adapter, trainer, steps, tgt)
        iaf = trainer.model()

        row["maf_log_prob"] = _rate(flops, C.time_call(adapter.log_prob(maf, x_eval), block=adapter.block, target_s=tgt))
        row["iaf_sample"] = _rate(flops, C.time_call(adapter.sample(iaf, batch, 7), block=adapter.block, target_s=tgt))
        for key, thunk_fn in (
            ("maf_sample", lambda: adapter.sample(maf, batch, 7)),
            ("iaf_log_prob", lambda: adapter.log_prob(iaf, x_eval)),
        ):
            predicted = None
            if key in prev:
                pdim, psec = prev[key]
                predicted = psec * (dim / pdim) ** 3
            elapsed = time.perf_counter() - settings["t0"]
            reason = None
            if predicted is not None and predicted > C.SEQ_CALL_CAP_S:
                reason = f"predicted {predicted:.1f} s per call > cap {C.SEQ_CALL_CAP_S} s"
            elif predicted is not None and elapsed + 3 * predicted > settings["budget_s"]:
                reason = f"predicted {predicted:.1f} s per call would overrun the {settings['budget_s']:.0f} s script budget"
            if reason:
                row[key] = {"skipped": reason}
                skipped.append(f"{key}@{dim}")
                continue
            row[key] = _seq_timing(adapter, thunk_fn(), tgt)
            prev[key] = (dim, row[key]["median_s"])
        C.log(
            "    "
            + "  ".join(
                f"{k}={C.fmt_s(row[k].get('median_s')) if 'median_s' in row[k] else 'skipped'}"
                for k in ("maf_log_prob", "maf_sample", "iaf_log_prob", "iaf_sample")
            )
        )
        results[str(dim)] = row
    return {
        "config": {**{k: v for k, v in C.SWEEP.items() if k != "dims"}, "dims": list(settings["dims"]), "train_steps": steps},
        "seq_call_cap_s": C.SEQ_CALL_CAP_S,
        "budget_s": settings["budget_s"],
        "skipped": skipped,
        "results": results,
    }


def run(adapter: Adapter, settings: Dict[str, Any], out_path: Optional[str]) -> Dict[str, Any]:
    """Run the requested sections and write the JSON document."""
    t0 = time.perf_counter()
    settings = {**settings, "t0": t0}
    doc: Dict[str, Any] = {
        "library": adapter.library,
        "versions": adapter.versions,
        "device": adapter.device,
        "machine": C.machine_info(),
        "notes": adapter.notes,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items() if k != "t0"},
    }
    C.log(f"[{adapter.library}] matmul {C.MATMUL_N}^2 float32")
    matmul = adapter.matmul()
    doc["matmul_start"] = C.matmul_rate(matmul, block=adapter.block)
    doc["load_start"] = C.load_average()
    C.log(f"    {doc['matmul_start']['gflops']:.1f} GFLOP/s (load {doc['load_start']})")
    doc["configs"] = {}
    for name in ("S", "L"):
        if name in settings["sections"]:
            doc["configs"][name] = run_config(adapter, name, settings)
            C.write_json(out_path, doc) if out_path else None
    if "sweep" in settings["sections"]:
        doc["sweep"] = run_sweep(adapter, settings)
    for name, fn in (adapter.extra_sections or {}).items():
        if name in settings["sections"]:
            C.log(f"[{adapter.library}] {name}")
            doc[name] = fn(settings)
    doc["matmul_end"] = C.matmul_rate(matmul, block=adapter.block)
    doc["load_end"] = C.load_average()
    # The machine's rate: the better of the two (other processes on a shared
    # machine only ever slow a measurement down).
    doc["matmul"] = max(doc["matmul_start"], doc["matmul_end"], key=lambda m: m["gflops"])
    C.log(f"    matmul at end {doc['matmul_end']['gflops']:.1f} GFLOP/s (load {doc['load_end']})")
    doc["wall_s"] = time.perf_counter() - t0
    C.write_json(out_path, doc)
    C.log(f"[{adapter.library}] done in {doc['wall_s']:.1f} s")
    return doc
