"""The ``jaxflows`` command line (also ``python -m jaxflows``).

::

    jaxflows fit [DATA] --flow maf --layers 5 --hidden 64,64 --epochs 100 --out DIR
    jaxflows sample CKPT -n 1000 --out samples.npy
    jaxflows score CKPT DATA --out scores.npy
    jaxflows info CKPT

``fit`` loads DATA (``.npy``, ``.npz`` with ``--key``, or delimited text with
``--delimiter``/``--drop``; without DATA: scikit-learn's digits, dequantised),
splits it 80/10/10 into train/validation/test, standardises every column
with the training rows' mean and standard deviation, trains, and writes into
DIR ``model.ckpt`` (flow, best params, standardiser), ``metrics.json`` and
``report.png``. Log-likelihoods are in the data's own units:
``log p(x) = log q((x - mean) / scale) - sum_j log scale_j``.

Any error prints one line ``jaxflows: error: ...`` on stderr and exits with
status 1 (2 for a bad command line), without a traceback; set
``JAXFLOWS_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import List, Optional, Sequence

MODEL_FILE = "model.ckpt"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.png"


class UsageError(Exception):
    """A bad command line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _hidden(text: str) -> List[int]:
    try:
        sizes = [int(t) for t in text.replace(" ", ",").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden must be comma-separated integers, got {text!r}")
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--hidden must be positive integers, got {text!r}")
    return sizes


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        if not v > 0 or (kind is float and not math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return v
    return parse


def _data_args(p):
    p.add_argument("--key", help="array name inside an .npz file")
    p.add_argument("--delimiter", help="text delimiter: a character, 'tab' or 'whitespace' "
                                       "(default: detected)")
    p.add_argument("--drop", help="columns to remove, e.g. 'quality' or '0,3' (names need a header)")


def build_parser() -> argparse.ArgumentParser:
    from .flows import FACTORIES

    parser = _Parser(prog="jaxflows", description="Normalizing flows: fit, sample, score.")
    sub = parser.add_subparsers(dest="command", metavar="{fit,sample,score,info}",
                                parser_class=_Parser)
    sub.required = True

    f = sub.add_parser("fit", help="train a flow on a data file (or the bundled digits)")
    f.add_argument("data", nargs="?", help=".npy, .npz or .csv/.tsv/.txt; default: "
                                           "scikit-learn digits (1797 x 64, dequantised)")
    _data_args(f)
    f.add_argument("--flow", default="maf", choices=sorted(FACTORIES), help="flow family")
    f.add_argument("--layers", type=_positive(int), default=5, help="number of flow layers")
    f.add_argument("--hidden", type=_hidden, default=[64, 64], help="hidden sizes, e.g. 64,64")
    f.add_argument("--epochs", type=_positive(int), default=100, help="maximum epochs")
    f.add_argument("--batch-size", type=_positive(int), default=256)
    f.add_argument("--lr", type=_positive(float), default=1e-3, help="Adam learning rate")
    f.add_argument("--patience", type=_positive(int), default=10,
                   help="stop after this many epochs without a better validation loss")
    f.add_argument("--clip", type=_positive(float), default=None,
                   help="clip gradients to this global norm")
    f.add_argument("--seed", type=int, default=0, help="seed of the split, init and batches")
    f.add_argument("--out", default="jaxflows-run", help="output directory (created)")
    f.add_argument("--resume", action="store_true",
                   help="continue an interrupted fit from OUT/train_state")
    f.add_argument("--no-plot", action="store_true", help="skip report.png")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="draw samples from a checkpoint")
    s.add_argument("checkpoint")
    s.add_argument("-n", "--num", type=_positive(int), default=1000, help="number of samples")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="samples.npy", help="output .npy or .csv")

    c = sub.add_parser("score", help="log-likelihood (nats, data units) of each row of DATA")
    c.add_argument("checkpoint")
    c.add_argument("data")
    _data_args(c)
    c.add_argument("--out", default="scores.npy", help="output .npy or .csv")

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("checkpoint")
    return parser


# --------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------

def _load_data(path, args):
    from .data import load_array
    return load_array(path, key=args.key, delimiter=args.delimiter, drop=args.drop)


def _log_prob_fn(flow, standardizer):
    """Jitted ``log p(x)`` in the data's units for a batch ``(B, dim)``."""
    import jax
    from .data import standardize, standardizer_log_det

    log_det = 0.0 if standardizer is None else float(standardizer_log_det(standardizer))

    @jax.jit
    def log_prob(params, x):
        z = x if standardizer is None else standardize(standardizer, x)
        return flow.log_prob(params, z) + log_det

    return log_prob


def _score(flow, params, standardizer, x, chunk: int = 4096):
    """Per-row log-likelihood (nats), in fixed-size chunks (one compile)."""
    import numpy as np
    log_prob = _log_prob_fn(flow, standardizer)
    x = np.asarray(x, np.float32)
    n = x.shape[0]
    chunk = min(chunk, n)
    out = np.empty(n, np.float64)
    for start in range(0, n, chunk):
        block = x[start:start + chunk]
        m = block.shape[0]
        if m < chunk:
            block = np.concatenate([block, np.repeat(block[:1], chunk - m, axis=0)])
        out[start:start + m] = np.asarray(log_prob(params, block))[:m]
    return out


def _sample(flow, params, standardizer, n: int, seed: int):
    import jax
    import numpy as np
    from .data import unstandardize
    draw = jax.jit(lambda p, k: flow.sample(p, k, (n,)))
    z = np.asarray(draw(params, jax.random.PRNGKey(seed)), np.float64)
    return z if standardizer is None else unstandardize(standardizer, z)


def _timed_sample(flow, params, standardizer, n: int, seed: int):
    """``(samples, seconds)``: compile once, then time a second draw alone."""
    import jax
    import numpy as np
    from .data import unstandardize
    draw = jax.jit(lambda p, k: flow.sample(p, k, (n,)))
    jax.block_until_ready(draw(params, jax.random.PRNGKey(seed)))
    t0 = time.perf_counter()
    z = jax.block_until_ready(draw(params, jax.random.PRNGKey(seed + 1)))
    seconds = time.perf_counter() - t0
    z = np.asarray(z, np.float64)
    return (z if standardizer is None else unstandardize(standardizer, z)), seconds


def _write_array(path: str, a) -> str:
    import numpy as np
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    if path.lower().endswith(".csv"):
        np.savetxt(path, a, delimiter=",", fmt="%.8g")
    elif path.lower().endswith(".npy"):
        np.save(path, a)
    else:
        raise ValueError(f"--out must end in .npy or .csv, got {path!r}")
    return path


def _ll_summary(ll, dim: int):
    from .data import bits_per_dim
    mean = float(ll.mean())
    return {"log_likelihood_nats": mean, "bits_per_dim": float(bits_per_dim(mean, dim)),
            "stderr_nats": float(ll.std() / math.sqrt(max(1, ll.size)))}


# --------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------

def cmd_fit(args, out=None) -> int:
    out = sys.stdout if out is None else out
    import jax
    import numpy as np
    import optax
    from . import checkpoint
    from .data import digits, fit_standardizer, split, standardize
    from .flows import FACTORIES
    from .train import fit

    if args.data is None:
        if args.key or args.delimiter or args.drop:
            raise ValueError("--key, --delimiter and --drop need a DATA file")
        x, source = digits(seed=args.seed), "sklearn digits (1797 x 64, dequantised)"
    else:
        x, source = _load_data(args.data, args), args.data
    x = np.asarray(x, np.float64)
    n, dim = x.shape
    if n < 10:
        raise ValueError(f"{source} has {n} rows; fit needs at least 10 (80/10/10 split)")
    train, val, test = split(x, (0.8, 0.1, 0.1), seed=args.seed)
    std = fit_standardizer(train)
    ztr, zva = (np.asarray(standardize(std, a), np.float32) for a in (train, val))

    flow = FACTORIES[args.flow](dim, num_layers=args.layers, hidden=tuple(args.hidden))
    key = jax.random.PRNGKey(args.seed)
    k_init, k_fit, k_sample = jax.random.split(key, 3)
    params = flow.init(k_init)
    optimizer = optax.adam(args.lr)
    if args.clip is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(args.clip), optimizer)
    os.makedirs(args.out, exist_ok=True)
    print(f"fitting {args.flow} ({args.layers} layers, hidden {args.hidden}) to {source}: "
          f"{n} rows x {dim} dims (train {len(train)}, validation {len(val)}, test {len(test)})",
          file=out, flush=True)
    t0 = time.perf_counter()
    params, history = fit(
        flow, params, ztr, key=k_fit, optimizer=optimizer, batch_size=args.batch_size,
        num_epochs=args.epochs, val_data=zva, patience=args.patience,
        progress=not args.no_progress,
        checkpoint_dir=os.path.join(args.out, "train_state"), resume=args.resume)
    train_seconds = time.perf_counter() - t0

    splits = {"train": train, "validation": val, "test": test}
    metrics = {name: _ll_summary(_score(flow, params, std, a), dim) for name, a in splits.items()}
    n_samples = 1000
    samples, sample_seconds = _timed_sample(flow, params, std, n_samples, args.seed)
    metrics.update({
        "data": source, "rows": int(n), "dim": int(dim), "flow": flow.config,
        "epochs_run": history["num_epochs_run"], "best_epoch": history["best_epoch"],
        "stopped_early": history["stopped_early"], "train_seconds": train_seconds,
        "sample_seconds_per_1000": sample_seconds * 1000 / n_samples,
        "history": {k: history[k] for k in ("train_loss", "val_loss", "epoch_seconds",
                                            "skipped_steps")},
        "units": "log-likelihood in nats per example in the data's own units "
                 "(standardisation's log-Jacobian included); bits/dim = -LL / (dim ln 2)",
    })
    model_path = checkpoint.save(os.path.join(args.out, MODEL_FILE), flow, params,
                                 standardizer=std,
                                 metadata={k: metrics[k] for k in ("train", "validation", "test",
                                                                   "data", "epochs_run")})
    metrics_path = os.path.join(args.out, METRICS_FILE)
    with open(metrics_path, "w") as f:
        json.dump(metrics, f, indent=2, allow_nan=True)
    report = None
    if not args.no_plot:
        report = _plot_report(os.path.join(args.out, REPORT_FILE), history, test, samples)
    te = metrics["test"]
    print(f"epochs {history['num_epochs_run']} (best {history['best_epoch']}), "
          f"{train_seconds:.1f} s", file=out)
    for name in ("train", "validation", "test"):
        m = metrics[name]
        print(f"{name:>10} log-likelihood {m['log_likelihood_nats']:.3f} nats "
              f"({m['bits_per_dim']:.4f} bits/dim)", file=out)
    print(f"sampling: {metrics['sample_seconds_per_1000']:.3f} s per 1000 samples", file=out)
    print(f"wrote {model_path}, {metrics_path}" + (f", {report}" if report else ""), file=out)
    return 0 if math.isfinite(te["log_likelihood_nats"]) else 1


def _plot_report(path, history, data, samples, max_pairs: int = 3) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    dim = data.shape[1]
    pairs = [(j, j + 1) for j in range(0, dim - 1, 2)][:max_pairs] or [(0, 0)]
    fig, axes = plt.subplots(1, 1 + len(pairs), figsize=(4.2 * (1 + len(pairs)), 4))
    ax = axes[0]
    epochs = np.arange(len(history["train_loss"]))
    ax.plot(epochs, history["train_loss"], label="train")
    ax.plot(epochs, history["val_loss"], label="validation")
    if history["best_epoch"] >= 0:
        ax.axvline(history["best_epoch"], color="grey", ls=":", label="best")
    ax.set(xlabel="epoch", ylabel="NLL (nats, standardised)", title="training curves")
    ax.legend()
    m = min(len(data), len(samples), 1000)
    for ax, (a, b) in zip(axes[1:], pairs):
        ax.scatter(data[:m, a], data[:m, b] if b != a else np.zeros(m), s=3, alpha=0.5,
                   label="test data")
        ax.scatter(samples[:m, a], samples[:m, b] if b != a else np.zeros(m), s=3, alpha=0.5,
                   label="flow samples")
        # axes fitted to the data (a few far-tail samples would otherwise squash the plot);
        # the title says how many samples fall outside
        lo, hi = np.nanpercentile(data[:, [a, b]], [0.5, 99.5], axis=0)
        pad = 0.25 * (hi - lo) + 1e-6
        lo, hi = lo - pad, hi + pad
        ax.set_xlim(lo[0], hi[0])
        if b != a:
            ax.set_ylim(lo[1], hi[1])
        s = samples[:m][:, [a, b]]
        outside = int(np.sum(~np.all((s >= lo) & (s <= hi), axis=1)))
        ax.set(xlabel=f"x[{a}]", ylabel=f"x[{b}]",
               title=f"dims {a}, {b}" + (f" ({outside}/{m} samples off-axes)" if outside else ""))
        ax.legend(markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _load_checkpoint(path):
    from . import checkpoint
    ckpt = checkpoint.load(path)
    if ckpt.flow is None:
        raise ValueError(f"checkpoint '{path}' stores no flow config, so the command line "
                         "cannot rebuild its flow; load it in Python with load(path, flow=...)")
    return ckpt


def cmd_sample(args, out=None) -> int:
    out = sys.stdout if out is None else out
    ckpt = _load_checkpoint(args.checkpoint)
    if ckpt.flow.context_dim is not None:
        raise ValueError("this checkpoint holds a conditional flow; sample it from Python "
                         "with a context")
    x = _sample(ckpt.flow, ckpt.params, ckpt.standardizer, args.num, args.seed)
    path = _write_array(args.out, x)
    print(f"wrote {args.num} samples of dimension {x.shape[1]} to {path}", file=out)
    return 0


def cmd_score(args, out=None) -> int:
    out = sys.stdout if out is None else out
    ckpt = _load_checkpoint(args.checkpoint)
    if ckpt.flow.context_dim is not None:
        raise ValueError("this checkpoint holds a conditional flow; score it from Python "
                         "with a context")
    x = _load_data(args.data, args)
    if x.shape[1] != ckpt.flow.dim:
        raise ValueError(f"data file '{args.data}' has {x.shape[1]} columns but the checkpoint's "
                         f"flow models {ckpt.flow.dim}; drop or add columns (--drop)")
    ll = _score(ckpt.flow, ckpt.params, ckpt.standardizer, x)
    path = _write_array(args.out, ll)
    s = _ll_summary(ll, ckpt.flow.dim)
    print(f"scored {len(ll)} rows: mean log-likelihood {s['log_likelihood_nats']:.3f} nats "
          f"({s['bits_per_dim']:.4f} bits/dim), min {ll.min():.3f}; wrote {path}", file=out)
    return 0


def cmd_info(args, out=None) -> int:
    out = sys.stdout if out is None else out
    import numpy as np
    import jax
    ckpt = _load_checkpoint(args.checkpoint)
    n_params = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(ckpt.params))
    cfg = ckpt.config
    print(f"checkpoint: {args.checkpoint}", file=out)
    print(f"flow: {cfg['factory']} " + ", ".join(f"{k}={v}" for k, v in cfg["kwargs"].items()),
          file=out)
    print(f"parameters: {n_params}", file=out)
    print("standardiser: " + ("yes (per-column mean and scale)" if ckpt.standardizer is not None
                              else "none"), file=out)
    if ckpt.step is not None:
        print(f"step: {ckpt.step}", file=out)
    for name in ("train", "validation", "test"):
        m = ckpt.metadata.get(name)
        if isinstance(m, dict) and "log_likelihood_nats" in m:
            print(f"{name} log-likelihood: {m['log_likelihood_nats']:.3f} nats "
                  f"({m['bits_per_dim']:.4f} bits/dim)", file=out)
    return 0


COMMANDS = {"fit": cmd_fit, "sample": cmd_sample, "score": cmd_score, "info": cmd_info}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage)."""
    debug = os.environ.get("JAXFLOWS_DEBUG", "") not in ("", "0")
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"jaxflows: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxflows: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the promise is one line, never a traceback
        if debug:
            raise
        msg = " ".join(str(err).split()) or type(err).__name__
        if not isinstance(err, (ValueError, TypeError, OSError, FloatingPointError)):
            msg = f"{type(err).__name__}: {msg} (set JAXFLOWS_DEBUG=1 for the traceback)"
        print(f"jaxflows: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
