"""``jaxflows sample``, ``score``, ``compare`` and ``info``: use a checkpoint that
``jaxflows fit`` wrote (see :mod:`jaxflows.cli`)."""

from __future__ import annotations

import json
import math
import sys

from . import cli_common as common
from .files import atomic_write

__all__ = ["cmd_sample", "cmd_score", "cmd_compare", "cmd_info"]


def cmd_sample(args, out=None) -> int:
    out = sys.stdout if out is None else out
    ckpt = common.load_unconditional(args.checkpoint, "this checkpoint holds a conditional flow; "
                                     "sample it from Python with a context")
    import numpy as np
    x, z = common.sample_rows(ckpt.flow, ckpt.params, args.num, args.seed)
    bad = common.nonfinite_rows(x)
    if bad and not args.keep_nonfinite:
        raise ValueError(f"{bad} of {args.num} samples are not finite (NaN or Inf), so nothing "
                         f"was written to {args.out}; pass --keep-nonfinite to write every row "
                         "anyway")
    columns = ckpt.metadata.get("columns") if isinstance(ckpt.metadata, dict) else None
    if columns is not None and len(columns) != x.shape[1]:
        columns = None
    path = common.write_array(args.out, x, columns=columns)
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
    xv, _ = common.load_data(args.calibrate, args, allow_inf=True)
    if xv.shape[1] != ckpt.flow.dim:
        raise ValueError(f"calibration file '{args.calibrate}' has {xv.shape[1]} columns but the "
                         f"checkpoint's flow models {ckpt.flow.dim}; give it the columns of DATA")
    cal = anomaly.calibrate(common.score_rows(ckpt.flow, ckpt.params, xv))
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
    ckpt = common.load_unconditional(args.checkpoint, "this checkpoint holds a conditional flow; "
                                     "score it from Python with a context")
    import numpy as np
    # rows with +-Inf are kept (they score -inf); rows with NaN are refused, naming row and line
    x, names = common.load_data(args.data, args, allow_inf=True)
    if x.shape[1] != ckpt.flow.dim:
        raise ValueError(f"data file '{args.data}' has {x.shape[1]} columns but the checkpoint's "
                         f"flow models {ckpt.flow.dim}; " + _column_hint(names, ckpt))
    ll = common.score_rows(ckpt.flow, ckpt.params, x)  # float64, never NaN
    calibrated = None if args.calibrate is None else _calibrated(args, ckpt, ll)
    path = (common.write_array(args.out, ll, columns=["log_likelihood"]) if calibrated is None else
            common.write_array(args.out, calibrated["table"], columns=["log_likelihood", "p_value", "flag"]))
    finite = np.isfinite(ll)
    n_inf = int((~finite).sum())
    if finite.any():
        text = f"mean log-likelihood {common.pm(common.ll_summary(ll[finite], ckpt.flow.dim))}"
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
    ckpt = common.load_checkpoint(args.checkpoint, model_only=False)
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
            print(f"{name} log-likelihood: {common.pm(m)}" if "stderr_nats" in m else
                  f"{name} log-likelihood: {m['log_likelihood_nats']:.3f} nats "
                  f"({m['bits_per_dim']:.4f} bits/dim)", file=out)
    return 0


def cmd_compare(args, out=None) -> int:
    out = sys.stdout if out is None else out
    import numpy as np
    from .comparison import compare, format_comparison
    if args.json and not args.json.lower().endswith(".json"):
        raise ValueError(f"--json must end in .json, got {args.json!r}")
    paths = (args.checkpoint_a, args.checkpoint_b)
    ckpts = [common.load_unconditional(p, f"checkpoint '{p}' holds a conditional flow; compare it "
                                          "from Python (jaxflows.compare on the per-row log-likelihoods)")
             for p in paths]
    x, _ = common.load_data(args.data, args)
    for p, ck in zip(paths, ckpts):
        if x.shape[1] != ck.flow.dim:
            raise ValueError(f"data file '{args.data}' has {x.shape[1]} columns but the flow in "
                             f"'{p}' models {ck.flow.dim}; both checkpoints must model DATA's columns")
    lls = [common.score_rows(ck.flow, ck.params, x) for ck in ckpts]
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
