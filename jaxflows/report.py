"""The ``report.png`` that ``jaxflows fit`` writes: training curves, samples against data.

:func:`write_report` draws, in one figure:

- the training and validation curves (``fit``'s history: mean negative
  log-likelihood per row, in nats), with the best epoch marked;
- flow samples against held-out rows for the first pairs of columns, each axis
  labelled with its column's name (axes fitted to the data: the title counts
  samples that fall outside);
- for image data, a grid of sampled images beside a grid of real rows. Rows are
  taken as images when ``image_shape`` is given, or when the number of columns
  is a square of at least 16 (64 columns: 8 x 8 images).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

from ._optional import require
from .files import replacing


def require_matplotlib(hint: str = ""):
    """The ``matplotlib`` module, or an ``ImportError`` naming the ``cli`` extra that brings it."""
    return require("matplotlib", "the report figure (jaxflows.report)", hint)


def guess_image_shape(dim: int) -> Optional[Tuple[int, int]]:
    """``(side, side)`` when ``dim`` is a square of at least 16, else ``None``."""
    side = math.isqrt(dim)
    return (side, side) if dim >= 16 and side * side == dim else None


def parse_image_shape(text: str) -> Optional[Tuple[int, int]]:
    """``"28x28"`` -> ``(28, 28)``; ``"off"`` -> ``None`` (no image grid)."""
    if text.strip().lower() in ("off", "none", "no"):
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--image-shape must look like HxW (e.g. 28x28) or 'off', got {text!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"--image-shape must be positive, got {text!r}")
    return h, w


def image_shape_option(text: Optional[str], dim: int, source: str) -> Optional[Tuple[int, int]]:
    """The image shape of ``jaxflows fit --image-shape``: guessed from ``dim`` when the
    option is not given (``text=None``), else parsed and checked against ``dim`` columns."""
    shape = guess_image_shape(dim) if text is None else parse_image_shape(text)
    if shape is not None and shape[0] * shape[1] != dim:
        raise ValueError(f"--image-shape {text} has {shape[0] * shape[1]} "
                         f"pixels but {source} has {dim} columns")
    return shape


def _tile(rows: np.ndarray, shape: Tuple[int, int], ncols: int) -> np.ndarray:
    """Images ``rows: (n, h*w)`` tiled into one array, a one-pixel NaN gap between them."""
    h, w = shape
    n = rows.shape[0]
    nrows = max(1, math.ceil(n / ncols))
    out = np.full((nrows * (h + 1) - 1, ncols * (w + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = rows[i].reshape(h, w)
    return out


def _plot_curves(ax, history) -> None:
    """Training and validation NLL per epoch, the best epoch marked."""
    epochs = np.arange(len(history["train_loss"]))
    ax.plot(epochs, history["train_loss"], label="train")
    ax.plot(epochs, history["val_loss"], label="validation")
    if history.get("best_epoch", -1) >= 0:
        ax.axvline(history["best_epoch"], color="grey", ls=":", label="best epoch")
    ax.set(xlabel="epoch", ylabel="mean NLL per row (nats)",
           title="training curves (lower is better)")
    ax.legend()


def _plot_pair(ax, data: np.ndarray, samples: np.ndarray, a: int, b: int, names) -> None:
    """Columns ``a`` and ``b`` (one column when ``a == b``) of held-out rows and of the
    ``m = len(samples)`` samples, axes fitted to the data."""
    m = len(samples)
    ya = data[:m, b] if b != a else np.zeros(m)
    ys = samples[:, b] if b != a else np.zeros(m)
    ax.scatter(data[:m, a], ya, s=3, alpha=0.5, label="held-out data")
    ax.scatter(samples[:, a], ys, s=3, alpha=0.5, label="flow samples")
    # axes fitted to the data: a few far-tail samples would otherwise squash the plot
    lo, hi = np.nanpercentile(data[:, [a, b]], [0.5, 99.5], axis=0)
    pad = 0.25 * (hi - lo) + 1e-6
    lo, hi = lo - pad, hi + pad
    ax.set_xlim(lo[0], hi[0])
    if b != a:
        ax.set_ylim(lo[1], hi[1])
    s = samples[:, [a, b]]
    outside = int(np.sum(~np.all((s >= lo) & (s <= hi), axis=1)))
    ax.set(xlabel=names[a], ylabel=names[b] if b != a else "",
           title=f"{names[a]} vs {names[b]}" if b != a else names[a])
    if outside:
        ax.set_title(ax.get_title() + f"\n({outside}/{m} samples off-axes)", fontsize=10)
    ax.legend(markerscale=3)


def _plot_images(fig, grid, data, samples, image_shape, ncols: int, num_images: int) -> None:
    """Held-out rows and samples as two grids of images on the figure's second row."""
    n = min(num_images, len(data), len(samples))
    per_row = math.ceil(math.sqrt(n))
    lo, hi = np.nanpercentile(data, [0.5, 99.5])
    half = max(1, ncols // 2)
    for k, (rows, title) in enumerate(((data[:n], f"{n} held-out rows"),
                                       (samples[:n], f"{n} flow samples"))):
        sl = slice(0, half) if k == 0 else slice(half, ncols)
        ax = fig.add_subplot(grid[1, sl])
        ax.imshow(_tile(np.clip(rows, lo, hi), image_shape, per_row), cmap="gray_r",
                  vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(f"{title} as {image_shape[0]}x{image_shape[1]} images")
        ax.axis("off")


def write_report(path: str, history, data: np.ndarray, samples: np.ndarray, *,
                 columns: Optional[Sequence[str]] = None,
                 image_shape: Optional[Tuple[int, int]] = None,
                 max_pairs: int = 3, num_images: int = 16) -> str:
    """Write the report figure to ``path`` (PNG) and return ``path``.

    ``history`` is ``fit``'s history; ``data`` held-out rows and ``samples``
    flow samples, both ``(n, dim)`` in the data's own units; ``columns`` the
    column names (default ``column 0``, ``column 1``, ...). ``image_shape``
    ``(h, w)`` with ``h * w == dim`` adds the image grids.
    """
    matplotlib = require_matplotlib()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data, samples = np.asarray(data, np.float64), np.asarray(samples, np.float64)
    dim = data.shape[1]
    names = list(columns) if columns is not None else [f"column {j}" for j in range(dim)]
    if len(names) != dim:
        raise ValueError(f"report: {len(names)} column names for {dim} columns")
    if image_shape is not None and image_shape[0] * image_shape[1] != dim:
        raise ValueError(f"--image-shape {image_shape[0]}x{image_shape[1]} has "
                         f"{image_shape[0] * image_shape[1]} pixels but the data have {dim} columns")
    pairs = [(j, j + 1) for j in range(0, dim - 1, 2)][:max_pairs] or [(0, 0)]
    ncols = 1 + len(pairs)
    fig = plt.figure(figsize=(4.2 * ncols, 4 if image_shape is None else 8.4))
    grid = fig.add_gridspec(1 if image_shape is None else 2, ncols)
    _plot_curves(fig.add_subplot(grid[0, 0]), history)
    m = min(len(data), len(samples), 1000)
    for k, (a, b) in enumerate(pairs):
        _plot_pair(fig.add_subplot(grid[0, 1 + k]), data, samples[:m], a, b, names)
    if image_shape is not None:
        _plot_images(fig, grid, data, samples, image_shape, ncols, num_images)
    fig.tight_layout()
    # written beside the target and renamed: an earlier report is never left half-overwritten
    with replacing(path) as f:
        fig.savefig(f, dpi=90, format="png")
    plt.close(fig)
    return path
