"""The store's input tables as Parquet files, the prescribing table partitioned by month.

A cluster engine (Spark, or DuckDB on another machine) reads these files directly; the
DuckDB store stays the place ingest writes to and the rest of the build reads from.

Layout under the export folder::

    prescribing/month=2025-01/part-0.parquet    one file per month (Hive-style partition)
    prescribing/month=2025-02/part-0.parquet
    list_size/part-0.parquet                    every other table: one file
    organisations/part-0.parquet
    ...
    _moopt_parquet.json                         what was written: rows per table and month

The ``month`` column of prescribing lives in the directory name (``YYYY-MM``), not in the
files, so that readers that derive partition columns from paths (Spark, DuckDB with
``hive_partitioning``) do not see it twice; :func:`read_prescribing_duckdb` and
:mod:`moopt.spark_engine` turn it back into the first day of the month.

Every file is written under a hidden temporary name in its own folder and moved into place
with :func:`os.replace`, so a reader sees a month's old file or its new one, never part of
either; Spark and DuckDB's ``*.parquet`` globs both skip the hidden temporary files. That is
what makes :func:`replace_month` atomic.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable

import duckdb

from moopt.atomic import replacing, write_text_atomic

PRESCRIBING = "prescribing"
# The tables the indicator engine reads (see moopt.indicators.engine).
ENGINE_TABLES = ("prescribing", "list_size", "organisations", "practices_without_list_size", "supplied")
# Every input table worth a cluster's reading; ingest_log and rejects describe files, not data.
EXPORT_TABLES = ("organisations", "practice_attributes", "prescribing", "list_size", "cost_centres",
                 "practice_addresses", "bnf_chemicals", "supplied", "practices_without_list_size")
MANIFEST = "_moopt_parquet.json"
PART_FILE = "part-0.parquet"
MONTH_DIR = re.compile(r"^month=(\d{4}-\d{2})$")


@dataclass
class ParquetExport:
    """What an export wrote: the folder, rows per table, and rows per prescribing month."""

    folder: Path
    tables: dict[str, int] = field(default_factory=dict)
    months: dict[str, int] = field(default_factory=dict)

    def manifest(self) -> dict:
        return {"tables": self.tables, "prescribing_months": self.months}


def month_label(month: date | str) -> str:
    """``YYYY-MM`` for a date, a ``YYYY-MM`` text or a ``YYYY-MM-DD`` text; refuses anything else."""
    text = month.isoformat() if isinstance(month, date) else str(month)
    if not re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", text):
        raise ValueError(f"{month!r} is not a month (expected YYYY-MM).")
    return text[:7]


def month_folder(folder: str | Path, month: date | str) -> Path:
    """The partition folder of one prescribing month."""
    return Path(folder) / PRESCRIBING / f"month={month_label(month)}"


def _table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [table]).fetchall()[0][0])


def _copy_to_parquet(con: duckdb.DuckDBPyConnection, select_sql: str, target: Path) -> int:
    """Write the rows of ``select_sql`` to ``target`` atomically; return how many."""
    with replacing(target) as temporary:
        con.execute(f"COPY ({select_sql}) TO '{temporary}' (FORMAT parquet, COMPRESSION zstd)")
        rows = con.execute(f"SELECT count(*) FROM read_parquet('{temporary}')").fetchall()[0][0]
    return int(rows)


def _month_select(month: str) -> str:
    # COPY takes no prepared parameters; month is a validated YYYY-MM label (month_label).
    return f"SELECT * EXCLUDE (month) FROM {PRESCRIBING} WHERE month = DATE '{month}-01'"


def export_parquet(con: duckdb.DuckDBPyConnection, folder: str | Path,
                   tables: tuple[str, ...] = EXPORT_TABLES) -> ParquetExport:
    """Write the store's ``tables`` under ``folder``, prescribing partitioned by month.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        A connection to the store (read-only is enough).
    folder : str or Path
        The export folder; created if absent. Months no longer in the store are removed.
    tables : tuple of str
        Which tables to write (default :data:`EXPORT_TABLES`). A table the store lacks is
        an error, named.

    Returns
    -------
    ParquetExport
        Rows written per table and per prescribing month (also in ``_moopt_parquet.json``).
    """
    folder = Path(folder)
    missing = [t for t in tables if not _table_exists(con, t)]
    if missing:
        raise ValueError(f"The store has no table(s) {', '.join(missing)} to export to {folder}.")
    export = ParquetExport(folder)
    for table in tables:
        if table == PRESCRIBING:
            months = [row[0] for row in con.execute(
                f"SELECT DISTINCT strftime(month, '%Y-%m') FROM {PRESCRIBING} WHERE month IS NOT NULL "
                "ORDER BY 1").fetchall()]
            nulls = con.execute(f"SELECT count(*) FROM {PRESCRIBING} WHERE month IS NULL").fetchall()[0][0]
            if nulls:
                raise ValueError(f"{nulls} prescribing rows have no month; they cannot be partitioned by month.")
            for month in months:
                export.months[month] = _copy_to_parquet(con, _month_select(month),
                                                        month_folder(folder, month) / PART_FILE)
            _remove_other_months(folder, set(months))
            export.tables[table] = sum(export.months.values())
        else:
            export.tables[table] = _copy_to_parquet(con, f"SELECT * FROM {table}", folder / table / PART_FILE)
    _write_manifest(folder, export)
    return export


def replace_month(con: duckdb.DuckDBPyConnection, folder: str | Path, month: date | str) -> int:
    """Rewrite one prescribing month from the store, atomically; return its rows.

    A reader of the folder sees the month's previous file until the new one is complete. A
    month the store no longer holds is an error (remove it with :func:`remove_month`).
    """
    label = month_label(month)
    folder = Path(folder)
    rows = con.execute(f"SELECT count(*) FROM {PRESCRIBING} WHERE month = DATE '{label}-01'").fetchall()[0][0]
    if not rows:
        raise ValueError(f"The store holds no prescribing for {label}; nothing to write to {folder}.")
    written = _copy_to_parquet(con, _month_select(label), month_folder(folder, label) / PART_FILE)
    export = read_manifest(folder)
    export.months[label] = written
    export.months = dict(sorted(export.months.items()))
    export.tables[PRESCRIBING] = sum(export.months.values())
    _write_manifest(folder, export)
    return written


def remove_month(folder: str | Path, month: date | str) -> None:
    """Remove one prescribing month's partition (its file first, so no reader sees half of it)."""
    label = month_label(month)
    target = month_folder(folder, label)
    for path in target.glob("*"):
        path.unlink()
    if target.exists():
        target.rmdir()
    export = read_manifest(Path(folder))
    export.months.pop(label, None)
    export.tables[PRESCRIBING] = sum(export.months.values())
    _write_manifest(Path(folder), export)


def _remove_other_months(folder: Path, keep: set[str]) -> None:
    root = folder / PRESCRIBING
    if not root.is_dir():
        return
    for child in root.iterdir():
        found = MONTH_DIR.match(child.name)
        if found and found.group(1) not in keep:
            for item in child.glob("*"):
                item.unlink()
            child.rmdir()


def _write_manifest(folder: Path, export: ParquetExport) -> None:
    write_text_atomic(folder / MANIFEST, json.dumps(export.manifest(), indent=2, sort_keys=True) + "\n")


def read_manifest(folder: str | Path) -> ParquetExport:
    """What the last export (and later month replacements) wrote to ``folder``."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {folder} is not a moopt Parquet export "
                                "(write one with `moopt export-parquet`).")
    data = json.loads(path.read_text())
    return ParquetExport(Path(folder), dict(data["tables"]), dict(data["prescribing_months"]))


def parquet_glob(folder: str | Path, table: str) -> str:
    """The file pattern a reader passes to read ``table`` (every month, for prescribing)."""
    if table == PRESCRIBING:
        return str(Path(folder) / PRESCRIBING / "month=*" / "*.parquet")
    return str(Path(folder) / table / "*.parquet")


def prescribing_parquet_sql(folder: str | Path) -> str:
    """A DuckDB query of the exported prescribing table, with ``month`` as a DATE again."""
    pattern = parquet_glob(folder, PRESCRIBING)
    return (f"SELECT * EXCLUDE (month), CAST(month || '-01' AS DATE) AS month FROM read_parquet('{pattern}', "
            "hive_partitioning = true, hive_types = {'month': VARCHAR})")


def read_prescribing_duckdb(con: duckdb.DuckDBPyConnection, folder: str | Path) -> duckdb.DuckDBPyRelation:
    """The exported prescribing table, read back by DuckDB (see :func:`prescribing_parquet_sql`)."""
    return con.sql(prescribing_parquet_sql(folder))


def run_export_command(store_path: Path, out: str | Path | None, months: list[str] | None,
                       say: Callable[[str], None]) -> int:
    """``moopt export-parquet``: the whole export, or only the ``months`` named, replaced one by one."""
    if not Path(store_path).exists():
        raise FileNotFoundError(f"No store at {store_path}: run `moopt ingest` or `moopt build` first.")
    folder = Path(out) if out else Path(store_path).parent / "parquet"
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        if months:
            for month in months:
                rows = replace_month(con, folder, month)
                say(f"prescribing {month_label(month)}: {rows:,} rows written to {month_folder(folder, month)}")
            return 0
        export = export_parquet(con, folder)
    finally:
        con.close()
    say(f"store exported to {folder}: " + ", ".join(f"{t} {n:,} rows" for t, n in export.tables.items())
        + f"; prescribing in {len(export.months)} monthly partitions")
    return 0
