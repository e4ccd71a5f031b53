"""Atomic file writes: a reader (or a crash) never sees a half-written output.

Everything moopt writes goes to a uniquely named hidden temporary file in the
target's own folder (so the final rename stays on one file system), is flushed
to disk, and is moved into place with :func:`os.replace`. A failed write
removes its temporary file and leaves any previous version untouched.

CSV files are written for people who open them in a spreadsheet, so by default
:func:`write_csv_atomic` neutralises text that a spreadsheet would run as a
formula (see :func:`neutralise_spreadsheet_formulas`).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pandas as pd


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is moved to ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO], None], binary: bool = False,
                 durable: bool = True) -> Path:
    """Call ``write(stream)`` on a temporary file (text, or bytes when ``binary``), then move it to ``path``.

    ``durable`` also flushes the file to disk before the move (fsync), so that it survives
    the machine losing power. Without it the write is still atomic for every reader and
    against the process being killed; pages' chart downloads, thousands per build and
    rewritten by any rebuild, are written so.
    """
    with replacing(path) as temporary:
        # "x": never reuse an existing file; newline="": the writer decides line endings.
        with (open(temporary, "xb") if binary else
              open(temporary, "x", encoding="utf-8", newline="")) as stream:
            write(stream)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, durable: bool = True) -> Path:
    return write_atomic(path, lambda stream: stream.write(text), durable=durable)


# A spreadsheet runs a cell as a formula (or DDE command) when it starts with one of these
# (OWASP, "CSV Injection"): = + - @ tab carriage-return.
_FORMULA_START = re.compile(r"[=+\-@\t\r]")
# Text that is just a number ("-1,234.5", "+3", "-12%") cannot run anything and stays a number.
_PLAIN_NUMBER = re.compile(r"[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?%?")


def _is_formula(text: str) -> bool:
    return bool(_FORMULA_START.match(text)) and not (
        any(c.isdigit() for c in text) and _PLAIN_NUMBER.fullmatch(text)
    )


def _neutralised_text(values: pd.Series) -> pd.Series | None:
    """``values`` made safe for a spreadsheet, or None when nothing needs changing.

    Formula-like strings get a leading quote; carriage returns inside text become "\\n"
    (the CSV writer quotes a cell only for the "\\n" line end, so a bare "\\r" would end
    the row early in a spreadsheet).
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = _neutralised_text(pd.Series(values.cat.categories, dtype=object))
        if categories is None:
            return None
        return values.cat.rename_categories(list(categories))
    if not (values.dtype == object or isinstance(values.dtype, pd.StringDtype)):
        return None  # numbers, booleans and dates cannot hold a formula
    # Most columns hold nothing risky: a plain loop says so faster than pandas' string methods.
    if not any(isinstance(v, str) and v and (v[0] in "=+-@\t\r" or "\r" in v) for v in values.tolist()):
        return None
    starts = values.str.match(_FORMULA_START.pattern).astype(object).eq(True)  # NA: not text
    returns = values.str.contains("\r", regex=False).astype(object).eq(True)
    if not (starts.any() or returns.any()):
        return None
    risky = starts & values.where(starts, "").map(lambda v: isinstance(v, str) and _is_formula(v))
    if not (risky.any() or returns.any()):
        return None
    out = values.astype(object).copy()
    out[risky] = "'" + out[risky]
    line_breaks = out[returns].str.replace("\r\n", "\n", regex=False)
    out[returns] = line_breaks.str.replace("\r", "\n", regex=False)
    return out


def neutralise_spreadsheet_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cannot be run as a spreadsheet formula.

    A text cell (or column name) starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return gets a leading single quote, as OWASP advises against CSV injection: a practice
    named ``=HYPERLINK(...)`` then shows as text. Numeric columns are untouched, and so is
    text that is only a number (``"-1,234.5"``, ``"+3"``, ``"-12%"``), so negative values
    stay numbers. A carriage return inside text is written as a line feed, which the CSV
    writer quotes (a bare carriage return would split the row in a spreadsheet).

    Parameters
    ----------
    frame : pandas.DataFrame
        Table about to be written for people to open.

    Returns
    -------
    pandas.DataFrame
        ``frame`` itself when nothing needed changing, else a changed copy.

    Examples
    --------
    >>> table = pd.DataFrame({"name": ["=1+2", "-1.5", "A-B"], "value": [-1.0, 2.0, 3.0]})
    >>> neutralise_spreadsheet_formulas(table)["name"].tolist()
    ["'=1+2", '-1.5', 'A-B']
    """
    changed: dict[object, pd.Series] = {}
    for position, column in enumerate(frame.columns):
        values = _neutralised_text(frame.iloc[:, position])
        if values is not None:
            changed[position] = values
    names = [f"'{c}" if isinstance(c, str) and _is_formula(c) else c for c in frame.columns]
    if not changed and names == list(frame.columns):
        return frame
    out = frame.copy()
    for position, values in changed.items():
        out.isetitem(position, values)
    out.columns = names
    return out


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike[str], *,
                     spreadsheet_safe: bool = True, durable: bool = True, **to_csv_options) -> Path:
    """``frame.to_csv`` (without the index, Unix line ends, ISO dates), atomically.

    With ``spreadsheet_safe`` (the default) text that a spreadsheet would run as a formula
    is neutralised first (:func:`neutralise_spreadsheet_formulas`). Pass False only for files
    that are data for moopt itself and must keep every value exactly (e.g. a download cache).
    ``durable``: see :func:`write_atomic`.
    """
    if spreadsheet_safe:
        frame = neutralise_spreadsheet_formulas(frame)
    options = {"index": False, "lineterminator": "\n", "date_format": "%Y-%m-%d", **to_csv_options}
    return write_atomic(path, lambda stream: frame.to_csv(stream, **options), durable=durable)
