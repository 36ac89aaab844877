"""The ``jaxflows`` command line's parser: options, their types and help (see :mod:`jaxflows.cli`)."""

from __future__ import annotations

import argparse
import math
from typing import List

__all__ = ["UsageError", "build_parser"]


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
    """The ``jaxflows`` parser: one subcommand per ``cmd_*`` function."""
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

    _add_fit(sub)
    _add_sample(sub)
    _add_score(sub)
    _add_compare(sub)
    _add_info(sub)
    return parser


def _add_fit(sub) -> None:
    from .models import FACTORIES

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
    _add_processes(f)


def _add_processes(f) -> None:
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


def _add_sample(sub) -> None:
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


def _add_score(sub) -> None:
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


def _add_compare(sub) -> None:
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


def _add_info(sub) -> None:
    i = sub.add_parser("info", help="describe a checkpoint",
                       description="Print the flow, its size and the stored metrics of CKPT.")
    i.add_argument("checkpoint", metavar="CKPT", help="a checkpoint file (e.g. OUT/model.ckpt)")
