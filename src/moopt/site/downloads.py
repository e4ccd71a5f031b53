"""The whole results table of a run as site downloads (CSV and Parquet), and its data dictionary.

Every row of ``indicator_results`` (every indicator x level x organisation x
period) goes out in the column order :mod:`moopt.tables` defines, so the data
dictionary page, written from the same contract, lists exactly the columns
of the files. DuckDB writes both files straight from the store, without
pandas, so a national run does not hold the table in memory.

Numbers are rounded the same way in both files (see :func:`rounded`): six
significant figures, but never fewer than the digits before the decimal
point, so whole-number counts and pounds keep every digit.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from moopt.atomic import replacing, write_text_atomic
from moopt.tables import TABLES, check_columns, table_exists

RESULTS_TABLE = "indicator_results"
STORE_FILE = "store/moopt.duckdb"  # under the outputs folder (moopt.config.Config.store_path)
CSV_FILE = "downloads/moopt-results.csv"
PARQUET_FILE = "downloads/moopt-results.parquet"
# What the two files were made from; a later build with the same stamp links them instead.
STAMP_FILE = "downloads/.moopt-results-stamp"
SIGNIFICANT_FIGURES = 6
SORT_ORDER = ("indicator_id", "org_level", "org_code", "period_type", "period")

# The same test moopt.atomic applies to CSV text: a cell a spreadsheet would run as a formula
# starts with = + - @ tab or carriage return and is not just a number ("-1.5", "+3", "-12%").
_FORMULA_START = r"^[=+\-@\t\r]"
_PLAIN_NUMBER = r"[+-]?([0-9]{1,3}(,[0-9]{3})+|[0-9]+)?(\.[0-9]+)?([eE][+-]?[0-9]+)?%?"


@dataclass(frozen=True)
class BulkDownloads:
    """What :func:`write_bulk_downloads` wrote."""

    rows: int
    csv_bytes: int
    parquet_bytes: int
    reused: bool = False


def rounded(column: str, figures: int = SIGNIFICANT_FIGURES) -> str:
    """SQL rounding a DOUBLE column to ``figures`` significant figures, keeping whole digits.

    Zero, empty and non-finite values pass through unchanged.

    Examples
    --------
    >>> import duckdb
    >>> sql = rounded("x")
    >>> [duckdb.execute(f"SELECT {sql} FROM (SELECT {v}::DOUBLE AS x)").fetchone()[0]
    ...  for v in (0.000123456789, 3.14159265, 12345678.9, -98765.4321, 0)]
    [0.000123457, 3.14159, 12345679.0, -98765.4, 0.0]
    """
    q = f'"{column}"'
    return (f"CASE WHEN {q} IS NULL OR {q} = 0 OR NOT isfinite({q}) THEN {q} "
            f"ELSE round({q}, greatest(0, {figures - 1} - CAST(floor(log10(abs({q}))) AS INTEGER))) END")


def _safe_text(column: str) -> str:
    """SQL making a text column safe to open in a spreadsheet (see moopt.atomic)."""
    q = f'"{column}"'
    one_line = f"replace(replace({q}, chr(13) || chr(10), chr(10)), chr(13), chr(10))"
    return (f"CASE WHEN regexp_matches({q}, '{_FORMULA_START}') AND NOT (regexp_matches({q}, '[0-9]') "
            f"AND regexp_full_match({q}, '{_PLAIN_NUMBER}')) THEN '''' || {one_line} ELSE {one_line} END")


def _select(for_csv: bool) -> str:
    parts = []
    for column in TABLES[RESULTS_TABLE].columns:
        if column.type == "DOUBLE":
            expression = rounded(column.name)
        elif column.type == "VARCHAR" and for_csv:
            expression = _safe_text(column.name)
        else:
            expression = f'"{column.name}"'
        parts.append(f'{expression} AS "{column.name}"')
    order = ", ".join(SORT_ORDER)
    return f"SELECT {', '.join(parts)} FROM {RESULTS_TABLE} ORDER BY {order}"


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


@dataclass(frozen=True)
class ResultsOverview:
    """What the store's results table holds, for the downloads page."""

    rows: int
    indicator_ids: tuple[str, ...]
    levels: tuple[str, ...]


def results_overview(store_path: Path) -> ResultsOverview | None:
    """Rows, indicators and levels of ``indicator_results``; None without a store or results."""
    if not Path(store_path).is_file():
        return None
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        if not table_exists(con, RESULTS_TABLE):
            return None
        rows = con.execute(f"SELECT count(*) FROM {RESULTS_TABLE}").fetchone()[0]
        ids = [r[0] for r in con.execute(
            f"SELECT DISTINCT indicator_id FROM {RESULTS_TABLE} ORDER BY 1").fetchall()]
        levels = [r[0] for r in con.execute(
            f"SELECT DISTINCT org_level FROM {RESULTS_TABLE} ORDER BY 1").fetchall()]
        return ResultsOverview(rows=rows, indicator_ids=tuple(ids), levels=tuple(levels))
    finally:
        con.close()


def _stamp(con: duckdb.DuckDBPyConnection) -> str:
    """What the files depend on: the results (their key in run_facts), the columns and rounding."""
    key = ""
    if table_exists(con, "run_facts"):
        row = con.execute("SELECT results_key FROM run_facts").fetchone()
        key = row[0] if row and row[0] else ""
    if not key:
        return ""  # results of unknown origin: never reused
    columns = ",".join(f"{c.name}:{c.type}" for c in TABLES[RESULTS_TABLE].columns)
    return f"{key}|{columns}|{SIGNIFICANT_FIGURES}|{_FORMULA_START}|{','.join(SORT_ORDER)}"


def _reuse_previous(previous_site: Path | None, folder: Path, stamp: str) -> bool:
    """Hard-link the files of the previous site when they were made from the same results.

    Each build writes new files rather than changing old ones, so a link is safe; where
    links are not possible (another file system) the files are copied.
    """
    if previous_site is None or not stamp:
        return False
    previous_stamp = Path(previous_site) / STAMP_FILE
    names = (CSV_FILE, PARQUET_FILE)
    if not previous_stamp.is_file() or previous_stamp.read_text(encoding="utf-8") != stamp:
        return False
    if not all((Path(previous_site) / name).is_file() for name in names):
        return False
    for name in (*names, STAMP_FILE):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(Path(previous_site) / name, target)
        except OSError:
            shutil.copy2(Path(previous_site) / name, target)
    return True


def write_bulk_downloads(store_path: Path, folder: Path, previous_site: Path | None = None
                         ) -> BulkDownloads | None:
    """Write ``indicator_results`` as :data:`CSV_FILE` and :data:`PARQUET_FILE` under ``folder``.

    Parameters
    ----------
    store_path : Path
        The run's store (``outputs/store/moopt.duckdb``), opened read-only.
    folder : Path
        The site root being built.
    previous_site : Path, optional
        The site being replaced: its files are reused when its stamp
        (:data:`STAMP_FILE`: the results key, columns and rounding) matches.

    Returns
    -------
    BulkDownloads or None
        Rows, file sizes and whether the files were reused; None when there
        is no store or it holds no results (a site built from notebooks alone).

    Raises
    ------
    RuntimeError
        When the stored table's columns differ from the contract in :mod:`moopt.tables`.
    """
    store_path = Path(store_path)
    if not store_path.is_file():
        return None
    folder = Path(folder)
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        if not table_exists(con, RESULTS_TABLE):
            return None
        check_columns(con, RESULTS_TABLE)
        rows = con.execute(f"SELECT count(*) FROM {RESULTS_TABLE}").fetchone()[0]
        stamp = _stamp(con)
        reused = _reuse_previous(previous_site, folder, stamp)
        if not reused:
            with replacing(folder / CSV_FILE) as temporary:
                con.execute(f"COPY ({_select(for_csv=True)}) TO '{_sql_path(temporary)}' "
                            "(FORMAT csv, HEADER true, DELIMITER ',', DATEFORMAT '%Y-%m-%d')")
            with replacing(folder / PARQUET_FILE) as temporary:
                con.execute(f"COPY ({_select(for_csv=False)}) TO '{_sql_path(temporary)}' "
                            "(FORMAT parquet, COMPRESSION zstd)")
            write_text_atomic(folder / STAMP_FILE, stamp)
    finally:
        con.close()
    return BulkDownloads(rows=rows, csv_bytes=(folder / CSV_FILE).stat().st_size,
                         parquet_bytes=(folder / PARQUET_FILE).stat().st_size, reused=reused)
