"""Model comparison by held-out log-likelihood, with a paired standard error.

The mean log-likelihood of test rows estimates ``E_data[log p(x)]``, which is
``-KL(p_data || p) - H(p_data)``: higher is better, and the difference of two
models' means estimates the difference of their KL divergences to the data
(the data's entropy cancels).  Two models scored on the **same rows** should
be compared by the **paired** difference ``d_i = log p_A(x_i) - log p_B(x_i)``:
its standard error

    SE = std(d_1..d_n, ddof=1) / sqrt(n)

is usually far smaller than either model's own standard error, because most
of the row-to-row spread (easy rows, hard rows) is shared by both models.
Comparing the two means' separate error bars instead would call many real
differences "within noise".  ``|mean(d)| > 2 SE`` is roughly a 5% two-sided
test (normal approximation, fine for a few dozen rows or more).

Both log-likelihoods must be in the same units (the same data, the same
transformation of it: add ``jaxflows.data.standardizer_log_det`` to a model
trained on standardised data).  Bits per dimension, ``-LL / (dim ln 2)``, is
the usual unit for images.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import numpy as np

__all__ = ["compare", "format_comparison"]


def _rows(a, name: str) -> np.ndarray:
    if isinstance(a, (bool, np.bool_)):
        raise TypeError(f"{name} must be an array of per-row log-likelihoods, got a bool")
    arr = np.asarray(a)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers (per-row log-likelihoods), got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (n,) (one log-likelihood per row), got {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{name} is not finite at {bad.size} rows (first: {bad[:5].tolist()}, values "
            f"{arr[bad[:3]].tolist()}); a mean log-likelihood and its standard error need finite "
            "values: a model that gives a test row zero density loses outright on that row")
    return arr


def compare(log_prob_a, log_prob_b, *, dim: Optional[int] = None,
            names: Sequence[str] = ("A", "B")) -> Dict[str, Any]:
    """Compare two models by their per-row log-likelihoods on the same rows.

    Args:
      log_prob_a, log_prob_b: ``(n,)`` log-likelihoods (nats) of the same
        ``n >= 2`` rows under model A and model B, in the same units.
      dim: the data's dimension; when given, bits per dimension are added.
      names: labels of the two models (used by :func:`format_comparison`).

    Returns a dict of Python floats / ints:

    - ``"n"``; ``"names"``
    - ``"mean_a"``, ``"mean_b"``: mean log-likelihoods; ``"se_a"``, ``"se_b"``:
      their standard errors ``std(ddof=1) / sqrt(n)``
    - ``"difference"``: ``mean(log_prob_a - log_prob_b)`` (positive: A better);
      ``"difference_se"``: ``std(d, ddof=1) / sqrt(n)`` of the paired
      differences; ``"z"``: their ratio (``inf`` if every row differs by the
      same amount); ``"ci95"``: ``difference -+ 1.96 SE``
    - ``"wins_a"``, ``"wins_b"``, ``"ties"``: rows where A scores higher, lower, equal
    - with ``dim``: ``"bits_per_dim_a"``, ``"bits_per_dim_b"`` and
      ``"difference_bits_per_dim"`` (``difference / (dim ln 2)``; positive: A
      needs fewer bits)

    Raises ``ValueError`` for shapes that differ, fewer than 2 rows, or
    non-finite log-likelihoods (naming the rows).
    """
    a = _rows(log_prob_a, "log_prob_a")
    b = _rows(log_prob_b, "log_prob_b")
    if a.shape != b.shape:
        raise ValueError(f"log_prob_a and log_prob_b must score the same rows: shapes {a.shape} and {b.shape}")
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"compare needs at least 2 rows for a standard error, got {n}")
    names = tuple(str(s) for s in names)
    if len(names) != 2:
        raise ValueError(f"names must be two labels, got {names!r}")
    d = a - b
    root = math.sqrt(n)
    diff, diff_se = float(d.mean()), float(d.std(ddof=1) / root)
    out: Dict[str, Any] = {
        "n": int(n), "names": list(names),
        "mean_a": float(a.mean()), "se_a": float(a.std(ddof=1) / root),
        "mean_b": float(b.mean()), "se_b": float(b.std(ddof=1) / root),
        "difference": diff, "difference_se": diff_se,
        "z": (diff / diff_se) if diff_se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff)),
        "ci95": [diff - 1.96 * diff_se, diff + 1.96 * diff_se],
        "wins_a": int(np.sum(d > 0)), "wins_b": int(np.sum(d < 0)), "ties": int(np.sum(d == 0)),
    }
    if dim is not None:
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        unit = dim * math.log(2.0)
        out.update(bits_per_dim_a=-out["mean_a"] / unit, bits_per_dim_b=-out["mean_b"] / unit,
                   difference_bits_per_dim=diff / unit, dim=int(dim))
    return out


def format_comparison(result: Dict[str, Any]) -> str:
    """A few lines of text for a :func:`compare` result (what ``jaxflows compare`` prints)."""
    na, nb = result["names"]
    width = max(len(na), len(nb), 5)
    bpd = "dim" in result
    lines = [f"{'model':<{width}}  mean log-likelihood (nats)" + ("   bits/dim" if bpd else "")]
    for name, key in ((na, "a"), (nb, "b")):
        line = f"{name:<{width}}  {result['mean_' + key]:>12.3f} +- {result['se_' + key]:<8.3f}"
        if bpd:
            line += f"   {result['bits_per_dim_' + key]:>8.4f}"
        lines.append(line)
    diff, se = result["difference"], result["difference_se"]
    lo, hi = result["ci95"]
    lines.append(f"{na} - {nb}: {diff:+.3f} +- {se:.3f} nats per row (paired SE over {result['n']} rows; "
                 f"95% interval [{lo:+.3f}, {hi:+.3f}])"
                 + (f", {result['difference_bits_per_dim']:+.4f} bits/dim" if bpd else ""))
    lines.append(f"rows where {na} scores higher: {result['wins_a']}, {nb} higher: {result['wins_b']}"
                 + (f", equal: {result['ties']}" if result["ties"] else ""))
    z = result["z"]
    if abs(z) >= 2:
        better, worse = (na, nb) if diff > 0 else (nb, na)
        verdict = f"{better} is better than {worse} (difference {abs(z):.1f} standard errors from 0)"
    else:
        verdict = (f"no clear difference (|difference| = {abs(z):.1f} standard errors < 2): "
                   "more test rows would be needed to tell them apart, if they differ at all")
    lines.append(verdict)
    return "\n".join(lines)
