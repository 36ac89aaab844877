"""The ``jaxflows`` command line (also ``python -m jaxflows``).

::

    jaxflows fit [DATA] --flow maf --layers 5 --hidden 64,64 --epochs 100 --out DIR
    jaxflows sample CKPT -n 1000 --out samples.npy
    jaxflows score CKPT DATA --out scores.npy
    jaxflows score CKPT DATA --calibrate VAL --false-alarm-rate 0.01 --out scores.csv
    jaxflows compare A.ckpt B.ckpt DATA [--json OUT.json]
    jaxflows info CKPT

``fit`` loads DATA (``.npy``, ``.npz`` with ``--array``, or delimited text with
``--delimiter``/``--drop``; without DATA: scikit-learn's digits, dequantised),
splits it 80/10/10 into train/validation/test, standardises every column
with the training rows' mean and standard deviation, trains, and writes into
DIR ``model.ckpt`` (flow, best params), ``metrics.json`` and
``report.png`` (see :mod:`jaxflows.report`). The standardisation is part of
the flow (:func:`jaxflows.standardize`: a fixed affine map saved in the flow's
config), so log-likelihoods and samples are in the data's own units:
``log p(x) = log q((x - mean) / scale) - sum_j log scale_j``, standardised in
float64 before the flow's float32 arithmetic.

``sample`` counts rows that are NaN or Inf and, if there are any, writes
nothing and exits with status 1 (``--keep-nonfinite`` writes them).
``score`` gives ``-inf`` for rows with Inf values or beyond the flow's
float32 range, refuses rows with NaN (naming the row), and lists the most
anomalous rows, ``-inf`` first (``--top``).

``score --calibrate VAL`` adds each row's conformal p-value (the rank of its
log-likelihood among those of VAL, held-out normal rows) and a flag
``p <= --false-alarm-rate`` (:mod:`jaxflows.anomaly`). ``compare`` scores the
same rows under two checkpoints and reports the paired difference of their
mean log-likelihoods with its standard error (:func:`jaxflows.compare`).

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

from .files import replacing

MODEL_FILE = "model.ckpt"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.png"


class UsageError(Exception):
    """A bad command line (exit status 2)."""


class _HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to every option that has a default worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("(default" not in text and action.option_strings and default is not None
                and default is not False and default is not argparse.SUPPRESS):
            if isinstance(default, (list, tuple)):
                default = ",".join(map(str, default))
            text += f" (default: {default})"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _Renamed(argparse.Action):
    """An old option spelling: refuse it and name the new one."""

    def __init__(self, option_strings, dest, new, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        raise UsageError(f"{option_string} was renamed {self.new} (the name of the array inside "
                         f"an .npz file): use {self.new} {values or 'NAME'}")


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


def _rate(text: str) -> float:
    """A false-alarm rate: a number strictly between 0 and 1."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate between 0 and 1 (e.g. 0.01), got {text!r}")
    return v


def _data_args(p):
    p.add_argument("--array", metavar="NAME",
                   help="name of the array to read from an .npz file (needed when it holds several)")
    p.add_argument("--key", action=_Renamed, new="--array")
    p.add_argument("--delimiter", help="text delimiter: a character, 'tab' or 'whitespace' "
                                       "(default: detected from the first lines)")
    p.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                   help="text files: the first row is a header (--header) or data (--no-header) "
                        "(default: detected: a row with names, or one numbering the columns "
                        "0,1,2,... above real numbers, is a header)")
    p.add_argument("--drop", metavar="COLS",
                   help="columns to remove, e.g. 'quality' or '0,3' (0-based indices; names need "
                        "a header row)")


def build_parser() -> argparse.ArgumentParser:
    from .models import FACTORIES

    from . import __version__

    parser = _Parser(
        prog="jaxflows",
        description="Normalizing flows: fit a flow to a table of numbers, then sample from it "
                    "or score rows with it.",
        epilog="Run 'jaxflows COMMAND --help' for each command's options and defaults. "
               "Example: jaxflows fit data.csv --drop label --out run1 && "
               "jaxflows sample run1/model.ckpt -n 500 --out samples.csv")
    parser.add_argument("--version", action="version", version=f"jaxflows {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="{fit,sample,score,compare,info}",
                                parser_class=_Parser)
    sub.required = True

    f = sub.add_parser(
        "fit", help="train a flow on a data file (or the bundled digits)",
        description="Train a flow on the rows of DATA: an 80/10/10 train/validation/test split, "
                    "each column standardised with the training rows' mean and standard "
                    "deviation, Adam with early stopping on the validation rows. Writes "
                    "OUT/model.ckpt, OUT/metrics.json and OUT/report.png. Log-likelihoods are "
                    "reported per row in the data's own units.")
    f.add_argument("data", nargs="?", help=".npy, .npz or .csv/.tsv/.txt/.dat file, one row per "
                                           "example; default: scikit-learn's digits "
                                           "(1797 x 64, dequantised)")
    _data_args(f)
    f.add_argument("--flow", default="maf", choices=sorted(FACTORIES),
                   help="flow family: maf (masked autoregressive), iaf (inverse autoregressive), "
                        "realnvp (affine coupling), nsf (neural spline)")
    f.add_argument("--layers", type=_positive(int), default=5, help="number of flow layers")
    f.add_argument("--hidden", type=_hidden, default=[64, 64],
                   help="hidden layer sizes of each layer's network, comma-separated")
    f.add_argument("--epochs", type=_positive(int), default=100,
                   help="maximum number of passes over the training rows")
    f.add_argument("--batch-size", type=_positive(int), default=None,
                   help="rows per Adam step (default: chosen from the number of training rows: "
                        "about 10 steps per epoch or more, 16 to 256 rows per step)")
    f.add_argument("--lr", type=_positive(float), default=1e-3, help="Adam learning rate")
    f.add_argument("--patience", type=_positive(int), default=10,
                   help="stop after this many epochs without a better validation loss")
    f.add_argument("--clip", type=_positive(float), default=None,
                   help="clip gradients to this global norm, e.g. 1.0 (default: no clipping)")
    f.add_argument("--seed", type=int, default=0,
                   help="random seed of the split, the initial parameters and the batches")
    f.add_argument("--out", default="jaxflows-run", metavar="DIR",
                   help="output directory (created if missing)")
    f.add_argument("--resume", action="store_true",
                   help="continue an interrupted fit from OUT/train_state (same data and options)")
    f.add_argument("--image-shape", metavar="HxW", default=None,
                   help="rows are HxW images: report.png shows sampled images beside real ones "
                        "(default: on for a square number of columns >= 16; 'off' to disable)")
    f.add_argument("--no-plot", action="store_true", help="do not write report.png")
    f.add_argument("--no-progress", action="store_true", help="hide the per-epoch progress bar")
    d = f.add_argument_group(
        "several processes (hosts)", "start the same command on every process: each batch is "
        "split over all processes' devices and the gradients summed across them; process 0 "
        "prints and writes OUT, which must be a directory every process sees (for --resume)")
    d.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                   help="process 0's address and a free port, the same on every process "
                        "(default: $JAX_COORDINATOR_ADDRESS)")
    d.add_argument("--num-processes", type=_positive(int), default=None, metavar="N",
                   help="number of processes (default: $JAX_NUM_PROCESSES)")
    d.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="this process's id, 0 ... N-1 (default: $JAX_PROCESS_ID)")
    d.add_argument("--distributed", action="store_true",
                   help="join a multi-process run whose settings come from the environment "
                        "variables above or a managed cluster (SLURM, Open MPI, Kubernetes, "
                        "Cloud TPU)")

    s = sub.add_parser("sample", help="draw samples from a checkpoint",
                       description="Draw samples from the flow in CKPT, in the data's own units "
                                   "(a .csv output keeps the training data's column names).")
    s.add_argument("checkpoint", metavar="CKPT", help="model.ckpt written by 'jaxflows fit'")
    s.add_argument("-n", "--num", type=_positive(int), default=1000, help="number of samples")
    s.add_argument("--seed", type=int, default=0, help="random seed of the draw")
    s.add_argument("--out", default="samples.npy", help="output file, .npy or .csv")
    s.add_argument("--keep-nonfinite", action="store_true",
                   help="write the samples even if some rows are NaN or Inf (by default such a "
                        "draw is an error: the rows are counted, nothing is written, exit status 1)")

    c = sub.add_parser("score", help="log-likelihood (nats, data units) of each row of DATA",
                       description="Log-likelihood of each row of DATA under the flow in CKPT, "
                                   "in nats in the data's own units (low values flag unusual rows).")
    c.add_argument("checkpoint", metavar="CKPT", help="model.ckpt written by 'jaxflows fit'")
    c.add_argument("data", help=".npy, .npz or delimited text file with the model's columns")
    _data_args(c)
    c.add_argument("--out", default="scores.npy",
                   help="output file, .npy or .csv (one log-likelihood per row)")
    c.add_argument("--top", type=int, default=5, metavar="K",
                   help="print the K most anomalous rows (lowest log-likelihood first; rows "
                        "scoring -inf, i.e. with Inf values or beyond the flow's range, come "
                        "first; 0: none). Rows with NaN are refused")
    c.add_argument("--calibrate", metavar="VAL",
                   help="held-out normal rows the model was not trained on (e.g. a validation "
                        "file, same columns and options as DATA): adds each row's conformal "
                        "p-value (its score's rank among VAL's scores) and an anomaly flag; the "
                        "output gets columns log_likelihood, p_value, flag")
    c.add_argument("--false-alarm-rate", type=_rate, default=0.01, metavar="ALPHA",
                   help="with --calibrate: flag rows whose p-value is <= ALPHA, so that on "
                        "average a fraction ALPHA (at most) of normal rows is flagged")

    m = sub.add_parser(
        "compare", help="compare two checkpoints by log-likelihood on the same rows, with error bars",
        description="Score the rows of DATA (held-out rows neither model was trained on) under "
                    "the flows in A and B and report each mean log-likelihood (nats, data units; "
                    "bits/dim), the paired difference A - B with its standard error over rows, "
                    "and the number of rows each model scores higher.")
    m.add_argument("checkpoint_a", metavar="A", help="first checkpoint (model.ckpt)")
    m.add_argument("checkpoint_b", metavar="B", help="second checkpoint, same columns")
    m.add_argument("data", help=".npy, .npz or delimited text file with the models' columns")
    _data_args(m)
    m.add_argument("--json", metavar="OUT", default=None,
                   help="also write the numbers to this .json file")

    i = sub.add_parser("info", help="describe a checkpoint",
                       description="Print the flow, its size and the stored metrics of CKPT.")
    i.add_argument("checkpoint", metavar="CKPT", help="a checkpoint file (e.g. OUT/model.ckpt)")
    return parser


# --------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------

def _cli_spelling(message: str) -> str:
    """Library wording of a data error -> the command line's (``drop='c'`` -> ``--drop c``)."""
    import re
    import shlex
    message = re.sub(r"\(drop=(?:'([^']*)'|([^)]*))\)",
                     lambda m: f"(--drop {shlex.quote(m.group(1) if m.group(1) is not None else m.group(2))})",
                     message)
    message = re.sub(r"\bkey=('[^']*')", r"--array \1", message)
    return message.replace("pick one with key.", "pick one with --array NAME.")


def _load_data(path, args, allow_inf: bool = False):
    """``(rows, column names or None)`` of a data file, errors in the command line's spelling."""
    from .data import column_names, load_array
    try:
        x = load_array(path, key=args.array, delimiter=args.delimiter, drop=args.drop,
                       allow_inf=allow_inf, header=args.header)
        names = column_names(path, delimiter=args.delimiter, drop=args.drop, header=args.header)
    except ValueError as err:
        raise ValueError(_cli_spelling(str(err))) from None
    return x, names


def _score(flow, params, x):
    """Per-row log-likelihood (nats, data units) by :func:`jaxflows.score`: float64
    standardisation, ``-inf`` for infinite or overflowing rows, never NaN."""
    from .standardizing import score
    return score(flow, params, x)


def _sampler(flow, n: int):
    """``draw(params, key) -> (x, z)``: ``n`` samples in float64 data units (unstandardised
    on the host in float64, so large offsets keep their digits) and the flow's own
    standardised draws ``z`` (``None`` for a flow without standardisation)."""
    import jax
    import numpy as np
    from .data import unstandardize
    from .standardizing import split_standardization
    inner, std = split_standardization(flow)
    jitted = jax.jit(lambda p, k: inner.sample(p, k, (n,)))

    def draw(params, key):
        z = np.asarray(jax.block_until_ready(jitted(params, key)), np.float64)
        return (z, None) if std is None else (unstandardize(std, z), z)

    return draw


def _sample(flow, params, n: int, seed: int):
    """``(x, z)`` of :func:`_sampler`, drawn from ``seed``."""
    import jax
    return _sampler(flow, n)(params, jax.random.PRNGKey(seed))


def _timed_sample(flow, params, n: int, seed: int):
    """``(samples, seconds)``: compile once, then time a second draw alone."""
    import jax
    draw = _sampler(flow, n)
    draw(params, jax.random.PRNGKey(seed))
    t0 = time.perf_counter()
    x, _ = draw(params, jax.random.PRNGKey(seed + 1))
    return x, time.perf_counter() - t0


def _nonfinite_rows(x) -> int:
    """Number of rows of ``x`` with a NaN or Inf entry."""
    import numpy as np
    return int((~np.isfinite(x)).any(axis=1).sum())


class _WarningsAsLines:
    """Inside: fit's data warnings (``jaxflows.RawScaleWarning``: unstandardised data, values
    outside a spline's bound; ``data.DataWarning``: a header row detected; ``train.FitWarning``:
    a finished run resumed, a few non-finite samples) print as one line
    ``jaxflows: warning: ...`` on stderr."""

    def __enter__(self):
        import warnings
        from .data import DataWarning
        from .standardizing import RawScaleWarning
        from .train import FitWarning
        ours = (RawScaleWarning, DataWarning, FitWarning)
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        for category in ours:
            warnings.filterwarnings("default", category=category)
        show = warnings.showwarning

        def one_line(message, category, *args, **kwargs):
            if issubclass(category, ours):
                print(f"jaxflows: warning: {' '.join(str(message).split())}", file=sys.stderr,
                      flush=True)
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = one_line
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _constant_column_error(source: str, train, names, dropped: bool) -> None:
    """``ValueError`` naming the first zero-variance column of the training rows, if any."""
    from .data import constant_columns
    cols = constant_columns(train)
    if not cols.size:
        return
    c = int(cols[0])
    if names is not None:
        label, drop_as = f"column {names[c]!r}", names[c]
    else:
        label = f"column {c} (0-based{', counting the columns left after --drop' if dropped else ''})"
        drop_as = None if dropped else str(c)
    more = f" (and {cols.size - 1} more)" if cols.size > 1 else ""
    how = f"remove it with --drop {drop_as}" if drop_as is not None else "remove it with --drop"
    raise ValueError(f"{source}: {label}{more} is {float(train[0, c])!r} in every training row: a "
                     "constant column has no density to fit (its likelihood grows without "
                     f"bound); {how}")


# A value this many standard deviations (of the other rows) from the other rows' mean
# dominates its column's standardisation: every other row is squashed toward one value.
OUTLIER_SDS = 100.0


def _warn_outliers(source: str, x, names, dropped: bool) -> None:
    """One warning line per column whose most extreme value lies more than
    ``OUTLIER_SDS`` standard deviations of the other rows away from their mean."""
    import numpy as np
    n = x.shape[0]
    if n < 3:
        return
    dev = np.abs(x - np.median(x, axis=0))
    rows = np.argmax(dev, axis=0)
    for c, i in enumerate(rows):
        others = np.delete(x[:, c], i)
        sd = float(others.std())
        if sd <= 0:
            continue
        z = abs(float(x[i, c]) - float(others.mean())) / sd
        if z <= OUTLIER_SDS:
            continue
        label = (f"column {names[c]!r}" if names is not None else
                 f"column {c} (0-based{', counting the columns left after --drop' if dropped else ''})")
        print(f"jaxflows: warning: {source}: {label} has {x[i, c]:.6g} in data row {int(i)} "
              f"(0-based), {z:.3g} standard deviations of the other rows from their mean; "
              "standardising the column with it squashes every other row toward one value, so "
              "the flow sees that column as nearly constant. Check the value (a typo or a "
              "placeholder such as 1e30 or -999?) and remove the row if it is not real",
              file=sys.stderr, flush=True)


def _write_array(path: str, a, columns: Optional[Sequence[str]] = None) -> str:
    """Write ``a`` as .npy or .csv (with ``columns`` as the CSV header row)."""
    import numpy as np
    if not path.lower().endswith((".csv", ".npy")):
        raise ValueError(f"--out must end in .npy or .csv, got {path!r}")
    # written to a temporary file beside it, then renamed: the exact name given (np.save
    # would append .npy to 'S.NPY'), and an existing file is never left half-overwritten
    with replacing(path) as f:
        if path.lower().endswith(".csv"):
            header = "" if columns is None else ",".join(
                f'"{c}"' if ("," in c or '"' in c) else c
                for c in (str(c).replace('"', "'") for c in columns))
            np.savetxt(f, a, delimiter=",", fmt="%.8g", header=header, comments="")
        else:
            np.save(f, a)
    return path


def _finite_or_null(obj):
    """``obj`` with every NaN/Inf float replaced by ``None`` (JSON ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def _write_json(path: str, obj) -> str:
    """Strict JSON (non-finite numbers as ``null``), written atomically."""
    text = json.dumps(_finite_or_null(obj), indent=2, allow_nan=False)
    with replacing(path) as f:
        f.write(text.encode("utf-8"))
    return path


def auto_batch_size(n_train: int, largest: int = 256) -> int:
    """The batch size ``fit`` uses when ``--batch-size`` is not given.

    About ten Adam steps per epoch or more (batches of at least 16 rows, at
    most ``largest``), and a size that divides the rows nearly evenly: ``fit``
    drops the last incomplete batch of each epoch, and with this size that is
    fewer rows than there are steps (354 rows: batch 32, 11 steps, 2 rows left
    out; 142 rows: batch 15, 9 steps, 7 left out).
    """
    n = int(n_train)
    if n < 1:
        raise ValueError(f"no training rows to choose a batch size for (got {n})")
    target = min(largest, max(16, n // 10))
    steps = -(-n // target)
    return max(1, n // steps)


def _pm(summary) -> str:
    """``-116.370 +- 2.660 nats`` (two standard errors over rows)."""
    return (f"{summary['log_likelihood_nats']:.3f} +- {2 * summary['stderr_nats']:.3f} nats "
            f"({summary['bits_per_dim']:.4f} bits/dim)")


def _ll_summary(ll, dim: int):
    from .data import bits_per_dim
    import numpy as np
    mean = float(ll.mean())
    # a -inf row makes the mean -inf and the spread undefined (NaN, no numpy warning)
    spread = float(ll.std()) if np.isfinite(ll).all() else float("nan")
    return {"log_likelihood_nats": mean, "bits_per_dim": float(bits_per_dim(mean, dim)),
            "stderr_nats": spread / math.sqrt(max(1, ll.size))}


# --------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------

def cmd_fit(args, out=None) -> int:
    out = sys.stdout if out is None else out
    import jax
    import numpy as np
    import optax
    from . import checkpoint
    from .data import digits, split
    from .distributed import data_mesh
    from .models import FACTORIES
    from .standardizing import standardize
    from .train import TrainingDiverged, fit

    if not args.no_plot:  # report.png needs matplotlib: say so before training, not after
        from .report import require_matplotlib
        require_matplotlib(" (or pass --no-plot)")
    if args.data is None:
        if args.array or args.delimiter or args.drop or args.header is not None:
            raise ValueError("--array, --delimiter, --drop and --header need a DATA file")
        x, source = digits(seed=args.seed), "sklearn digits (1797 x 64, dequantised)"
        columns = [f"pixel {r},{c}" for r in range(8) for c in range(8)]
    else:
        (x, columns), source = _load_data(args.data, args), args.data
    x = np.asarray(x, np.float64)
    n, dim = x.shape
    if n < 10:
        raise ValueError(f"{source} has {n} rows; fit needs at least 10 (80/10/10 split)")
    train, val, test = split(x, (0.8, 0.1, 0.1), seed=args.seed)
    _constant_column_error(source, train, columns if args.data is not None else None,
                           bool(args.drop))
    _warn_outliers(source, x, columns if args.data is not None else None, bool(args.drop))
    # the standardisation (the training rows' mean and standard deviation) is a fixed affine
    # map inside the flow: fit, scores, samples and the checkpoint all work in data units
    flow = standardize(FACTORIES[args.flow](dim, num_layers=args.layers,
                                            hidden=tuple(args.hidden)), train)
    key = jax.random.PRNGKey(args.seed)
    k_init, k_fit, k_sample = jax.random.split(key, 3)
    params = flow.init(k_init)
    optimizer = optax.adam(args.lr)
    if args.clip is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(args.clip), optimizer)
    from .report import guess_image_shape, parse_image_shape
    image_shape = (guess_image_shape(dim) if args.image_shape is None
                   else parse_image_shape(args.image_shape))
    if image_shape is not None and image_shape[0] * image_shape[1] != dim:
        raise ValueError(f"--image-shape {args.image_shape} has {image_shape[0] * image_shape[1]} "
                         f"pixels but {source} has {dim} columns")
    n_train = len(train)
    if args.batch_size is None:
        batch_size = auto_batch_size(n_train)
        batch_note = (f"batch size {batch_size}, chosen from the {n_train} training rows "
                      f"({n_train // batch_size} steps per epoch; set --batch-size to change)")
    elif args.batch_size > n_train:
        batch_size = n_train
        batch_note = (f"batch size {n_train}: --batch-size {args.batch_size} is more than the "
                      f"{n_train} training rows")
    else:
        batch_size = args.batch_size
        batch_note = f"batch size {batch_size} ({n_train // batch_size} steps per epoch)"
        dropped = n_train % batch_size
        if dropped > 0.1 * n_train:
            batch_note += (f"; note: each epoch leaves out {dropped} of the {n_train} training "
                           f"rows (the last incomplete batch); --batch-size "
                           f"{auto_batch_size(n_train)} would use nearly all")
    os.makedirs(args.out, exist_ok=True)
    print(f"fitting {args.flow} ({args.layers} layers, hidden {args.hidden}) to {source}: "
          f"{n} rows x {dim} dims (train {len(train)}, validation {len(val)}, test {len(test)})",
          file=out, flush=True)
    print(batch_note, file=out, flush=True)
    if not args.no_progress:
        print("progress bar: one tick per epoch; train/val NLL = mean negative log-likelihood per row "
              "(nats, data units) of the training/validation rows", file=out, flush=True)
    state_dir = getattr(args, "state_dir", None) or os.path.join(args.out, "train_state")
    state_file = os.path.join(state_dir, "train_state.ckpt")
    if args.resume:
        print(f"resuming the fit saved in {state_file}" if os.path.exists(state_file) else
              f"--resume: no training state in {state_dir} yet, so this is a new fit",
              file=out, flush=True)
    elif os.path.exists(state_file):
        print(f"note: {state_dir} holds an earlier fit's training state; this new fit replaces "
              "it (stop now and add --resume to continue that one instead)", file=out, flush=True)
    # what identifies this run besides the flow's config and the data (hashed by fit):
    # --resume with any of these changed is refused, naming the flag
    settings = {"--flow": args.flow, "--layers": args.layers,
                "--hidden": ",".join(map(str, args.hidden)), "--lr": args.lr, "--clip": args.clip,
                "--batch-size": batch_size, "--seed": args.seed}
    t0 = time.perf_counter()
    try:
        params, history = fit(
            flow, params, train, key=k_fit, optimizer=optimizer, batch_size=batch_size,
            num_epochs=args.epochs, val_data=val, patience=args.patience,
            progress=not args.no_progress, checkpoint_dir=state_dir, resume=args.resume,
            mesh=data_mesh(),
            run_settings=settings)
    except KeyboardInterrupt:
        return _interrupted(args, flow, params, optimizer.init(params), None, columns, state_dir, out)
    except TrainingDiverged as err:
        raise err.with_advice(
            f"From the command line: a lower learning rate (--lr {args.lr / 10:g}) "
            f"and/or gradient clipping (--clip 1.0).") from None
    train_seconds = time.perf_counter() - t0

    splits = {"train": train, "validation": val, "test": test}
    scores = {name: _score(flow, params, a) for name, a in splits.items()}
    metrics = {name: _ll_summary(ll, dim) for name, ll in scores.items()}
    n_samples = 1000
    samples, sample_seconds = _timed_sample(flow, params, n_samples, args.seed)
    metrics["nonfinite_samples_per_1000"] = _nonfinite_rows(samples)
    metrics.update({
        "data": source, "rows": int(n), "dim": int(dim), "flow": flow.config,
        "epochs_run": history["num_epochs_run"], "best_epoch": history["best_epoch"],
        "stopped_early": history["stopped_early"], "train_seconds": train_seconds,
        "sample_seconds_per_1000": sample_seconds * 1000 / n_samples,
        "batch_size": batch_size, "columns": columns,
        "history": {k: history[k] for k in ("train_loss", "val_loss", "epoch_seconds",
                                            "skipped_steps")},
        "units": "log-likelihood in nats per example in the data's own units "
                 "(standardisation's log-Jacobian included); bits/dim = -LL / (dim ln 2)",
    })
    model_path = checkpoint.save(os.path.join(args.out, MODEL_FILE), flow, params,
                                 metadata={k: metrics[k] for k in ("train", "validation", "test",
                                                                   "data", "epochs_run", "columns")})
    metrics_path = _write_json(os.path.join(args.out, METRICS_FILE), metrics)
    report = None
    if not args.no_plot:
        from .report import write_report
        report = write_report(os.path.join(args.out, REPORT_FILE), history, test, samples,
                              columns=columns, image_shape=image_shape)
    te = metrics["test"]
    print(f"epochs {history['num_epochs_run']} (best {history['best_epoch']}), "
          f"{train_seconds:.1f} s", file=out)
    print("log-likelihood per row in the data's units, +- 2 standard errors over rows:", file=out)
    for name in ("train", "validation", "test"):
        print(f"{name:>10} log-likelihood {_pm(metrics[name])}", file=out)
    if (history["best_epoch"] == history["num_epochs_run"] - 1 and not history["stopped_early"]
            and history["num_epochs_run"] > 0):
        print(f"not converged: the validation log-likelihood was still improving at the last "
              f"epoch ({history['best_epoch']}); train longer, e.g. --epochs {2 * args.epochs} "
              f"(with --resume to continue this run)", file=out)
    print(f"sampling: {metrics['sample_seconds_per_1000']:.3f} s per 1000 samples", file=out)
    if metrics["nonfinite_samples_per_1000"]:
        print(f"jaxflows: warning: {metrics['nonfinite_samples_per_1000']} of {n_samples} samples "
              "drawn for the report are NaN or Inf", file=sys.stderr)
    print(f"wrote {model_path}, {metrics_path}" + (f", {report}" if report else ""), file=out)
    if not math.isfinite(te["log_likelihood_nats"]):
        bad = int((~np.isfinite(scores["test"])).sum())
        print(f"jaxflows: error: the test log-likelihood is not finite ({bad} of {len(test)} "
              "test rows score -inf or NaN: the model gives them zero density, e.g. values far "
              "outside the training rows' range); it is null in metrics.json. The files above "
              "were written; check those rows (jaxflows score) or train longer or with more "
              "data", file=sys.stderr)
        return 1
    return 0


def _interrupted(args, flow, params_like, opt_state_like, std, columns, state_dir, out) -> int:
    """Ctrl-C during fit: keep the best model so far as OUT/model.ckpt, say how to resume."""
    import shlex
    from . import checkpoint
    print("\njaxflows: interrupted", file=sys.stderr, flush=True)
    state_file = os.path.join(state_dir, "train_state.ckpt")
    argv = [a for a in getattr(args, "argv", None) or sys.argv[1:] if a != "--resume"]
    again = "jaxflows " + shlex.join(argv + ["--resume"])
    if not os.path.exists(state_file):
        print(f"no epoch finished, so there is no model to keep; start again with: "
              f"jaxflows {shlex.join(argv)}", file=out)
        return 130
    state = checkpoint.read_train_state(state_file, params_like, opt_state_like)
    model_path = checkpoint.save(
        os.path.join(args.out, MODEL_FILE), flow, state["best_params"], standardizer=std,
        metadata={"data": args.data or "sklearn digits", "columns": columns, "interrupted": True,
                  "epochs_run": state["epoch"], "best_epoch": state["best_epoch"]})
    print(f"stopped after {state['epoch']} epochs: the best model so far (epoch "
          f"{state['best_epoch']}) is in {model_path}; continue training with:\n  {again}",
          file=out, flush=True)
    return 130


def _load_checkpoint(path, model_only: bool = True):
    from . import checkpoint
    ckpt = checkpoint.load(path)
    if model_only and ckpt.kind == "train_state":
        model = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), MODEL_FILE)
        raise ValueError(f"checkpoint '{path}' is fit's training state (kept to --resume the fit), "
                         f"not a model; use the model that fit writes beside it: {model}")
    if ckpt.flow is None:
        raise ValueError(f"checkpoint '{path}' stores no flow config, so the command line "
                         "cannot rebuild its flow; load it in Python with load(path, flow=...)")
    if ckpt.standardizer is not None:
        # a checkpoint that stores a standardiser beside its flow (as the command line once
        # wrote them): make it the flow's own fixed affine map, the one path used everywhere
        from .standardizing import split_standardization, standardize
        if split_standardization(ckpt.flow)[1] is None:
            ckpt = ckpt._replace(flow=standardize(ckpt.flow, shift=ckpt.standardizer.mean,
                                                  scale=ckpt.standardizer.scale))
    return ckpt


def cmd_sample(args, out=None) -> int:
    out = sys.stdout if out is None else out
    ckpt = _load_checkpoint(args.checkpoint)
    if ckpt.flow.context_dim is not None:
        raise ValueError("this checkpoint holds a conditional flow; sample it from Python "
                         "with a context")
    import numpy as np
    x, z = _sample(ckpt.flow, ckpt.params, args.num, args.seed)
    bad = _nonfinite_rows(x)
    if bad and not args.keep_nonfinite:
        raise ValueError(f"{bad} of {args.num} samples are not finite (NaN or Inf), so nothing "
                         f"was written to {args.out}; pass --keep-nonfinite to write every row "
                         "anyway")
    columns = ckpt.metadata.get("columns") if isinstance(ckpt.metadata, dict) else None
    if columns is not None and len(columns) != x.shape[1]:
        columns = None
    path = _write_array(args.out, x, columns=columns)
    print(f"wrote {args.num} samples of dimension {x.shape[1]} to {path}"
          + (f"; {bad} of them are NaN or Inf (kept: --keep-nonfinite)" if bad else ""), file=out)
    if z is not None:  # far-tail draws, in training standard deviations
        far = int(((np.abs(z) > 100).any(axis=1) & np.isfinite(x).all(axis=1)).sum())
        if far > 0:
            print(f"note: {far} of the samples lie more than 100 training standard deviations "
                  "from the training mean in some coordinate", file=out)
    return 0


def _calibrated(args, ckpt, ll):
    """``score --calibrate VAL``: conformal p-values and flags of the scores ``ll`` against
    the scores of VAL's held-out normal rows (see :mod:`jaxflows.anomaly`).  Returns the
    output table ``(n, 3)`` (log-likelihood, p-value, flag 0/1) and a summary line."""
    import numpy as np
    from . import anomaly
    xv, _ = _load_data(args.calibrate, args, allow_inf=True)
    if xv.shape[1] != ckpt.flow.dim:
        raise ValueError(f"calibration file '{args.calibrate}' has {xv.shape[1]} columns but the "
                         f"checkpoint's flow models {ckpt.flow.dim}; give it the columns of DATA")
    cal = anomaly.calibrate(_score(ckpt.flow, ckpt.params, xv))
    rate = args.false_alarm_rate
    p = np.asarray(anomaly.p_values(cal, ll))
    flags = np.asarray(anomaly.flag(cal, ll, rate))
    t = float(anomaly.threshold(cal, rate))
    k, n = int(flags.sum()), cal.size
    summary = (f"calibrated on {n} rows of {args.calibrate}: a row is flagged when its p-value is "
               f"<= {rate:g}, i.e. its log-likelihood is below {t:.3f} nats (expected false-alarm "
               f"rate on normal rows {float(anomaly.expected_false_alarm_rate(cal, rate)):.4f}); "
               f"flagged {k} of {len(ll)} rows ({100.0 * k / len(ll):.1f}%)")
    if not math.isfinite(t):
        summary += (f"\nnote: {n} calibration rows are too few to flag anything at a false-alarm "
                    f"rate of {rate:g}: that needs at least {math.ceil(1 / rate - 1e-9) - 1} rows")
    return {"table": np.column_stack([ll, p, flags.astype(np.float64)]), "summary": summary}


def _column_hint(names, ckpt) -> str:
    """What to --drop so DATA's columns are the ones the checkpoint was trained on."""
    import shlex
    trained = ckpt.metadata.get("columns") if isinstance(ckpt.metadata, dict) else None
    if names and trained:
        extra = [c for c in names if c not in trained]
        missing = [c for c in trained if c not in names]
        if extra and not missing:
            return f"remove the extra columns with --drop {shlex.quote(','.join(extra))}"
        if missing:
            return (f"the model was trained on columns {', '.join(map(repr, trained))}; "
                    f"DATA lacks {', '.join(map(repr, missing))}")
    return "drop or add columns (--drop)"


def cmd_score(args, out=None) -> int:
    out = sys.stdout if out is None else out
    ckpt = _load_checkpoint(args.checkpoint)
    if ckpt.flow.context_dim is not None:
        raise ValueError("this checkpoint holds a conditional flow; score it from Python "
                         "with a context")
    import numpy as np
    # rows with +-Inf are kept (they score -inf); rows with NaN are refused, naming row and line
    x, names = _load_data(args.data, args, allow_inf=True)
    if x.shape[1] != ckpt.flow.dim:
        raise ValueError(f"data file '{args.data}' has {x.shape[1]} columns but the checkpoint's "
                         f"flow models {ckpt.flow.dim}; " + _column_hint(names, ckpt))
    ll = _score(ckpt.flow, ckpt.params, x)  # float64, never NaN
    calibrated = None if args.calibrate is None else _calibrated(args, ckpt, ll)
    path = (_write_array(args.out, ll, columns=["log_likelihood"]) if calibrated is None else
            _write_array(args.out, calibrated["table"], columns=["log_likelihood", "p_value", "flag"]))
    finite = np.isfinite(ll)
    n_inf = int((~finite).sum())
    if finite.any():
        text = f"mean log-likelihood {_pm(_ll_summary(ll[finite], ckpt.flow.dim))}"
        if n_inf:
            text += f" over the {int(finite.sum())} finite rows"
    else:
        text = "no finite log-likelihood"
    if n_inf:
        text += (f"; {n_inf} row{'s' if n_inf > 1 else ''} score -inf (Inf values, or beyond the "
                 "range of the flow's arithmetic: density zero)")
    print(f"scored {len(ll)} rows: {text}; wrote {path}", file=out)
    if calibrated is not None:
        print(calibrated["summary"], file=out)
    if args.top > 0:  # ascending: -inf rows first, then the lowest finite scores
        order = np.argsort(ll, kind="stable")[:args.top]
        print("most anomalous rows (0-based row: log-likelihood): "
              + ", ".join(f"{int(i)}: {ll[i]:.3f}" for i in order), file=out)
    return 0


def cmd_info(args, out=None) -> int:
    out = sys.stdout if out is None else out
    import numpy as np
    import jax
    ckpt = _load_checkpoint(args.checkpoint, model_only=False)
    n_params = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(ckpt.params))
    cfg = ckpt.config
    print(f"checkpoint: {args.checkpoint}", file=out)
    print(f"flow: {cfg['factory']} " + ", ".join(f"{k}={v}" for k, v in cfg["kwargs"].items()),
          file=out)
    print(f"parameters: {n_params}", file=out)
    from .standardizing import split_standardization
    std = split_standardization(ckpt.flow)[1]
    print("standardisation: " + ("a fixed affine map inside the flow (per-column mean and "
                                 "standard deviation of the training rows)" if std is not None
                                 else "none"), file=out)
    if ckpt.kind == "train_state":
        print(f"kind: fit's training state after {ckpt.step} epochs (for --resume; sample and "
              "score use OUT/model.ckpt)", file=out)
    elif ckpt.step is not None:
        print(f"step: {ckpt.step}", file=out)
    for name in ("train", "validation", "test"):
        m = ckpt.metadata.get(name)
        if isinstance(m, dict) and "log_likelihood_nats" in m:
            print(f"{name} log-likelihood: {_pm(m)}" if "stderr_nats" in m else
                  f"{name} log-likelihood: {m['log_likelihood_nats']:.3f} nats "
                  f"({m['bits_per_dim']:.4f} bits/dim)", file=out)
    return 0


def _fit_locked(args, out=None) -> int:
    """``fit`` holding OUT's lock: a second fit into the same OUT refuses to start
    (naming the first one's process) instead of overwriting its files."""
    from .checkpoint import LOCK_FILE, directory_lock
    from .distributed import cli_fit_other_process, cli_wants_processes, initialize
    if cli_wants_processes(args):  # before any JAX work: join the other processes
        import jax
        initialize(args.coordinator, args.num_processes, args.process_id)
        if jax.process_index() != 0:  # only process 0 locks, prints and writes OUT
            return cli_fit_other_process(args, cmd_fit)
    fresh = not os.path.exists(args.out)
    try:
        with directory_lock(args.out, "another 'jaxflows fit'"):
            return cmd_fit(args, out)
    finally:
        # a fit that failed before writing anything leaves no empty OUT behind
        if fresh and os.path.isdir(args.out) and os.listdir(args.out) == [LOCK_FILE]:
            try:
                os.remove(os.path.join(args.out, LOCK_FILE))
                os.rmdir(args.out)
            except OSError:
                pass


def cmd_compare(args, out=None) -> int:
    out = sys.stdout if out is None else out
    import numpy as np
    from .files import atomic_write
    from .comparison import compare, format_comparison
    if args.json and not args.json.lower().endswith(".json"):
        raise ValueError(f"--json must end in .json, got {args.json!r}")
    paths = (args.checkpoint_a, args.checkpoint_b)
    ckpts = [_load_checkpoint(p) for p in paths]
    for p, ck in zip(paths, ckpts):
        if ck.flow.context_dim is not None:
            raise ValueError(f"checkpoint '{p}' holds a conditional flow; compare it from Python "
                             "(jaxflows.compare on the per-row log-likelihoods)")
    x, _ = _load_data(args.data, args)
    for p, ck in zip(paths, ckpts):
        if x.shape[1] != ck.flow.dim:
            raise ValueError(f"data file '{args.data}' has {x.shape[1]} columns but the flow in "
                             f"'{p}' models {ck.flow.dim}; both checkpoints must model DATA's columns")
    lls = [_score(ck.flow, ck.params, x) for ck in ckpts]
    for p, ll in zip(paths, lls):
        bad = np.flatnonzero(~np.isfinite(ll))
        if bad.size:
            raise ValueError(f"the flow in '{p}' gives {bad.size} rows of DATA zero density (log-"
                             f"likelihood -inf; first 0-based rows: {bad[:5].tolist()}), so its "
                             "mean log-likelihood is -inf: remove those rows to compare the rest")
    result = compare(lls[0], lls[1], dim=x.shape[1], names=paths)
    print(f"compared on {len(x)} rows of {args.data} ({x.shape[1]} columns); log-likelihoods in "
          "nats per row in the data's units, +- one standard error", file=out)
    print(format_comparison(result), file=out)
    if args.json:
        result = {**result, "data": args.data, "checkpoints": list(paths)}
        atomic_write(args.json, (json.dumps(result, indent=2) + "\n").encode())
        print(f"wrote {args.json}", file=out)
    return 0


COMMANDS = {"fit": _fit_locked, "sample": cmd_sample, "score": cmd_score, "compare": cmd_compare,
            "info": cmd_info}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage)."""
    debug = os.environ.get("JAXFLOWS_DEBUG", "") not in ("", "0")
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        with _WarningsAsLines():  # e.g. fit's RawScaleWarning: one line, no source path
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
        if not isinstance(err, (ValueError, TypeError, OSError, FloatingPointError, ImportError)):
            msg = f"{type(err).__name__}: {msg} (set JAXFLOWS_DEBUG=1 for the traceback)"
        print(f"jaxflows: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
