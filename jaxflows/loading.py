"""Reading user data files: ``.npy``, ``.npz`` and delimited text into a float ``(n, d)`` array.

:func:`load_array` raises one clear sentence naming the file on any problem
(a missing file, a non-numeric column, ragged rows, NaN rows, ...);
:func:`column_names` gives the names of the columns it keeps from a text file
with a header.  Both are re-exported by :mod:`jaxflows.data`.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import warnings
import zipfile
import zlib
from typing import Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["DataWarning", "load_array", "column_names"]

PathLike = Union[str, os.PathLike]
Columns = Union[None, int, str, Sequence[Union[int, str]]]

_TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".dat")
_SUFFIXES = (".npy", ".npz") + _TEXT_SUFFIXES
# Text fields read as a missing value (NaN) rather than as a non-numeric
# entry, so a file with gaps gets the "rows with NaN" error, not a column one.
_MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "?"})
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";",
                    "whitespace": None, "space": None, " ": None}


class DataWarning(UserWarning):
    """A data file read in a way worth knowing (e.g. a numeric first row taken as a header)."""


def load_array(path: PathLike, *, key: Optional[str] = None,
               delimiter: Optional[str] = None, drop: Columns = None,
               header: Optional[bool] = None, allow_inf: bool = False) -> np.ndarray:
    """Load a data matrix ``(n, d)`` from ``.npy``, ``.npz`` or delimited text.

    - ``.npy``: the array (never unpickled: object arrays are rejected).
    - ``.npz``: the array named ``key``; with ``key=None`` the archive must
      hold exactly one array, otherwise the error lists the names.
    - ``.csv``, ``.tsv``, ``.txt``, ``.dat``: numbers separated by ``,``
      ``;`` tab or whitespace (detected from the first lines, or given as
      ``delimiter``: a character or ``"tab"``, ``"whitespace"``). The first
      row is a header if ``header=True``; with ``header=None`` it is taken
      as one when it holds more non-numeric fields than the second row, or
      when it numbers the columns (``0,1,2,...`` above real numbers, as
      pandas writes an unnamed array; with a :class:`DataWarning`);
      ``header=False`` reads it as data.
      Blank lines and lines starting with ``#`` are skipped; empty fields and
      ``NA``/``nan``/``?`` are missing values (rejected as NaN rows).

    ``allow_inf=True`` keeps rows with ``+-Inf`` entries (to be scored, e.g.
    as ``-inf`` log-likelihoods); rows with NaN or missing values are always
    rejected.

    A 1-D array becomes ``(n, 1)``. ``drop`` removes columns: an int index
    (negative counts from the end), a header name, a list of these, or a
    comma-separated string such as ``"quality,id"``. Names need a header.

    Returns:
      float array ``(n, d)``: float32/float64 data keep their dtype, text and
      integer data become float64.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: unknown extension, unreadable or truncated file, missing
        or ambiguous ``key``, wrong number of dimensions, no rows or columns,
        ragged rows, a non-numeric column (named), unknown ``drop`` columns,
        rows with NaN/Inf (count and first row). Each message is one sentence
        that names the file.
    """
    path, where, suffix = _check_request(path, key, delimiter, header)
    if suffix in _TEXT_SUFFIXES:
        x, names, lines = _read_text(path, where, delimiter, header, drop)
    else:
        x, lines = _numeric_matrix(_read_numpy(path, where, suffix, key), where), None
        if drop is not None:
            x = x[:, _kept_columns(drop, x.shape[1], None, where)]
    _check_rows(x, where, lines, allow_inf, dropped=drop is not None)
    return x


def _check_request(path: PathLike, key, delimiter, header) -> Tuple[str, str, str]:
    """``(path, where, suffix)`` for a file that exists and that the options suit."""
    path = os.fspath(path)
    where = f"Data file '{path}'"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{where} does not exist.")
    if os.path.isdir(path):
        raise ValueError(f"{where} is a directory, not a file.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _SUFFIXES:
        raise ValueError(
            f"{where} has an unsupported extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(_SUFFIXES)}.")
    if key is not None and suffix != ".npz":
        raise ValueError(f"{where}: key={key!r} only applies to .npz files.")
    if suffix not in _TEXT_SUFFIXES and (delimiter is not None or header is not None):
        raise ValueError(f"{where}: delimiter and header only apply to text files, "
                         f"not {suffix}.")
    return path, where, suffix


def _check_rows(x: np.ndarray, where: str, lines, allow_inf: bool, dropped: bool) -> None:
    """Rows and columns left, and no row with NaN (or Inf, unless ``allow_inf``)."""
    if x.shape[0] == 0:
        raise ValueError(f"{where} has no data rows.")
    if x.shape[1] == 0:
        raise ValueError(f"{where} has no columns left"
                         + (" after dropping columns." if dropped else "."))
    bad = np.isnan(x) if allow_inf else ~np.isfinite(x)
    rows = np.flatnonzero(bad.any(axis=1))
    if rows.size:
        at = f" (line {lines[rows[0]]} of the file)" if lines is not None else ""
        what = "NaN or missing values" if allow_inf else "NaN, Inf or missing values"
        raise ValueError(
            f"{where} has {rows.size} {'row' if rows.size == 1 else 'rows'} with {what} "
            f"(first: data row {rows[0]}, 0-based{at}); remove or impute them.")


def column_names(path: PathLike, *, delimiter: Optional[str] = None, drop: Columns = None,
                 header: Optional[bool] = None) -> Optional[list]:
    """The names of the columns :func:`load_array` keeps from a text file, or ``None``.

    ``None`` for ``.npy``/``.npz`` files and for text without a header row. Reads
    only the first lines; header detection, delimiter and ``drop`` work as in
    :func:`load_array` (call that first: this function assumes a readable file).
    """
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() not in _TEXT_SUFFIXES:
        return None
    where = f"Data file '{path}'"
    with open(path, "r", encoding="utf-8-sig", newline="") as f:
        content = (line.rstrip("\r\n") for line in f if line.strip() and not line.lstrip().startswith("#"))
        lines = list(itertools.islice(content, 50))
    if not lines:
        return None
    rows, _ = _split_rows(lines, delimiter, where)
    if not (header if header is not None else _looks_like_header(rows)):
        return None
    names = rows[0]
    keep = range(len(names)) if drop is None else _kept_columns(drop, len(names), names, where)
    return [names[j] for j in keep]


def _read_numpy(path: str, where: str, suffix: str, key: Optional[str]) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):
            raise ValueError(f"{where} holds Python objects, not numbers; "
                             "save a numeric array instead.") from None
        raise ValueError(f"{where} is not a readable {suffix} file ({err}).") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"{where} is not a readable {suffix} file, possibly "
                         f"truncated or corrupted ({err}).") from None
    if suffix == ".npy":
        if not isinstance(loaded, np.ndarray):
            raise ValueError(f"{where} does not hold a single NumPy array.")
        return loaded
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{where} is not an .npz archive.")
    with loaded:
        names = list(loaded.files)
        if not names:
            raise ValueError(f"{where} holds no arrays.")
        if key is None:
            if len(names) != 1:
                raise ValueError(f"{where} holds {len(names)} arrays "
                                 f"({', '.join(map(repr, names))}); pick one with key.")
            key = names[0]
        elif key not in names:
            raise ValueError(f"{where} has no array named {key!r}; it holds "
                             f"{', '.join(map(repr, names))}.")
        try:
            return loaded[key]
        except ValueError as err:
            if "pickle" in str(err):
                raise ValueError(f"{where}: array {key!r} holds Python objects, "
                                 "not numbers.") from None
            raise ValueError(f"{where}: array {key!r} cannot be read, possibly "
                             f"truncated or corrupted ({err}).") from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise ValueError(f"{where}: array {key!r} cannot be read, possibly "
                             f"truncated or corrupted ({err}).") from None


def _numeric_matrix(arr: np.ndarray, where: str) -> np.ndarray:
    """A loaded NumPy array as float ``(n, d)``."""
    if arr.dtype.names is not None or not (np.issubdtype(arr.dtype, np.number)
                                           or arr.dtype == np.bool_):
        raise ValueError(f"{where} holds dtype {arr.dtype}, not numbers.")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{where} holds complex numbers ({arr.dtype}); "
                         "real numbers are expected.")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{where} holds an array of shape {arr.shape}; expected "
                         "(n, d) or (n,) — reshape it, e.g. images to (n, height*width).")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32 if arr.dtype == np.float16 else np.float64)
    return arr


def _read_text(path: str, where: str, delimiter: Optional[str],
               header: Optional[bool], drop: Columns):
    """Parse delimited text -> (float64 (n, d), column names or None, file line per row)."""
    try:
        with open(path, "r", encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text; is it really a "
                         f"{os.path.splitext(path)[1]} file?") from None
    numbered = [(i + 1, line) for i, line in enumerate(text.splitlines())
                if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise ValueError(f"{where} is empty.")

    rows, delim = _split_rows([line for _, line in numbered], delimiter, where)
    line_numbers = [num for num, _ in numbered]

    if header is None:
        header = _looks_like_header(rows)
        if header and _numbers_the_columns(rows):
            warnings.warn(f"{where}: its first row ({', '.join(rows[0][:5])}"
                          f"{', ...' if len(rows[0]) > 5 else ''}) numbers the columns, so it is "
                          "read as a header, not as data; pass header=False (--no-header) to "
                          "read it as data", DataWarning, stacklevel=3)
    names = rows[0] if header else None
    data, data_lines = (rows[1:], line_numbers[1:]) if header else (rows, line_numbers)
    width = len(names) if names is not None else (len(data[0]) if data else 0)
    for row, num in zip(data, data_lines):
        if len(row) != width:
            shown = "whitespace" if delim is None else repr(delim)
            raise ValueError(
                f"{where} has {len(row)} fields on line {num} but {width} "
                f"{'in the header' if names is not None else 'on the first data line'} "
                f"(delimiter {shown}); fix the row or give the delimiter.")
    keep = list(range(width)) if drop is None else _kept_columns(drop, width, names, where)

    x = np.empty((len(data), len(keep)), dtype=np.float64)
    for out, j in enumerate(keep):
        column = [row[j] for row in data]
        try:
            x[:, out] = np.asarray(column, dtype=np.float64)
        except ValueError:
            x[:, out] = _parse_column(column, j, names, data_lines, where)
    return x, names, data_lines


def _split_rows(lines: Sequence[str], delimiter: Optional[str], where: str):
    """``(rows of stripped fields, delimiter used)``: ``delimiter`` as given, or
    sniffed from the first 50 lines (``None``: runs of whitespace)."""
    delim = _resolve_delimiter(delimiter, where) if delimiter is not None else _sniff_delimiter(lines[:50])
    if delim is None:
        rows = [line.split() for line in lines]
    else:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delim, skipinitialspace=True))
    return [[field.strip() for field in row] for row in rows], delim


def _resolve_delimiter(delimiter: str, where: str) -> Optional[str]:
    if not isinstance(delimiter, str):
        raise TypeError(f"delimiter must be a string, got {type(delimiter).__name__}.")
    lowered = delimiter.lower()
    if lowered in _DELIMITER_NAMES or delimiter in _DELIMITER_NAMES:
        return _DELIMITER_NAMES.get(delimiter, _DELIMITER_NAMES.get(lowered))
    if len(delimiter) != 1:
        raise ValueError(f"{where}: delimiter must be one character, 'tab' or "
                         f"'whitespace', got {delimiter!r}.")
    return delimiter


def _sniff_delimiter(sample: Sequence[str]) -> Optional[str]:
    """The first of tab, ``;`` and ``,`` that splits every sampled line into the
    same number (> 1) of fields (quotes respected); else ``None`` (whitespace).

    ``;`` is tried before ``,`` so that files with decimal commas
    (``1,5;2,3``) are split on ``;``.
    """
    for candidate in ("\t", ";", ","):
        counts = {len(row) for row in csv.reader(io.StringIO("\n".join(sample)),
                                                 delimiter=candidate)}
        if len(counts) == 1 and counts.pop() > 1:
            return candidate
    return None


def _is_number(field: str) -> bool:
    """A number, a missing-value marker or a decimal-comma number (``1,5``)."""
    if field.lower() in _MISSING:
        return True
    try:
        float(field.replace(",", ".") if field.count(",") == 1 else field)
    except ValueError:
        return False
    return True


def _looks_like_header(rows) -> bool:
    """Header iff the first row has more non-numeric fields than the second
    (a single row is a header if anything in it is non-numeric), or it numbers
    the columns (:func:`_numbers_the_columns`)."""
    def text_fields(row):
        return sum(not _is_number(field) for field in row)
    first = text_fields(rows[0])
    return first > (text_fields(rows[1]) if len(rows) > 1 else 0) or _numbers_the_columns(rows)


def _numbers_the_columns(rows) -> bool:
    """The common numeric header: a first row ``0,1,2,...`` (what
    ``pandas.DataFrame(array).to_csv(index=False)`` writes) above rows of
    real numbers (at least one non-integer value in the next lines)."""
    try:
        first = [int(field) for field in rows[0]]
    except ValueError:
        return False
    if len(first) < 2 or first != list(range(len(first))):
        return False

    def fractional(field):
        try:
            int(field)
            return False
        except ValueError:
            pass
        try:
            return math.isfinite(float(field))
        except ValueError:
            return False
    return any(fractional(field) for row in rows[1:50] for field in row)


def _parse_column(column, j, names, lines, where) -> np.ndarray:
    """Slow path: missing markers -> NaN; the first non-number -> ValueError naming the column."""
    values = np.empty(len(column), dtype=np.float64)
    for i, field in enumerate(column):
        if field.lower() in _MISSING:
            values[i] = np.nan
            continue
        try:
            values[i] = float(field)
        except ValueError:
            label = f"column {names[j]!r} (index {j})" if names is not None else f"column {j}"
            hint = ("; a decimal comma? pass the delimiter and use '.' for decimals"
                    if "," in field and all(p.strip().lstrip("-").isdigit()
                                            for p in field.split(",")) else "")
            drop_as = repr(names[j]) if names is not None else str(j)
            raise ValueError(
                f"{where} has a non-numeric {label}: {field!r} on line {lines[i]}"
                f"{hint}; drop the column (drop={drop_as}) if it is a label.") from None
    return values


def _kept_columns(drop: Columns, width: int, names, where: str) -> list:
    """Indices of the columns left after removing ``drop`` (see :func:`load_array`)."""
    if isinstance(drop, (int, np.integer, str)):
        items = [drop]
    else:
        items = list(drop)
    expanded = []
    for item in items:
        if isinstance(item, str) and not (names is not None and item.strip() in names) \
                and "," in item:
            expanded.extend(part for part in item.split(",") if part.strip())
        else:
            expanded.append(item)
    removed = set()
    for item in expanded:
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"drop entries must be column names or indices, got {item!r}.")
        if isinstance(item, str):
            item = item.strip()
            if names is not None and item in names:
                removed.update(j for j, name in enumerate(names) if name == item)
                continue
            if item.lstrip("-").isdigit():
                item = int(item)
            elif names is None:
                raise ValueError(f"{where} has no header row, so column {item!r} cannot "
                                 "be dropped by name; use its 0-based index.")
            else:
                raise ValueError(f"{where} has no column {item!r}; its columns are "
                                 f"{', '.join(map(repr, names))}.")
        if not isinstance(item, (int, np.integer)):
            raise TypeError(f"drop entries must be column names or indices, got {item!r}.")
        if not -width <= item < width:
            raise ValueError(f"{where} has {width} columns, so column index {item} "
                             "cannot be dropped.")
        removed.add(int(item) % width)
    return [j for j in range(width) if j not in removed]
