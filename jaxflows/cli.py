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

The parser is in :mod:`jaxflows.cli_parser`, ``fit`` in :mod:`jaxflows.cli_fit`, the
other commands in :mod:`jaxflows.cli_commands` and what they share in
:mod:`jaxflows.cli_common`.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from .cli_commands import cmd_compare, cmd_info, cmd_sample, cmd_score
from .cli_common import METRICS_FILE, MODEL_FILE, REPORT_FILE, auto_batch_size  # noqa: F401
from .cli_fit import cmd_fit, fit_locked  # noqa: F401
from .cli_parser import UsageError, build_parser

__all__ = ["main", "build_parser", "auto_batch_size", "COMMANDS", "UsageError",
           "MODEL_FILE", "METRICS_FILE", "REPORT_FILE"]


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


COMMANDS = {"fit": fit_locked, "sample": cmd_sample, "score": cmd_score, "compare": cmd_compare,
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
