"""What the ``jaxflows`` subcommands share: reading data and checkpoints, scoring and sampling
in data units, the files they write (atomically), and the numbers they print."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Optional, Sequence

from .files import replacing

MODEL_FILE = "model.ckpt"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.png"


def cli_spelling(message: str) -> str:
    """Library wording of a data error -> the command line's (``drop='c'`` -> ``--drop c``)."""
    import re
    import shlex
    message = re.sub(r"\(drop=(?:'([^']*)'|([^)]*))\)",
                     lambda m: f"(--drop {shlex.quote(m.group(1) if m.group(1) is not None else m.group(2))})",
                     message)
    message = re.sub(r"\bkey=('[^']*')", r"--array \1", message)
    return message.replace("pick one with key.", "pick one with --array NAME.")


def load_data(path, args, allow_inf: bool = False):
    """``(rows, column names or None)`` of a data file, errors in the command line's spelling."""
    from .data import column_names, load_array
    try:
        x = load_array(path, key=args.array, delimiter=args.delimiter, drop=args.drop,
                       allow_inf=allow_inf, header=args.header)
        names = column_names(path, delimiter=args.delimiter, drop=args.drop, header=args.header)
    except ValueError as err:
        raise ValueError(cli_spelling(str(err))) from None
    return x, names


def score_rows(flow, params, x):
    """Per-row log-likelihood (nats, data units) by :func:`jaxflows.score`: float64
    standardisation, ``-inf`` for infinite or overflowing rows, never NaN."""
    from .scoring import score
    return score(flow, params, x)


def sampler(flow, n: int):
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


def sample_rows(flow, params, n: int, seed: int):
    """``(x, z)`` of :func:`sampler`, drawn from ``seed``."""
    import jax
    return sampler(flow, n)(params, jax.random.PRNGKey(seed))


def timed_sample(flow, params, n: int, seed: int):
    """``(samples, seconds)``: compile once, then time a second draw alone."""
    import jax
    draw = sampler(flow, n)
    draw(params, jax.random.PRNGKey(seed))
    t0 = time.perf_counter()
    x, _ = draw(params, jax.random.PRNGKey(seed + 1))
    return x, time.perf_counter() - t0


def nonfinite_rows(x) -> int:
    """Number of rows of ``x`` with a NaN or Inf entry."""
    import numpy as np
    return int((~np.isfinite(x)).any(axis=1).sum())


def constant_column_error(source: str, train, names, dropped: bool) -> None:
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


def warn_outliers(source: str, x, names, dropped: bool) -> None:
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


def write_array(path: str, a, columns: Optional[Sequence[str]] = None) -> str:
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


def write_json(path: str, obj) -> str:
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


def pm(summary) -> str:
    """``-116.370 +- 2.660 nats`` (two standard errors over rows)."""
    return (f"{summary['log_likelihood_nats']:.3f} +- {2 * summary['stderr_nats']:.3f} nats "
            f"({summary['bits_per_dim']:.4f} bits/dim)")


def ll_summary(ll, dim: int):
    from .data import bits_per_dim
    import numpy as np
    mean = float(ll.mean())
    # a -inf row makes the mean -inf and the spread undefined (NaN, no numpy warning)
    spread = float(ll.std()) if np.isfinite(ll).all() else float("nan")
    return {"log_likelihood_nats": mean, "bits_per_dim": float(bits_per_dim(mean, dim)),
            "stderr_nats": spread / math.sqrt(max(1, ll.size))}


def load_checkpoint(path, model_only: bool = True):
    """The checkpoint at ``path`` with a flow the command line can use (a fit's training
    state is refused unless ``model_only=False``); an old standardiser stored beside the
    flow becomes the flow's own fixed affine map."""
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


def load_unconditional(path, refusal: str):
    """:func:`load_checkpoint`, refusing a conditional flow with the message ``refusal``
    (the command line has no way to pass a context)."""
    ckpt = load_checkpoint(path)
    if ckpt.flow.context_dim is not None:
        raise ValueError(refusal)
    return ckpt
