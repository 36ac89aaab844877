"""Side-by-side speed benchmark driver: jaxflows vs flowjax vs zuko.

    python benchmarks/speed.py                 # everything (about 10-15 min on 2 CPU cores)
    python benchmarks/speed.py --quick         # smoke test
    python benchmarks/speed.py --render results/speed-cpu.json   # tables from saved JSON

Each library runs in its own subprocess, one after the other (never in
parallel: they would share the cores): jaxflows with the project's python
(``--jaxflows-python``, default ``.venv/bin/python``), flowjax and zuko with
the bench environment's python (``--peer-python``, default
``.venv-bench/bin/python``; install it with ``pip install -e .[bench]`` or
``benchmarks/requirements-bench.txt``).  The per-library JSON documents are
merged into ``benchmarks/results/speed-<device>.json``; the markdown tables
(ratios, GFLOP/s, % of the machine's matmul rate, targets) are printed and
saved as ``speed-<device>.md``, and the time-against-dim plot as
``speed-<device>.png``.  Nothing here is CPU specific: on a GPU/TPU machine
the same command times the accelerator (JAX and torch pick it up
themselves) and writes files named after it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _common as C  # noqa: E402

SCRIPTS = {
    "jaxflows": "bench_jaxflows.py",
    "flowjax": "peer_flowjax.py",
    "zuko": "peer_zuko.py",
}
PEERS = ("flowjax", "zuko")


def _default_python(venv: str) -> str:
    path = os.path.join(ROOT, venv, "bin", "python")
    return path if os.path.exists(path) else sys.executable


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


def run_library(name: str, python: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Run one library's script in a subprocess; return its JSON (or an error)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, f"{name}.json")
        cmd = [python, os.path.join(HERE, SCRIPTS[name]), "--out", out]
        if args.sections:
            cmd += ["--sections", args.sections]
        if args.dims:
            cmd += ["--dims", args.dims]
        if args.quick:
            cmd.append("--quick")
        C.log(f"== {name}: {' '.join(cmd)}")
        try:
            proc = subprocess.run(cmd, timeout=args.timeout, stdout=subprocess.PIPE, text=True)
            rc, err = proc.returncode, None
        except subprocess.TimeoutExpired:
            rc, err = None, f"timed out after {args.timeout} s"
        if os.path.exists(out):
            with open(out) as fh:
                doc = json.load(fh)
            if rc != 0:
                doc["error"] = err or f"exit code {rc} (partial results)"
            return doc
        return {"library": name, "error": err or f"exit code {rc}, no JSON written"}


def device_name(docs: Dict[str, Any]) -> str:
    """``"cpu"`` or a slug of the accelerator (from jaxflows, else any)."""
    for name in ("jaxflows", *PEERS):
        dev = docs.get(name, {}).get("device")
        if dev:
            platform, _, kind = dev.partition(":")
            return "cpu" if platform == "cpu" else C.slug(kind or platform)
    return "unknown"


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _get(doc: Optional[Dict[str, Any]], *path) -> Optional[Any]:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _median(doc, *path) -> Optional[float]:
    return _get(doc, *path, "median_s")


def _ratio(num: Optional[float], den: Optional[float]) -> str:
    if num is None or den is None or den == 0:
        return "-"
    return f"{num / den:.2f}x"


def machine_rate(docs: Dict[str, Any]) -> Optional[float]:
    """The machine's matmul rate: jaxflows' process (jitted float32 JAX)."""
    return _get(docs.get("jaxflows"), "matmul", "gflops") or _get(docs.get("flowjax"), "matmul", "gflops")


METRICS = (
    ("MAF log_prob", ("maf", "log_prob")),
    ("MAF sample", ("maf", "sample")),
    ("MAF train step", ("maf", "train_step")),
    ("IAF sample", ("iaf", "sample")),
    ("IAF log_prob", ("iaf", "log_prob")),
    ("IAF reverse-KL step", ("iaf", "train_step_rkl")),
)


def config_table(docs: Dict[str, Any], name: str) -> List[str]:
    libs = [lib for lib in ("jaxflows", *PEERS) if _get(docs.get(lib), "configs", name)]
    if not libs:
        return []
    cfg = _get(docs[libs[0]], "configs", name, "config")
    lines = [
        f"### {name}: dim {cfg['dim']}, {cfg['num_layers']} layers, hidden {tuple(cfg['hidden'])}",
        "",
        "log_prob and sample at batch 4096, train steps at batch 512; median wall time; "
        "speedup = peer time / jaxflows time.",
        "",
        "| metric | " + " | ".join(libs) + " | " + " | ".join(f"vs {p}" for p in PEERS if p in libs) + " |",
        "|---|" + "---|" * (len(libs) + sum(p in libs for p in PEERS)),
    ]
    for label, path in METRICS:
        times = {lib: _median(docs[lib], "configs", name, *path) for lib in libs}
        if all(t is None for t in times.values()):
            continue
        row = [label] + [C.fmt_s(times[lib]) for lib in libs]
        row += [_ratio(times[p], times.get("jaxflows")) for p in PEERS if p in libs]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def efficiency_table(docs: Dict[str, Any]) -> List[str]:
    rate = machine_rate(docs)
    lines = [
        "### Arithmetic rate at L",
        "",
        "FLOPs = 2 per multiply-add of the masked matmuls (log_prob: "
        "2·B·n·(D·h1 + h1·h2 + h2·2D); train step: forward + weight grads + input grads "
        "except the first layer's). Machine matmul rate: jitted float32 2048² matmul "
        f"in the jaxflows process = **{rate:.0f} GFLOP/s**." if rate else "",
        "",
        "| library | MAF log_prob GFLOP/s | % of matmul | train step GFLOP/s | % of matmul | own-process matmul GFLOP/s |",
        "|---|---|---|---|---|---|",
    ]
    for lib in ("jaxflows", *PEERS):
        doc = docs.get(lib)
        lp = _get(doc, "configs", "L", "maf", "log_prob", "gflops")
        tr = _get(doc, "configs", "L", "maf", "train_step", "gflops")
        if lp is None and tr is None:
            continue
        own = _get(doc, "matmul", "gflops")
        pct = lambda v: f"{100 * v / rate:.0f}%" if (v and rate) else "-"  # noqa: E731
        lines.append(
            f"| {lib} | {lp:.0f} | {pct(lp)} | {tr:.0f} | {pct(tr)} | {own:.0f} |"
            if lp and tr and own
            else f"| {lib} | {lp} | {pct(lp)} | {tr} | {pct(tr)} | {own} |"
        )
    ceil = _get(docs.get("jaxflows"), "mlp_ceiling")
    if ceil and rate:
        lines.append(
            f"| bare MLP ({ceil['what']}) | {ceil['gflops']:.0f} | {100 * ceil['gflops'] / rate:.0f}% | - | - | - |"
        )
    return lines + [""]


SWEEP_KEYS = (
    ("MAF log_prob (parallel)", "maf_log_prob"),
    ("IAF sample (parallel)", "iaf_sample"),
    ("MAF sample (sequential)", "maf_sample"),
    ("IAF log_prob (sequential)", "iaf_log_prob"),
)


def _sweep_cell(doc, dim, key) -> Optional[float]:
    return _median(doc, "sweep", "results", str(dim), key)


def sweep_tables(docs: Dict[str, Any]) -> List[str]:
    libs = [lib for lib in ("jaxflows", *PEERS) if _get(docs.get(lib), "sweep")]
    if not libs:
        return []
    cfg = docs[libs[0]]["sweep"]["config"]
    dims = sorted({int(d) for lib in libs for d in docs[lib]["sweep"]["results"]})
    lines = [
        f"### Dim sweep: {cfg['num_layers']} layers, hidden width {cfg['width_rule']}, batch {cfg['batch']}",
        "",
        "Sequential-direction points predicted to take more than "
        f"{C.SEQ_CALL_CAP_S:.0f} s per call are skipped ('skip').",
        "",
    ]
    for label, key in SWEEP_KEYS:
        lines += [
            f"**{label}**",
            "",
            "| dim | " + " | ".join(libs) + " | " + " | ".join(f"vs {p}" for p in PEERS if p in libs) + " |",
            "|---|" + "---|" * (len(libs) + sum(p in libs for p in PEERS)),
        ]
        for dim in dims:
            times = {lib: _sweep_cell(docs[lib], dim, key) for lib in libs}
            cells = []
            for lib in libs:
                entry = _get(docs[lib], "sweep", "results", str(dim), key)
                cells.append("skip" if entry and "skipped" in entry else C.fmt_s(times[lib]))
            cells += [_ratio(times[p], times.get("jaxflows")) for p in PEERS if p in libs]
            lines.append(f"| {dim} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def compile_table(docs: Dict[str, Any]) -> List[str]:
    jf = _get(docs.get("jaxflows"), "compile", "by_layers")
    fj = _get(docs.get("flowjax"), "compile")
    if not jf and not fj:
        return []
    lines = [
        "### Compile time at S (trace + lower + XLA compile)",
        "",
        "| layers | jaxflows MAF log_prob | jaxflows MAF sample | jaxflows IAF log_prob | jaxflows IAF sample "
        "| flowjax MAF log_prob | flowjax MAF sample |",
        "|---|---|---|---|---|---|---|",
    ]
    for layers in ("5", "10", "20"):
        cells = [
            C.fmt_s(_get(jf, layers, k, "total_s")) for k in ("maf_log_prob", "maf_sample", "iaf_log_prob", "iaf_sample")
        ] + [C.fmt_s(_get(fj, layers, k, "total_s")) for k in ("log_prob", "sample")]
        lines.append(f"| {layers} | " + " | ".join(cells) + " |")
    return lines + [""]


def targets_table(docs: Dict[str, Any]) -> List[str]:
    """The speed goals jaxflows was built against, measured, with pass/fail."""
    jf, fj = docs.get("jaxflows"), docs.get("flowjax")
    if not jf or not fj:
        return []
    rate = machine_rate(docs)
    rows = []

    def speedup(*path):
        a, b = _median(jf, "configs", *path), _median(fj, "configs", *path)
        return None if a is None or b is None else b / a

    for label, path, goal in (
        ("S log_prob vs flowjax", ("S", "maf", "log_prob"), 2.0),
        ("S train step vs flowjax", ("S", "maf", "train_step"), 2.0),
        ("S MAF sample vs flowjax", ("S", "maf", "sample"), 3.0),
        ("L log_prob vs flowjax", ("L", "maf", "log_prob"), 1.0),
        ("L train step vs flowjax", ("L", "maf", "train_step"), 1.0),
        ("L MAF sample (trained) vs flowjax", ("L", "maf", "sample"), 10.0),
        ("L IAF log_prob (trained, unseen data) vs flowjax", ("L", "iaf", "log_prob"), 10.0),
    ):
        s = speedup(*path)
        rows.append((label, f">= {goal:g}x", "-" if s is None else f"{s:.3g}x", s is not None and s >= goal))
    for label, path in (("L log_prob % of matmul", ("log_prob",)), ("L train step % of matmul", ("train_step",))):
        g = _get(jf, "configs", "L", "maf", *path, "gflops")
        pct = None if g is None or not rate else 100 * g / rate
        rows.append((label, ">= 80%", "-" if pct is None else f"{pct:.0f}%", pct is not None and pct >= 80))
    comp = _get(jf, "compile")
    if comp:
        worst = max(comp["ratio_20_over_5"].values()) if comp.get("ratio_20_over_5") else None
        rows.append(("compile 20 vs 5 layers (worst)", "<= 1.3x", "-" if worst is None else f"{worst:.2f}x",
                     worst is not None and worst <= 1.3))
        ten = [v["total_s"] for v in comp["by_layers"].get("10", {}).values()]
        t10 = max(ten) if ten else None
        rows.append(("compile at S, 10 layers (worst)", "< 0.5 s", C.fmt_s(t10), t10 is not None and t10 < 0.5))
    ex = _get(jf, "exactness")
    if ex:
        errs = [
            v
            for kind in ("maf", "iaf")
            for k, v in (ex.get(kind) or {}).items()
            if k.endswith("max_abs") and isinstance(v, (int, float))
        ]
        worst = max(errs) if errs else None
        rows.append(("sequential direction exact (max abs err)", "<= 1e-5", "-" if worst is None else f"{worst:.1e}",
                     worst is not None and worst <= 1e-5))
    lines = ["### Speed goals", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {'-' if c == '-' else ('yes' if d else '**no**')} |" for a, b, c, d in rows]
    return lines + [""]


def header(merged: Dict[str, Any]) -> List[str]:
    docs = merged["libraries"]
    any_doc = next((d for d in docs.values() if "machine" in d), {})
    m = any_doc.get("machine", {})
    lines = [
        f"## Speed on {merged['device']} ({merged['created']})",
        "",
        f"Machine: {m.get('cpu')} with {m.get('usable_cores')} usable cores, {m.get('platform')}.",
        "",
        "| library | versions | device | matmul GFLOP/s (start / end) | load avg (start / end) | wall |",
        "|---|---|---|---|---|---|",
    ]
    for lib in ("jaxflows", *PEERS):
        d = docs.get(lib)
        if not d:
            continue
        if "error" in d and "versions" not in d:
            lines.append(f"| {lib} | - | - | - | - | failed: {d['error']} |")
            continue
        vers = ", ".join(f"{k} {v}" for k, v in d.get("versions", {}).items())
        mm = f"{_get(d, 'matmul_start', 'gflops') or 0:.0f} / {_get(d, 'matmul_end', 'gflops') or 0:.0f}"
        load = f"{(d.get('load_start') or ['-'])[0]} / {(d.get('load_end') or ['-'])[0]}"
        wall = f"{d.get('wall_s', 0):.0f} s" + (f" ({d['error']})" if "error" in d else "")
        lines.append(f"| {lib} | {vers} | {d.get('device')} | {mm} | {load} | {wall} |")
    return lines + [""]


def render(merged: Dict[str, Any]) -> str:
    docs = merged["libraries"]
    parts = header(merged) + targets_table(docs)
    for name in ("S", "L"):
        parts += config_table(docs, name)
    parts += efficiency_table(docs) if any(_get(d, "configs", "L") for d in docs.values()) else []
    parts += sweep_tables(docs) + compile_table(docs)
    ex = _get(docs.get("jaxflows"), "exactness")
    if ex:
        parts += ["### Exactness of jaxflows' sequential direction (L, trained)", "", "```", json.dumps(ex, indent=1), "```", ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------


def plot(merged: Dict[str, Any], path: str) -> Optional[str]:
    """Time against dim, parallel and sequential directions, log-log."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        C.log("matplotlib not available: no plot")
        return None
    docs = merged["libraries"]
    colors = {"jaxflows": "tab:blue", "flowjax": "tab:orange", "zuko": "tab:green"}
    styles = {"maf": "-", "iaf": "--"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, title, keys in (
        (axes[0], "parallel direction", ("maf_log_prob", "iaf_sample")),
        (axes[1], "sequential direction", ("maf_sample", "iaf_log_prob")),
    ):
        for lib, doc in docs.items():
            results = _get(doc, "sweep", "results") or {}
            for key in keys:
                pts = sorted((int(d), r[key]["median_s"]) for d, r in results.items() if "median_s" in r.get(key, {}))
                if pts:
                    label = f"{lib} {key.replace('_', ' ', 1)}"
                    ax.plot(*zip(*pts), styles[key[:3]], marker="o", color=colors.get(lib), label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("dim")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("seconds per call (batch 4096)")
    fig.suptitle(f"MAF / IAF time against dim on {merged['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jaxflows-python", default=_default_python(".venv"))
    p.add_argument("--peer-python", default=_default_python(".venv-bench"))
    p.add_argument("--libraries", default="jaxflows,flowjax,zuko")
    p.add_argument("--sections", default=None, help="passed to each script (default: each script's own)")
    p.add_argument("--dims", default=None, help="sweep dims, e.g. 8,16,32")
    p.add_argument("--quick", action="store_true", help="smoke test (few repeats, dims 8,16)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per library script")
    p.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--render", default=None, help="only render tables/plot from this merged JSON")
    args = p.parse_args(argv)

    if args.render:
        with open(args.render) as fh:
            merged = json.load(fh)
    else:
        docs = {}
        for lib in [s.strip() for s in args.libraries.split(",") if s.strip()]:
            if lib not in SCRIPTS:
                p.error(f"--libraries: unknown library {lib!r}; known: {', '.join(SCRIPTS)}")
            python = args.jaxflows_python if lib == "jaxflows" else args.peer_python
            docs[lib] = run_library(lib, python, args)
        merged = {
            "device": device_name(docs),
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "quick": bool(args.quick),
            "libraries": docs,
        }
    os.makedirs(args.results_dir, exist_ok=True)
    stem = f"speed-{merged['device']}" + ("-quick" if merged.get("quick") else "")
    if not args.render:
        C.write_json(os.path.join(args.results_dir, stem + ".json"), merged)
    text = render(merged)
    print(text)
    with open(os.path.join(args.results_dir, stem + ".md"), "w") as fh:
        fh.write(text + "\n")
    png = plot(merged, os.path.join(args.results_dir, stem + ".png"))
    C.log(f"wrote {os.path.join(args.results_dir, stem)}.{{json,md}}" + (" and .png" if png else ""))
    return 0 if all("error" not in d for d in merged["libraries"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
