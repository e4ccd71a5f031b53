"""The run's results as site downloads (CSV and Parquet), and their data dictionary.

Three files, cut from ``indicator_results`` so that a national site stays small:

- ``moopt-results-latest.csv`` and ``.parquet``: what the pages show, every
  organisation x indicator at every level except practice (practice too when
  the run's level is practice), in each indicator's latest period of its main
  period type;
- ``moopt-results-history.parquet``: every period and period type for the
  same levels.

Practice rows are about four in five of a national table (several GB as CSV),
so they stay in the store (``outputs/store/moopt.duckdb``, see
``docs/tables.md``). Columns come in the order :mod:`moopt.tables` defines, so
the data dictionary page, written from the same contract, lists exactly the
columns of the files. DuckDB writes the files straight from the store,
without pandas, so a national run does not hold the table in memory.

Numbers are rounded the same way in both files (see :func:`rounded`): six
significant figures, but never fewer than the digits before the decimal
point, so whole-number counts and pounds keep every digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from moopt.atomic import replacing, write_text_atomic
from moopt.site.files import link_file
from moopt.tables import TABLES, check_columns, table_exists

RESULTS_TABLE = "indicator_results"
STORE_FILE = "store/moopt.duckdb"  # under the outputs folder (moopt.config.Config.store_path)
LATEST_CSV_FILE = "downloads/moopt-results-latest.csv"
LATEST_PARQUET_FILE = "downloads/moopt-results-latest.parquet"
HISTORY_PARQUET_FILE = "downloads/moopt-results-history.parquet"
DOWNLOAD_FILES = (LATEST_CSV_FILE, LATEST_PARQUET_FILE, HISTORY_PARQUET_FILE)
# What the files were made from; a later build with the same stamp links them instead.
STAMP_FILE = "downloads/.moopt-results-stamp"
SIGNIFICANT_FIGURES = 6
SORT_ORDER = ("indicator_id", "org_level", "org_code", "period_type", "period")
# Practices outnumber every other level together (about 6,300 of 7,700 organisations
# nationally), so their rows stay in the store unless the run is a practice-level run.
PRACTICE_LEVEL = "practice"

# The same test moopt.atomic applies to CSV text: a cell a spreadsheet would run as a formula
# starts with = + - @ tab or carriage return and is not just a number ("-1.5", "+3", "-12%").
_FORMULA_START = r"^[=+\-@\t\r]"
_PLAIN_NUMBER = r"[+-]?([0-9]{1,3}(,[0-9]{3})+|[0-9]+)?(\.[0-9]+)?([eE][+-]?[0-9]+)?%?"

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


def _columns(for_csv: bool) -> str:
    parts = []
    for column in TABLES[RESULTS_TABLE].columns:
        if column.type == "DOUBLE":
            expression = rounded(column.name)
        elif column.type == "VARCHAR" and for_csv:
            expression = _safe_text(column.name)
        else:
            expression = f'"{column.name}"'
        parts.append(f'{expression} AS "{column.name}"')
    return ", ".join(parts)


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _sql_text(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


@dataclass(frozen=True)
class Selection:
    """Which rows of ``indicator_results`` the downloads hold.

    ``levels`` are the levels written (every level in the store except practice,
    unless the run's level is practice); ``main_period_types`` maps each indicator
    to the period type its pages compare on, and ``period_end`` is the run's last
    month: the latest file holds, for each indicator, the latest period of that
    type up to it, as the pages show.
    """

    levels: tuple[str, ...]
    main_period_types: tuple[tuple[str, str], ...]
    period_end: str | None

    def _level_filter(self) -> str:
        if not self.levels:
            return "FALSE"
        return f"r.org_level IN ({', '.join(_sql_text(level) for level in self.levels)})"

    def history_sql(self, columns: str) -> str:
        """Every period of every period type, at the selected levels."""
        return (f"SELECT {columns} FROM {RESULTS_TABLE} AS r WHERE {self._level_filter()} "
                f"ORDER BY {', '.join('r.' + c for c in SORT_ORDER)}")

    def latest_sql(self, columns: str) -> str:
        """Each indicator's latest period of its main period type, at the selected levels."""
        if not self.main_period_types:
            return f"SELECT {columns} FROM {RESULTS_TABLE} AS r WHERE FALSE"
        mains = ", ".join(f"({_sql_text(i)}, {_sql_text(t)})" for i, t in self.main_period_types)
        up_to = f" AND r.period <= DATE {_sql_text(self.period_end)}" if self.period_end else ""
        return (f"WITH main(indicator_id, period_type) AS (VALUES {mains}), "
                f"latest AS (SELECT r.indicator_id, r.period_type, max(r.period) AS period "
                f"FROM {RESULTS_TABLE} AS r JOIN main USING (indicator_id, period_type) "
                f"WHERE TRUE{up_to} GROUP BY ALL) "
                f"SELECT {columns} FROM {RESULTS_TABLE} AS r "
                f"SEMI JOIN latest AS l ON r.indicator_id = l.indicator_id AND r.period_type = l.period_type "
                f"AND r.period = l.period WHERE {self._level_filter()} "
                f"ORDER BY {', '.join('r.' + c for c in SORT_ORDER)}")

    def stamp(self) -> str:
        return f"{','.join(self.levels)}|{self.main_period_types}|{self.period_end}"

    def narrowed(self, levels, indicator_ids=None) -> Selection:
        """The same latest periods at other ``levels`` (and only ``indicator_ids``, when given)."""
        mains = self.main_period_types if indicator_ids is None else tuple(
            m for m in self.main_period_types if m[0] in set(indicator_ids))
        return Selection(levels=tuple(levels), main_period_types=mains, period_end=self.period_end)


def stored_run_facts(con: duckdb.DuckDBPyConnection) -> dict:
    """The run facts the site's files need (level, last month, 12-month values, results key),
    as far as the store has them: an empty dict without a run_facts table."""
    if not table_exists(con, "run_facts"):
        return {}
    names = {r[0] for r in con.execute("DESCRIBE run_facts").fetchall()}
    wanted = [n for n in ("org_level", "period_end", "has_rolling", "results_key") if n in names]
    if not wanted:
        return {}
    row = con.execute(f"SELECT {', '.join(wanted)} FROM run_facts").fetchone()
    return dict(zip(wanted, row)) if row else {}


def main_period_type(indicator_id: str, available: set[str], has_rolling: bool,
                     definitions: dict) -> str:
    """The period type an indicator's pages compare on, among those it has rows for.

    Supplied indicators use their definition's period type, prescribing ones the
    12-month rolling value when the run has a year of data, else the month (as
    :class:`moopt.report.IndicatorData`). An indicator the definitions do not know
    (an older store) takes the prescribing choice when it has it, else its first
    period type alphabetically, so that no indicator is left out.
    """
    definition = definitions.get(indicator_id)
    prescribing = "rolling_12m" if has_rolling else "month"
    if definition is not None:
        wanted = definition.main_period_type if definition.is_supplied else prescribing
        if wanted in available:
            return wanted
    return prescribing if prescribing in available else sorted(available)[0]


def selection(con: duckdb.DuckDBPyConnection) -> Selection:
    """The downloads' rows for the store behind ``con`` (see :class:`Selection`)."""
    from moopt.indicators.definitions import load_indicators

    facts = stored_run_facts(con)
    stored = [r[0] for r in con.execute(f"SELECT DISTINCT org_level FROM {RESULTS_TABLE}").fetchall()]
    run_level = facts.get("org_level")
    levels = tuple(level for level in _level_order(stored)
                   if level != PRACTICE_LEVEL or run_level == PRACTICE_LEVEL)
    available: dict[str, set[str]] = {}
    for indicator_id, period_type in con.execute(
            f"SELECT DISTINCT indicator_id, period_type FROM {RESULTS_TABLE}").fetchall():
        available.setdefault(indicator_id, set()).add(period_type)
    definitions = {ind.id: ind for ind in load_indicators()}
    has_rolling = bool(facts.get("has_rolling", True))
    mains = tuple((i, main_period_type(i, available[i], has_rolling, definitions)) for i in sorted(available))
    end = facts.get("period_end")
    return Selection(levels=levels, main_period_types=mains,
                     period_end=str(end)[:10] if end is not None else None)


def _level_order(levels) -> list[str]:
    from moopt.orgs import ORG_LEVELS

    known = [level for level in ORG_LEVELS if level in levels]
    return known + sorted(level for level in levels if level not in ORG_LEVELS)


@dataclass(frozen=True)
class ResultsOverview:
    """What the store's results table and the downloads hold, for the downloads page."""

    rows: int
    indicator_ids: tuple[str, ...]
    levels: tuple[str, ...]
    download_levels: tuple[str, ...] = ()
    latest_rows: int = 0
    history_rows: int = 0


def results_overview(store_path: Path) -> ResultsOverview | None:
    """Rows, indicators and levels of ``indicator_results`` and of the downloads; None without results."""
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
        chosen = selection(con)
        latest = con.execute(f"SELECT count(*) FROM ({chosen.latest_sql('1')})").fetchone()[0]
        history = con.execute(f"SELECT count(*) FROM ({chosen.history_sql('1')})").fetchone()[0]
        return ResultsOverview(rows=rows, indicator_ids=tuple(ids), levels=tuple(levels),
                               download_levels=chosen.levels, latest_rows=latest, history_rows=history)
    finally:
        con.close()


@dataclass(frozen=True)
class BulkDownloads:
    """What :func:`write_bulk_downloads` wrote: rows and bytes of each file."""

    latest_rows: int
    history_rows: int
    bytes: dict
    reused: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


def _stamp(con: duckdb.DuckDBPyConnection, chosen: Selection) -> str:
    """What the files depend on: the results (their key in run_facts), the rows chosen, columns, rounding."""
    key = stored_run_facts(con).get("results_key") or ""
    if not key:
        return ""  # results of unknown origin: never reused
    columns = ",".join(f"{c.name}:{c.type}" for c in TABLES[RESULTS_TABLE].columns)
    return (f"{key}|{chosen.stamp()}|{','.join(DOWNLOAD_FILES)}|{columns}|{SIGNIFICANT_FIGURES}|"
            f"{_FORMULA_START}|{','.join(SORT_ORDER)}")


def _reuse_previous(previous_site: Path | None, folder: Path, stamp: str) -> bool:
    """Hard-link the files of the previous site when they were made from the same results.

    Each build writes new files rather than changing old ones, so a link is safe; where
    links are not possible (another file system) the files are copied.
    """
    if previous_site is None or not stamp:
        return False
    previous_stamp = Path(previous_site) / STAMP_FILE
    if not previous_stamp.is_file() or previous_stamp.read_text(encoding="utf-8") != stamp:
        return False
    if not all((Path(previous_site) / name).is_file() for name in DOWNLOAD_FILES):
        return False
    for name in (*DOWNLOAD_FILES, STAMP_FILE):
        link_file(Path(previous_site) / name, folder / name)
    return True


def write_bulk_downloads(store_path: Path, folder: Path, previous_site: Path | None = None
                         ) -> BulkDownloads | None:
    """Write the results downloads (:data:`DOWNLOAD_FILES`) under ``folder``.

    :data:`LATEST_CSV_FILE` and :data:`LATEST_PARQUET_FILE` hold what the pages
    show: every organisation and indicator at every level but practice (practice
    too in a practice-level run), in each indicator's latest period of its main
    period type. :data:`HISTORY_PARQUET_FILE` holds every period of every period
    type for the same levels. The whole table, practices included, stays in the
    store, so a national site keeps within its size budget.

    Parameters
    ----------
    store_path : Path
        The run's store (``outputs/store/moopt.duckdb``), opened read-only.
    folder : Path
        The site root being built.
    previous_site : Path, optional
        The site being replaced: its files are reused when its stamp
        (:data:`STAMP_FILE`: the results key, rows chosen, columns and rounding) matches.

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
        chosen = selection(con)
        latest_rows = con.execute(f"SELECT count(*) FROM ({chosen.latest_sql('1')})").fetchone()[0]
        history_rows = con.execute(f"SELECT count(*) FROM ({chosen.history_sql('1')})").fetchone()[0]
        stamp = _stamp(con, chosen)
        reused = _reuse_previous(previous_site, folder, stamp)
        if not reused:
            with replacing(folder / LATEST_CSV_FILE) as temporary:
                con.execute(f"COPY ({chosen.latest_sql(_columns(for_csv=True))}) TO '{_sql_path(temporary)}' "
                            "(FORMAT csv, HEADER true, DELIMITER ',', DATEFORMAT '%Y-%m-%d')")
            with replacing(folder / LATEST_PARQUET_FILE) as temporary:
                con.execute(f"COPY ({chosen.latest_sql(_columns(for_csv=False))}) TO '{_sql_path(temporary)}' "
                            "(FORMAT parquet, COMPRESSION zstd)")
            with replacing(folder / HISTORY_PARQUET_FILE) as temporary:
                con.execute(f"COPY ({chosen.history_sql(_columns(for_csv=False))}) TO "
                            f"'{_sql_path(temporary)}' (FORMAT parquet, COMPRESSION zstd)")
            write_text_atomic(folder / STAMP_FILE, stamp)
    finally:
        con.close()
    return BulkDownloads(latest_rows=latest_rows, history_rows=history_rows,
                         bytes={name: (folder / name).stat().st_size for name in DOWNLOAD_FILES},
                         reused=reused)
