"""Shared benchmark helpers: configs, timing, FLOP counts, machine info, JSON.

Only the standard library and NumPy are imported here, so that every
library's benchmark process (jaxflows in the project venv, flowjax and zuko
in the bench venv) can import this file.  Anything library specific (how to
block on a result, how to run a matmul) is passed in as a callable.

Conventions shared by every ``bench_*.py`` / ``peer_*.py`` script:

- Configs (``CONFIGS``): S = dim 8, 8 layers, one hidden layer of 50;
  L = dim 64, 5 layers, two hidden layers of 512.  ReLU MADE conditioners,
  affine transformers, 2 outputs per dimension.
- log_prob and sample at batch 4096; one Adam train step (value_and_grad of
  the mean negative log-likelihood + optimizer update) at batch 512.
- Dim sweep (``SWEEP``): dims 8, 16, 32, 64, 128, 8 layers, one hidden layer
  of width ``max(50, 2 * dim)`` (so every degree keeps about two hidden
  units as dim grows), batch 4096; both directions of MAF and IAF.
- "Trained" params: the MAF gets ``TRAIN["steps"]`` Adam steps of maximum
  likelihood on samples of a correlated Gaussian (``gaussian_target``); the
  IAF gets the same number of reverse-KL steps against that Gaussian's
  density (its sampling direction is the parallel one).  All S/L timings of
  sample and of the sequential directions are taken on those trained params.
- Caps: a sequential-direction sweep point is skipped when its predicted
  time per call exceeds ``SEQ_CALL_CAP_S`` or would push the script past
  ``--budget-s`` (default 420 s); skipped points are listed in the JSON.
- Timings: the first call (compile + one run) is measured separately; the
  reported time is the median of the following calls, each blocked until
  the result is ready.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

CONFIGS: Dict[str, Dict[str, Any]] = {
    "S": {"dim": 8, "num_layers": 8, "hidden": (50,)},
    "L": {"dim": 64, "num_layers": 5, "hidden": (512, 512)},
}
BATCH = {"log_prob": 4096, "sample": 4096, "train": 512}
TRAIN = {"steps": 50, "learning_rate": 1e-3, "batch": 512, "seed": 1}
SWEEP = {
    "dims": (8, 16, 32, 64, 128),
    "num_layers": 8,
    "width_rule": "max(50, 2 * dim), one hidden layer",
    "batch": 4096,
    "train_steps": 10,
    "learning_rate": 5e-3,
}
# Peers' sequential directions cost O(dim^2) passes-worth of work; a sweep
# point is skipped when its predicted single-call time exceeds this cap.
SEQ_CALL_CAP_S = 20.0
MATMUL_N = 2048


def sweep_hidden(dim: int) -> tuple:
    """Hidden widths of the dim sweep: one layer of ``max(50, 2 * dim)``."""
    return (max(50, 2 * dim),)


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def time_call(
    fn: Callable[[], Any],
    *,
    block: Callable[[Any], Any] = lambda out: out,
    min_repeats: int = 3,
    max_repeats: int = 50,
    target_s: float = 1.0,
    warmup: bool = True,
    slow_s: Optional[float] = None,
) -> Dict[str, Any]:
    """Time ``fn()`` (no arguments; close over the inputs).

    The first call (tracing + compilation + one run for jitted code) is
    timed on its own as ``first_s``.  Then ``fn`` is called until at least
    ``min_repeats`` calls were made and ``target_s`` seconds were spent, or
    ``max_repeats`` calls were made.  Each call is followed by
    ``block(out)`` (e.g. ``jax.block_until_ready``) inside the timed region.

    If ``slow_s`` is given and the first call took longer than that, the
    first call is the only measurement (``"from_first_call": True``; it
    then includes any compile time): a cap for very slow peers.

    Returns ``{"median_s", "min_s", "first_s", "repeats", "times_s"}``.
    """
    first = None
    if warmup:
        t0 = time.perf_counter()
        block(fn())
        first = time.perf_counter() - t0
        if slow_s is not None and first > slow_s:
            return {"median_s": first, "min_s": first, "first_s": first, "repeats": 1,
                    "times_s": [round(first, 6)], "from_first_call": True}
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats:
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
        if len(times) >= min_repeats and time.perf_counter() - start >= target_s:
            break
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "first_s": first,
        "repeats": len(times),
        "times_s": [round(t, 6) for t in times],
    }


def compile_time(build: Callable[[], Any], *, repeats: int = 3) -> Dict[str, Any]:
    """Trace+lower and compile time of a jitted function, best of ``repeats``.

    ``build()`` returns ``(jitted_fn, args)`` built afresh (a new flow and a
    new ``jax.jit`` object, so nothing is reused from a previous repeat);
    each repeat times ``jitted_fn.lower(*args)`` and ``.compile()``.
    """
    lowers, compiles = [], []
    for _ in range(repeats):
        fn, args = build()
        t0 = time.perf_counter()
        lowered = fn.lower(*args)
        t1 = time.perf_counter()
        lowered.compile()
        t2 = time.perf_counter()
        lowers.append(t1 - t0)
        compiles.append(t2 - t1)
    totals = [a + b for a, b in zip(lowers, compiles)]
    best = min(range(repeats), key=lambda i: totals[i])
    return {
        "lower_s": lowers[best],
        "compile_s": compiles[best],
        "total_s": totals[best],
        "all_total_s": [round(t, 4) for t in totals],
    }


def matmul_rate(
    run_matmul: Callable[[], Any],
    *,
    n: int = MATMUL_N,
    block: Callable[[Any], Any] = lambda out: out,
) -> Dict[str, Any]:
    """GFLOP/s of one ``(n, n) @ (n, n)`` float32 matmul (2 n^3 FLOPs).

    ``run_matmul()`` must compute the product of two fixed n-by-n float32
    matrices with the library under test (jitted for JAX).
    """
    t = time_call(run_matmul, block=block, min_repeats=10, max_repeats=200, target_s=2.0)
    flops = 2.0 * n**3
    return {
        "n": n,
        "dtype": "float32",
        "median_s": t["median_s"],
        "gflops": flops / t["median_s"] / 1e9,
        "best_gflops": flops / t["min_s"] / 1e9,
    }


# --------------------------------------------------------------------------
# FLOP counts
# --------------------------------------------------------------------------


def made_flops(
    batch: int,
    dim: int,
    hidden: Sequence[int],
    num_layers: int,
    *,
    params_per_dim: int = 2,
    context_dim: int = 0,
) -> int:
    """FLOPs of the masked matmuls of one parallel MAF pass (log_prob).

    Counting 2 FLOPs per multiply-add over the MADE weight matrices
    (``(dim + context_dim) x h1``, ``h1 x h2``, ..., ``hk x params_per_dim*dim``),
    for ``batch`` events and ``num_layers`` flow layers:

        2 * batch * num_layers * ((D + C) h1 + h1 h2 + ... + hk * P D)

    Biases, the mask products and the element-wise transformer are ignored.
    """
    widths = [dim + context_dim, *hidden, params_per_dim * dim]
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    return int(2 * batch * num_layers * macs)


def train_step_flops(
    batch: int, dim: int, hidden: Sequence[int], num_layers: int, *, params_per_dim: int = 2
) -> int:
    """FLOPs of the masked matmuls of one maximum-likelihood gradient step.

    Forward pass F (``made_flops``) plus backward: one weight-gradient
    matmul per weight matrix (F again) and one input-gradient matmul per
    weight matrix except the first layer's, whose input (the data) needs no
    gradient: ``3 F - 2 * batch * num_layers * dim * h1``.
    """
    forward = made_flops(batch, dim, hidden, num_layers, params_per_dim=params_per_dim)
    first = 2 * batch * num_layers * dim * hidden[0]
    return int(3 * forward - first)


# --------------------------------------------------------------------------
# Data: a correlated Gaussian all libraries train on
# --------------------------------------------------------------------------


def gaussian_target(dim: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """A strongly correlated Gaussian N(0, S), S = A A^T / dim + 0.1 I.

    Returns float32 ``chol`` (lower Cholesky factor of S), ``precision``
    (S^-1) and ``log_norm`` (-(dim/2) log 2 pi - (1/2) log det S), so that
    ``log p(x) = log_norm - 0.5 * x^T precision x``.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((dim, dim))
    cov = a @ a.T / dim + 0.1 * np.eye(dim)
    chol = np.linalg.cholesky(cov)
    _, logdet = np.linalg.slogdet(cov)
    return {
        "chol": chol.astype(np.float32),
        "precision": np.linalg.inv(cov).astype(np.float32),
        "log_norm": np.float32(-0.5 * dim * np.log(2 * np.pi) - 0.5 * logdet),
    }


def gaussian_samples(n: int, dim: int, seed: int = 0, sample_seed: int = 123) -> np.ndarray:
    """``n`` float32 samples ``(n, dim)`` of ``gaussian_target(dim, seed)``."""
    target = gaussian_target(dim, seed)
    z = np.random.default_rng(sample_seed).standard_normal((n, dim)).astype(np.float32)
    return z @ target["chol"].T


# --------------------------------------------------------------------------
# Machine info and JSON
# --------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> Dict[str, Any]:
    """Host facts that affect the timings (CPU, cores, thread env vars)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    env = {
        k: os.environ[k]
        for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES")
        if k in os.environ
    }
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "env": env,
    }


def load_average() -> Optional[list]:
    """1/5/15-minute load averages (other processes skew timings)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def slug(text: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def write_json(path: Optional[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path``, or to stdout if ``None``."""
    text = json.dumps(obj, indent=2, default=_json_default)
    if path is None:
        print(text)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def log(msg: str) -> None:
    """Progress line on stderr (stdout may carry the JSON)."""
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def fmt_s(seconds: Optional[float]) -> str:
    """Human time: ``0.0051`` -> ``"5.10 ms"``, ``5.74`` -> ``"5.74 s"``."""
    if seconds is None:
        return "-"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} us"


def common_arg_parser(description: str):
    """argparse parser with the options every benchmark script shares."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=None, help="JSON output path (default: stdout)")
    parser.add_argument(
        "--sections",
        default="S,L,sweep",
        help="comma-separated subset of S,L,sweep (and compile for jaxflows)",
    )
    parser.add_argument("--dims", default=None, help="override the sweep dims, e.g. 8,16")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="sweep points of the sequential direction that would end the script past this many "
        "seconds are skipped (each script must finish well inside 10 minutes)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: few repeats, 2 train steps, dims 8,16"
    )
    return parser


def settings_from_args(args) -> Dict[str, Any]:
    """Resolve --sections/--dims/--quick into a settings dict."""
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    dims = tuple(SWEEP["dims"])
    if args.dims:
        dims = tuple(int(d) for d in args.dims.split(","))
    elif args.quick:
        dims = (8, 16)
    return {
        "sections": sections,
        "dims": dims,
        "train_steps": 2 if args.quick else TRAIN["steps"],
        "sweep_train_steps": 2 if args.quick else SWEEP["train_steps"],
        "target_s": 0.2 if args.quick else 1.0,
        "quick": bool(args.quick),
        "budget_s": float(args.budget_s),
    }
