"""The columnar store: validated ingest of published files into DuckDB.

One DuckDB file (``outputs/store/moopt.duckdb``) holds the canonical tables
the indicator engine reads:

``organisations``       practice -> PCN -> sub-ICB -> ICB -> region, one row per practice
``practice_attributes`` optional attributes used to choose peer groups
``prescribing``         one row per month x practice x BNF presentation x quantity per item
``list_size``           registered patients per month x practice x sex x age band (age_lower to
                        age_upper; quinary, single-year or NHSBSA bands; sex 'all' with no band
                        for files of totals only)
``cost_centres``        prescribing cost centres that are not GP practices (from ODS epraccur)
``practice_addresses``, ``bnf_chemicals``  reference data from the legacy NHS Digital files
``ingest_log``          one row per ingested file: rows read, accepted and rejected
``rejects``             every rejected row with its file, line and reason
``practices_without_list_size``  practice-months with prescribing but no usable list size, and why

Every file is validated on the way in. Rows that fail are quarantined to
``rejects`` (and a CSV beside the store) with a reason, never dropped
silently: for every file rows read = rows accepted + rows rejected. A file
replaces the months it holds, so re-running a month replaces it (idempotent);
a row of another month than the rest of its file is quarantined rather than
allowed to replace that month. :func:`ingest_files` is one transaction over
the whole file list: a refused file, or any error, leaves every table as it
was (atomic), and the rejects CSVs beside the store are rewritten only when
the transaction commits, so they always agree with the ``rejects`` table.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import logging
import re
import shutil
import time
import uuid
import zipfile
import zlib
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from moopt.atomic import write_atomic, write_csv_atomic, write_text_atomic
from moopt.config import MEMORY_SIZE
from moopt.tables import table_exists
from moopt.sources.layouts import (NHSBSA_BANDS, REFERENCE_TABLES, Layout, csv_members, detect_layout,
                                   read_header)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS organisations (
    practice_code VARCHAR PRIMARY KEY, practice_name VARCHAR,
    pcn_code VARCHAR, pcn_name VARCHAR, sub_icb_code VARCHAR, sub_icb_name VARCHAR,
    icb_code VARCHAR, icb_name VARCHAR, region_code VARCHAR, region_name VARCHAR,
    status VARCHAR, close_date DATE);
CREATE TABLE IF NOT EXISTS practice_attributes (
    practice_code VARCHAR PRIMARY KEY, deprivation_score DOUBLE, rural VARCHAR, care_home_beds BIGINT);
CREATE TABLE IF NOT EXISTS prescribing (
    month DATE, practice_code VARCHAR, bnf_code VARCHAR, quantity DOUBLE, items BIGINT,
    total_quantity DOUBLE, adq_usage DOUBLE, nic DOUBLE, actual_cost DOUBLE, source_file VARCHAR);
CREATE TABLE IF NOT EXISTS list_size (
    month DATE, practice_code VARCHAR, sex VARCHAR, age_lower INTEGER, age_upper INTEGER, patients BIGINT,
    source_file VARCHAR);
CREATE TABLE IF NOT EXISTS ingest_log (
    file VARCHAR, layout VARCHAR, table_name VARCHAR, rows_read BIGINT, rows_accepted BIGINT,
    rows_rejected BIGINT, months VARCHAR, file_size BIGINT, file_mtime DOUBLE,
    ingested_at TIMESTAMP, run_window VARCHAR);
CREATE TABLE IF NOT EXISTS cost_centres (
    code VARCHAR PRIMARY KEY, name VARCHAR, setting VARCHAR, commissioner VARCHAR);
CREATE TABLE IF NOT EXISTS practice_addresses (
    month DATE, practice_code VARCHAR, practice_name VARCHAR, address_1 VARCHAR, address_2 VARCHAR,
    address_3 VARCHAR, county VARCHAR, postcode VARCHAR, source_file VARCHAR);
CREATE TABLE IF NOT EXISTS bnf_chemicals (chemical_code VARCHAR, chemical_name VARCHAR, source_file VARCHAR);
CREATE TABLE IF NOT EXISTS rejects (file VARCHAR, line BIGINT, reason VARCHAR, detail VARCHAR);
CREATE TABLE IF NOT EXISTS practices_without_list_size (month DATE, practice_code VARCHAR, reason VARCHAR);
CREATE TABLE IF NOT EXISTS supplied (
    indicator_id VARCHAR, org_level VARCHAR, org_code VARCHAR, period DATE, period_type VARCHAR,
    breakdown VARCHAR, numerator DOUBLE, denominator DOUBLE, source_file VARCHAR);
"""

# Readers parse text through these: a number must be finite and below 1e15 (so whole numbers
# fit BIGINT exactly; NaN, inf and 1e30 are not counts or costs), a date must be a plausible
# date for NHS data (Python and the reports cannot hold year 0 or 99999). Otherwise NULL,
# which the reader's checks reject with a reason.
MACROS = """
CREATE OR REPLACE TEMP MACRO moopt_number(x) AS
    CASE WHEN isfinite(TRY_CAST(x AS DOUBLE)) AND abs(TRY_CAST(x AS DOUBLE)) < 1e15 THEN TRY_CAST(x AS DOUBLE) END;
CREATE OR REPLACE TEMP MACRO moopt_month(d) AS
    CASE WHEN TRY_CAST(d AS DATE) BETWEEN DATE '1990-01-01' AND DATE '2100-12-31' THEN TRY_CAST(d AS DATE) END;
"""

BNF_CODE_PATTERN = "[0-9A-Z]{15}|[0-9]{11}"  # presentations are 15 characters; appliances 11 digits
AGE_BANDS = ["0_4", "5_9", "10_14", "15_19", "20_24", "25_29", "30_34", "35_39", "40_44", "45_49",
             "50_54", "55_59", "60_64", "65_69", "70_74", "75_79", "80_84", "85_89", "90_94", "95+"]


LIST_SIZE_COLUMNS = ["month", "practice_code", "sex", "age_lower", "age_upper", "patients", "source_file"]
# A list-size file replaces the rows of its months and sexes and any totals-only rows of those
# months; a totals-only file (sex 'all') replaces its months entirely. Never both kinds at once.
LIST_SIZE_REPLACES = ("(month, sex) IN (SELECT DISTINCT month, sex FROM {final}) "
                      "OR (sex = 'all' AND month IN (SELECT DISTINCT month FROM {final})) "
                      "OR month IN (SELECT DISTINCT month FROM {final} WHERE sex = 'all')")
SUPPLIED_REPLACES = "(indicator_id, period) IN (SELECT DISTINCT indicator_id, period FROM {final})"
ADDRESS_COLUMNS = ["month", "practice_code", "practice_name", "address_1", "address_2", "address_3", "county",
                   "postcode", "source_file"]
# status and close_date come from ODS (A active, C closed, D dormant, P proposed); a practice map
# lists open practices only, so there they are empty.
ORGANISATION_COLUMNS = ["practice_code", "practice_name", "pcn_code", "pcn_name", "sub_icb_code",
                        "sub_icb_name", "icb_code", "icb_name", "region_code", "region_name", "status",
                        "close_date"]


# The tables filled from input files (``reference_*`` tables too); :meth:`Store.clear_data` empties them.
INPUT_TABLES = ("organisations", "practice_attributes", "prescribing", "list_size", "ingest_log", "cost_centres",
                "practice_addresses", "bnf_chemicals", "rejects", "supplied", "practices_without_list_size")


def _code_check(column: str, what: str, longest: int = 12) -> str:
    """A CASE branch rejecting a blank or malformed organisation code (codes become file names)."""
    return (f"WHEN NOT regexp_full_match(coalesce({column}, ''), '[A-Z0-9]{{1,{longest}}}') "
            f"THEN '{what} is blank or malformed'")


# Bumped whenever a table changes shape, so a store written by an older moopt is rebuilt.
SCHEMA_VERSION = 2

# A month holding under 1/STRAY_MONTH_RATIO of the rows of its file's main month is a stray:
# published prescribing and list-size files hold one month each, and a file replaces the months
# it holds, so one stray row must not replace (wipe) another file's month.
STRAY_MONTH_RATIO = 100
# A practice with prescribing but fewer registered patients than this in a month has a list size
# that cannot be its population (an English GP practice has hundreds at least): its rates per
# patient are left empty and it is left out of both sums above practice level.
MIN_PLAUSIBLE_LIST_SIZE = 100
ZERO_LIST_SIZE = "list size is 0 registered patients"
ZERO_LIST_SIZE_REASON = f"{ZERO_LIST_SIZE}: quarantined, so rates per patient for this practice stay empty"
# Reasons that quarantine rows without counting towards data.max_reject_share: not faults in the
# file, but rows that must not be used (outside the run, or a practice with no patients).
NOT_FAULTS = ("is outside the run", ZERO_LIST_SIZE)


@dataclass(frozen=True)
class Source:
    """A file to ingest: the path the user gave, the file read (a zip member is extracted),
    its layout, the layout's columns by position and the number of header fields."""

    path: Path
    read_path: Path
    layout: Layout
    columns: dict[str, int]
    n_columns: int

    def col(self, canonical: str) -> str:
        """SQL for a column's trimmed text, by position (see Store._read_csv)."""
        return f"trim(c{self.columns[canonical]})"


OUTSIDE_RUN = NOT_FAULTS[0]


def _reject_hint(reasons: dict) -> str:
    """What to try, given the commonest reason rows were rejected."""
    top = str(next(iter(reasons), ""))
    if "not in the organisation map" in top or "not a GP practice" in top:
        return ("Most rows name practices the organisation file does not hold: check that it covers the same "
                "area and time as this file (a national epraccur or practice map), or raise "
                "data.max_reject_share to load the rest.")
    if top.startswith("malformed"):
        return "Most rows are not well-formed CSV lines: check the file is complete and of the layout named."
    return "Fix the file, or raise data.max_reject_share to load the rows that are valid."


@dataclass(frozen=True)
class RunWindow:
    """The months a run may use: data outside them is rejected as outside the run."""

    first: str  # YYYY-MM
    last: str

    def text(self) -> str:
        return f"{self.first} to {self.last}"

    def check(self, month_sql: str, column: str) -> str:
        """A CASE branch rejecting months outside the window."""
        return (f"WHEN {month_sql} < DATE '{self.first}-01' OR {month_sql} > DATE '{self.last}-01' "
                f"THEN '{column} {OUTSIDE_RUN} ({self.text()})'")


class IngestError(ValueError):
    """A file cannot be ingested: unknown layout, unreadable, or too many rejected rows."""


@dataclass
class IngestReport:
    """What happened to one file: rows read = rows accepted + rows rejected."""

    file: str
    layout: str
    table: str
    rows_read: int
    rows_accepted: int
    rows_rejected: int
    months: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    skipped: bool = False
    note: str = ""
    rows_set_aside: int = 0  # accepted rows not stored (summary rows, other cost centres ...)

    def line(self) -> str:
        name = f"{Path(self.file).parent.name}/{Path(self.file).name}"  # published names repeat by month
        if self.skipped:
            return (f"{name}: unchanged since last ingest, kept ({self.rows_read:,} rows read, "
                    f"{self.rows_rejected:,} rejected then)")
        text = (f"{name}: {self.rows_read:,} rows read, "
                f"{self.rows_accepted:,} accepted, {self.rows_rejected:,} rejected")
        if self.reasons:
            text += " (" + "; ".join(f"{n:,} {r}" for r, n in self.reasons.items()) + ")"
        if self.note:
            text += f"; {self.note}"
        return text


def _quote(path: str | Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


class Store:
    """The DuckDB store at ``path`` (created if absent)."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(
                    f"No data store at {self.path}. Run `moopt build` (or `moopt ingest`) first."
                )
            self.con = duckdb.connect(str(self.path), read_only=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.con = duckdb.connect(str(self.path))
            self.con.execute(SCHEMA)
            self.con.execute(MACROS)
            # Stores written before these columns existed gain them (empty until re-ingested;
            # `moopt build` starts a new store when SCHEMA_VERSION changes).
            self.con.execute("ALTER TABLE list_size ADD COLUMN IF NOT EXISTS age_upper INTEGER")
            self.con.execute("ALTER TABLE ingest_log ADD COLUMN IF NOT EXISTS run_window VARCHAR")
            self.con.execute("ALTER TABLE organisations ADD COLUMN IF NOT EXISTS status VARCHAR")
            self.con.execute("ALTER TABLE organisations ADD COLUMN IF NOT EXISTS close_date DATE")
        self.rejects_dir = self.path.parent / "rejects"
        self._in_transaction = False
        self._on_commit: list = []  # actions once the transaction commits
        self._on_end: list = []  # actions once it ends either way

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def transaction(self):
        """Run the block as one transaction: on any error every table is left as it was.

        A use inside another joins the outer transaction. Files beside the store that mirror
        its tables (the rejects CSVs) are written only after the commit (see
        :meth:`_after_commit`), so they never describe rows the store does not hold.
        """
        if self._in_transaction:
            yield
            return
        self.con.execute("BEGIN TRANSACTION")
        self._in_transaction, self._on_commit, self._on_end = True, [], []
        committed = False
        try:
            yield
            self.con.execute("COMMIT")
            committed = True
        except BaseException:
            with suppress(duckdb.Error):  # DuckDB has already rolled back after some errors
                self.con.execute("ROLLBACK")
            raise
        finally:
            self._in_transaction = False
            for action in self._on_end:
                action()
            actions, self._on_commit, self._on_end = self._on_commit if committed else [], [], []
            for action in actions:
                action()
            if committed:
                self._remove_stale_rejects_csvs()

    def _after_commit(self, action) -> None:
        """Run ``action`` once the current transaction commits (never, if it rolls back)."""
        self._on_commit.append(action)

    def _remove_stale_rejects_csvs(self) -> None:
        """Delete rejects CSVs for files the ``rejects`` table no longer holds rows of."""
        if not self.rejects_dir.is_dir():
            return
        held = {self._rejects_csv(Path(file)).name
                for (file,) in self.con.execute("SELECT DISTINCT file FROM rejects").fetchall()}
        for written in self.rejects_dir.glob("*.rejects.csv"):
            if written.name not in held:
                written.unlink(missing_ok=True)

    def clear_data(self) -> None:
        """Empty every table filled from input files (for a run over another set of files).

        Inside :meth:`transaction`, so a run that fails afterwards leaves the old data in place.
        """
        tables = {name for (name,) in self.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()}
        for table in [*INPUT_TABLES, *sorted(t for t in tables if t.startswith("reference_"))]:
            if table in tables:
                self.con.execute(f"DELETE FROM {table}")

    @contextmanager
    def memory_limit(self, limit: str | None):
        """Hold DuckDB to ``limit`` (e.g. "2GB"), spilling to ``<store>/spill``; None: no change."""
        if not limit:
            yield
            return
        if not MEMORY_SIZE.fullmatch(limit.strip()):
            raise ValueError(f"memory limit {limit!r} is not a size such as 2GB or 500MB.")
        before = self.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        spill = self.path.parent / "spill"
        spill.mkdir(parents=True, exist_ok=True)
        # DuckDB refuses to move its temporary folder once it has spilled there, so a second
        # limited stage on the same connection (ingest, then indicators) keeps the one it has.
        current = self.con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
        if Path(current or ".").resolve() != spill.resolve():
            self.con.execute(f"SET temp_directory = {_quote(spill)}")
        self.con.execute(f"SET memory_limit = '{limit.strip()}'")
        # Results are ordered where order matters (ORDER BY); keeping every intermediate table in
        # insertion order makes DuckDB hold more in memory than the limit allows (the engine's
        # 12-month windows ran out of memory at national scale).
        order_before = self.con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
        self.con.execute("SET preserve_insertion_order = false")
        try:
            yield
        finally:
            restore = (f"SET memory_limit = '{before}'; "
                       f"SET preserve_insertion_order = {'true' if order_before else 'false'}")
            try:
                self.con.execute(restore)
            except duckdb.Error:
                if not self._in_transaction:
                    raise
                # a transaction an error aborted takes no statements until it is rolled back
                self._on_end.append(lambda: self.con.execute(restore))

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- helpers ---------------------------------------------------------------------------

    def _unchanged(self, path: Path, window: str = "") -> IngestReport | None:
        """The report of the last ingest of ``path`` if the file (and run window) are unchanged."""
        stat = path.stat()
        rows = self.con.execute(
            "SELECT layout, table_name, rows_read, rows_accepted, rows_rejected, months FROM ingest_log "
            "WHERE file = ? AND file_size = ? AND file_mtime = ? AND coalesce(run_window, '') = ?",
            [str(path), stat.st_size, stat.st_mtime, window],
        ).fetchall()
        if not rows:
            return None
        layout, table, read, accepted, rejected, months = rows[0]
        return IngestReport(str(path), layout, table, read, accepted, rejected,
                            [m for m in (months or "").split(",") if m], skipped=True)

    def _source(self, path: Path, kind: str) -> Source:
        """The file to read for ``path``: itself, or the one member of a zip archive of ``kind``."""
        path = Path(path)
        if not path.exists():
            raise IngestError(f"{path}: file not found.")
        if path.suffix.lower() != ".zip":
            layout, cols = detect_layout(path, kind)
            header = read_header(path)
            _refuse_if_cut(path, path, header)
            _refuse_if_not_utf8(path, path)
            return Source(path, path, layout, cols, len(header))
        members = _zip_members(path)
        fits = []
        for member in members:
            try:
                fits.append((member, *detect_layout(path, kind, member)))
            except ValueError:
                continue
        if len(fits) != 1:
            found = "none" if not fits else ", ".join(m for m, *_ in fits)
            raise IngestError(
                f"{path}: a zip archive must hold exactly one {kind.replace('_', ' ')} file; found {found} "
                f"among its CSV members ({', '.join(members) or 'no CSV members'}).")
        member, layout, cols = fits[0]
        target = self._extract(path, member)
        header = read_header(target)
        _refuse_if_cut(path, target, header)
        _refuse_if_not_utf8(path, target)
        return Source(path, target, layout, cols, len(header))

    def _plain_file(self, path: Path) -> Path:
        """``path``, or for a zip archive its one CSV member extracted beside the store."""
        if not path.exists():
            raise IngestError(f"{path}: file not found.")
        if path.suffix.lower() != ".zip":
            return path
        members = _zip_members(path)
        if len(members) != 1:
            raise IngestError(f"{path}: expected one CSV file in the zip archive, found "
                              f"{', '.join(members) or 'none'}.")
        return self._extract(path, members[0])

    def _extract(self, path: Path, member: str) -> Path:
        """Stream a zip member to a file beside the store, once per version of the archive.

        DuckDB cannot read inside a zip; streaming needs no more memory than a buffer.
        """
        stat = path.stat()
        target = self.path.parent / "unzipped" / f"{path.parent.name}__{path.stem}__{Path(member).name}"
        stamp = target.with_name(target.name + ".source")
        signature = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime}"
        if not (target.exists() and stamp.exists() and stamp.read_text() == signature):
            try:
                with zipfile.ZipFile(path) as archive, archive.open(member) as src:
                    write_atomic(target, lambda out: shutil.copyfileobj(src, out, 1 << 20), binary=True)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise IngestError(f"{path}: member {member} of the zip archive cannot be read ({exc}).") from exc
            write_text_atomic(stamp, signature)
        return target

    def _read_csv(self, path: Path, tag: str, n_columns: int | None = None, null_padding: bool = False) -> str:
        """DuckDB read_csv of ``path``, every value as text, malformed lines kept aside.

        With ``n_columns`` the columns are named c0, c1, ... by position (layouts address
        columns by position; the legacy files pad names and end with a blank one) and the
        dialect is fixed rather than sniffed (comma, double quotes), so that one stray quote
        or short line cannot change how the whole file is read.
        """
        if n_columns:
            columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(n_columns))
            options = (f"header=true, columns={{{columns}}}, auto_detect=false, delim=',', quote='\"', "
                       f"escape='\"'{', null_padding=true' if null_padding else ''}")
        else:
            options = "all_varchar=true, header=true"
        return (f"read_csv({_quote(path)}, {options}, store_rejects=true, "
                f"rejects_table='{tag}_rej', rejects_scan='{tag}_scan')")

    def _split_lines(self, path: Path, header: bool = True) -> str:
        """CTEs ``raw`` (data_row, line) and ``split`` (data_row, f: the fields) reading ``path``
        as whole lines, for the legacy files whose free text may hold commas.

        Rows are numbered before blank lines are dropped, so a row's number still gives its
        line; blank lines are not rows. One trailing comma (the legacy padding) is dropped.
        """
        lines = (f"read_csv({_quote(path)}, columns={{'line': 'VARCHAR'}}, header={str(header).lower()}, "
                 "delim='\x01', quote='', escape='', auto_detect=false)")
        return f"""raw AS (SELECT row_number() OVER () AS data_row, line FROM {lines}),
            split AS (SELECT data_row, string_split(regexp_replace(line, ',\\s*$', ''), ',') AS f
                      FROM raw WHERE nullif(trim(line), '') IS NOT NULL)"""

    def _finish(self, path: Path | Source, layout: str, table: str, staged: str, tag: str,
                columns: list[str], replace_where: str, max_reject_share: float,
                detail_sql: str, month_column: str | None = None, final_sql: str | None = None,
                window: str = "", set_aside: int = 0, note: str = "", header_lines: int = 1,
                month_label: str | None = None) -> IngestReport:
        """Move accepted rows of ``staged`` into ``table``; quarantine the rest.

        ``final_sql`` selects the rows to store from the accepted rows (``{staged}``) when a file
        row is not one stored row (wide files, quarters spread over months); by default the
        accepted rows are stored as they are. ``replace_where`` is the predicate on ``table``
        for the rows this file replaces (``{final}`` names the rows to store), so re-ingesting
        replaces rather than doubles. ``month_column`` names the column reported as months.
        ``path`` may be the :class:`Source` read, which lets reject line numbers be checked.
        ``set_aside`` rows (see :meth:`_keep_only`) count as read and accepted but are not
        stored; ``note`` says what they were. ``header_lines`` is 0 for files with no header.
        ``month_label`` (the file's month column, e.g. YEAR_MONTH) marks a file that should hold
        one month: rows of a stray month are quarantined (:meth:`_quarantine_stray_months`).
        """
        src = None
        if isinstance(path, Source):
            src, path = path, path.path
        con = self.con
        if month_label:
            self._quarantine_stray_months(staged, month_label)
        struct = self._malformed_lines(path, tag)
        struct_lines = np.array(sorted(r[0] for r in struct), dtype=np.int64)
        bad = con.execute(
            f"SELECT data_row, reject_reason, {detail_sql} FROM {staged} WHERE reject_reason IS NOT NULL"
        ).fetchdf()
        n_parsed, n_good = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE reject_reason IS NULL) FROM {staged}"
        ).fetchall()[0]
        bad_lines = _data_rows_to_lines(bad["data_row"].to_numpy(np.int64), struct_lines, header_lines)
        if len(bad) and not len(struct) and src is not None and src.layout.reader != "lines":
            # The CSV reader skips blank lines and a quoted field may span lines: then row k is
            # not line k + 1. Checked by counting newlines; only then are the records walked.
            starts = _record_start_lines(src.read_path, n_parsed + set_aside + header_lines)
            if starts is not None:
                bad_lines = starts[bad["data_row"].to_numpy(np.int64) - 1 + header_lines]
        rejects = pd.concat(
            [
                pd.DataFrame({"file": str(path), "line": bad_lines.astype(np.int64),
                              "reason": bad["reject_reason"].astype(str),
                              "detail": bad.iloc[:, 2].astype(str)}),
                pd.DataFrame({"file": str(path), "line": np.array([r[0] for r in struct], dtype=np.int64),
                              "reason": [r[1] for r in struct], "detail": [r[2] for r in struct]}),
            ],
            ignore_index=True,
        )
        rows_read = n_parsed + len(struct) + set_aside
        n_good += set_aside
        rows_rejected = len(rejects)
        reasons = rejects["reason"].value_counts().to_dict() if rows_rejected else {}
        final = f"{staged}_final"
        cols = ", ".join(columns)
        select = (final_sql.format(staged=staged) if final_sql else
                  f"SELECT {cols} FROM {staged} WHERE reject_reason IS NULL ORDER BY data_row")
        # A view, not a copy: the rows are read from the staged table as they are stored.
        con.execute(f"CREATE TEMP VIEW {final} AS {select}")
        months = [m.strftime("%Y-%m") for (m,) in con.execute(
            f"SELECT DISTINCT {month_column} FROM {final} ORDER BY 1").fetchall()] if month_column else []
        report = IngestReport(str(path), layout, table, rows_read, n_good, rows_rejected, months,
                              {str(k): int(v) for k, v in reasons.items()}, note=note, rows_set_aside=set_aside)
        assert report.rows_read == report.rows_accepted + report.rows_rejected
        try:
            # Rows outside the run's months, and practices with no patients, are not faults in the
            # file: quarantined with their reason, but not counted towards the share that stops a run.
            faulty = rows_rejected - sum(n for r, n in reasons.items() if any(s in str(r) for s in NOT_FAULTS))
            share = faulty / rows_read if rows_read else 0.0
            if share > max_reject_share:
                # Written beside, not over, the rejects CSV: that one describes what the store holds.
                write_csv_atomic(rejects, self._refused_csv(path))
                top = "; ".join(f"{n:,} {r}" for r, n in list(reasons.items())[:5])
                raise IngestError(
                    f"{path}: {faulty:,} of {rows_read:,} rows rejected ({share:.1%}), more than the "
                    f"allowed {max_reject_share:.1%} (data.max_reject_share). Reasons: {top}. "
                    f"The rejected rows are in {self._refused_csv(path)}; the store was not changed. "
                    f"{_reject_hint(reasons)}"
                )
            stat = path.stat()
            with self.transaction():
                con.execute(f"DELETE FROM {table} WHERE {replace_where.format(final=final)}")
                con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {final}")
                con.execute("DELETE FROM rejects WHERE file = ?", [str(path)])
                if rows_rejected:
                    con.register("rejects_df", rejects)
                    con.execute("INSERT INTO rejects SELECT file, line, reason, detail FROM rejects_df")
                    con.unregister("rejects_df")
                con.execute("DELETE FROM ingest_log WHERE file = ?", [str(path)])
                con.execute(
                    "INSERT INTO ingest_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?)",
                    [str(path), layout, table, rows_read, n_good, rows_rejected, ",".join(months),
                     stat.st_size, stat.st_mtime, window],
                )
                self._after_commit(lambda: self._place_rejects_csv(path, rejects))
        finally:
            self._drop_quietly([f"TABLE {tag}_rej", f"TABLE {tag}_scan", f"VIEW {final}", f"TABLE {staged}"])
        return report

    def _drop_quietly(self, objects: list[str]) -> None:
        """Drop temporary ``objects`` ("TABLE name", "VIEW name").

        Inside a transaction that an error has aborted nothing can be dropped; the rollback
        that follows removes them anyway.
        """
        for obj in objects:
            try:
                self.con.execute(f"DROP {obj.split()[0]} IF EXISTS {obj.split()[1]}")
            except duckdb.Error:
                if not self._in_transaction:
                    raise
                return

    def _place_rejects_csv(self, path: Path, rejects: pd.DataFrame) -> None:
        """After a commit: the file's rejects CSV holds its stored rejects; no refusal CSV is left."""
        if len(rejects):
            self._write_rejects_csv(path, rejects)
        else:  # a corrected file leaves no stale rejects beside the store
            self._rejects_csv(path).unlink(missing_ok=True)
        self._refused_csv(path).unlink(missing_ok=True)

    def _malformed_lines(self, path: Path, tag: str) -> list[tuple[int, str, str]]:
        """(line, reason, text) of each line DuckDB could not parse, one per physical line.

        A stray quote makes DuckDB read the lines after it as one value until the next quote:
        every line so swallowed is counted as a reject of its own, so rows read still counts
        the file's lines. A line that is not UTF-8 refuses the file (see :class:`IngestError`).
        """
        if not table_exists(self.con, f"{tag}_rej"):
            return []
        rows = self.con.execute(
            # DuckDB records one error per missing column; a line is one reject.
            f"SELECT line, 'malformed CSV line: ' || arg_min(error_message, column_idx), any_value(csv_line), "
            f"bool_or(CAST(error_type AS VARCHAR) = 'INVALID ENCODING'), "
            f"bool_or(CAST(error_type AS VARCHAR) = 'UNQUOTED VALUE') "
            f"FROM {tag}_rej GROUP BY line ORDER BY line").fetchall()
        encoding = [r for r in rows if r[3]]
        if encoding:
            line, _, text, *_ = encoding[0]
            raise IngestError(_not_utf8_message(path, line, len(encoding), text))
        lines = []
        for line, reason, text, _, quote in rows:
            lines.append((line, reason, text))
            if quote:
                swallowed = (text or "").strip("\r\n").split("\n")[1:]
                lines += [(line + k, f"malformed CSV line: read as part of the unclosed quoted value opened "
                                     f"on line {line}", part) for k, part in enumerate(swallowed, 1)]
        return lines

    def _rejects_csv(self, path: Path) -> Path:
        # The parent folder is part of the name: published files of different months share names.
        return self.rejects_dir / f"{path.parent.name}__{path.name}.rejects.csv"

    def _refused_csv(self, path: Path) -> Path:
        """Where the rejected rows of a refused file are written (the store keeps none of them)."""
        return self.rejects_dir / f"{path.parent.name}__{path.name}.refused.csv"

    def _quarantine_stray_months(self, staged: str, label: str) -> None:
        """Reject the rows of any month far rarer than the file's main month.

        A file replaces the months it holds: a stray row of another month (a copy-paste, a
        late correction) would otherwise delete that month's rows, which another file holds.
        """
        counts = self.con.execute(
            f"SELECT month, count(*) AS n FROM {staged} WHERE reject_reason IS NULL AND month IS NOT NULL "
            "GROUP BY month ORDER BY n DESC, month").fetchall()
        if len(counts) < 2:
            return
        main, n_main = counts[0]
        for month, n in counts[1:]:
            if n * STRAY_MONTH_RATIO <= n_main:
                reason = (f"{label} {month:%Y-%m} is a stray: the rest of the file is {main:%Y-%m} ({n_main:,} rows), "
                          "and a file replaces only its own month")
                self.con.execute(f"UPDATE {staged} SET reject_reason = ? WHERE reject_reason IS NULL AND month = ?",
                                 [reason, month])

    def _write_rejects_csv(self, path: Path, rejects: pd.DataFrame) -> None:
        write_csv_atomic(rejects, self._rejects_csv(path))

    def _keep_only(self, staged: str, condition: str) -> int:
        """Keep rejected rows and rows meeting ``condition``; return how many were set aside.

        Rows set aside are valid input that is not stored (summary rows, measures or cost
        centres moopt does not use); :meth:`_finish` adds them to the file's read
        and accepted counts, so nothing is lost from the accounts.
        """
        keep = f"(reject_reason IS NOT NULL OR ({condition}))"
        set_aside = self.con.execute(
            f"SELECT count(*) FILTER (WHERE {keep} IS NOT TRUE) FROM {staged}").fetchall()[0][0]
        if set_aside:  # deleting in place: a copy of a national month would double its memory
            self.con.execute(f"DELETE FROM {staged} WHERE {keep} IS NOT TRUE")
        return set_aside

    def _stage(self, path: Path, tag: str, select_sql: str, read_path: Path | None = None) -> str:
        """Create the staged table ``staged_<tag>`` from ``select_sql``; a file DuckDB cannot
        read at all is an :class:`IngestError` naming the line at fault where it can be found."""
        staged = f"staged_{tag}"
        try:
            self.con.execute(f"CREATE TEMP TABLE {staged} AS {select_sql}")
        except duckdb.Error as exc:
            self._drop_temporaries(tag)
            mixed = _mixed_line_ends(read_path or path)
            if mixed:
                raise IngestError(f"{path}: {mixed} The CSV reader needs one kind of line end throughout: "
                                  "save the file again with one (e.g. with dos2unix).") from exc
            # DuckDB's first line says what failed; the rest is its reader's settings.
            raise IngestError(f"{path}: could not be read as CSV ({str(exc).splitlines()[0]}).") from exc
        return staged

    def _drop_temporaries(self, tag: str) -> None:
        self._drop_quietly([f"TABLE {name}" for name in (f"staged_{tag}", f"{tag}_rej", f"{tag}_scan")])

    # -- organisations -----------------------------------------------------------------------

    def ingest_organisations(self, path: str | Path, max_reject_share: float = 0.01) -> IngestReport:
        """Load a practice mapping file (sub-ICB or CCG era); it replaces the organisation table."""
        src = self._source(path, "organisations")
        path = src.path
        tag = "org_" + uuid.uuid4().hex[:8]
        c = {k: src.col(k) for k in src.columns}
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, *
                         FROM {self._read_csv(src.read_path, tag, src.n_columns)}),
            typed AS (
                SELECT data_row, upper({c['practice_code']}) AS practice_code, {c['practice_name']} AS practice_name,
                       upper({c['pcn_code']}) AS pcn_code, {c['pcn_name']} AS pcn_name,
                       upper({c['sub_icb_code']}) AS sub_icb_code, {c['sub_icb_name']} AS sub_icb_name,
                       upper({c['icb_code']}) AS icb_code, {c['icb_name']} AS icb_name,
                       upper({c['region_code']}) AS region_code, {c['region_name']} AS region_name,
                       CAST(NULL AS VARCHAR) AS status, CAST(NULL AS DATE) AS close_date
                FROM raw),
            numbered AS (SELECT *, row_number() OVER (PARTITION BY practice_code ORDER BY data_row) AS dup FROM typed)
            SELECT *, CASE
                {_code_check("practice_code", "practice code")}
                {_code_check("pcn_code", "PCN code")}
                {_code_check("sub_icb_code", "sub-ICB code")}
                {_code_check("icb_code", "ICB code")}
                {_code_check("region_code", "region code")}
                WHEN dup > 1 THEN 'duplicate practice code'
            END AS reject_reason
            FROM numbered"""
        staged = self._stage(path, tag, select, src.read_path)
        return self._finish(src, src.layout.name, "organisations", staged, tag, ORGANISATION_COLUMNS, "TRUE",
                            max_reject_share, "coalesce(practice_code, '')")

    def ingest_ods_organisations(self, epraccur: str | Path, eccg: str | Path | None = None,
                                 eauth: str | Path | None = None,
                                 max_reject_share: float = 0.01, hierarchy: bool = True) -> IngestReport:
        """Build the organisation table from ODS files (no header, 27 columns, every field quoted).

        ``epraccur`` gives each prescribing cost centre's commissioner (column 15: CCG or sub-ICB),
        higher-level health geography (column 4) and national grouping (column 3). Only GP
        practices (prescribing setting 4, column 26) are organisations; other cost centres
        (out-of-hours, walk-in, prisons ...) are read and counted but not stored, so their
        prescribing is reported as not belonging to a GP practice. ODS files carry no PCN: each
        practice gets its commissioner's "no PCN" group (code U + commissioner). Names come from
        ``eccg`` (commissioners) and ``eauth`` (area teams and regions) when given, else the codes.
        Each file may be a zip archive holding the one CSV.

        With ``hierarchy=False`` the organisations come from a practice mapping file instead and
        ``epraccur`` only supplies the cost centres that are not GP practices.
        """
        path = Path(epraccur)
        read = self._plain_file(path)
        try:
            _refuse_if_cut(path, read, read_header(read))
            _refuse_if_not_utf8(path, read)
        except ValueError as exc:
            if read == path:
                raise
            # name the file the user gave, not the copy extracted from the zip beside the store
            raise IngestError(str(exc).replace(str(read), f"{path} (its CSV member)")) from exc
        eccg = self._plain_file(Path(eccg)) if eccg else None
        eauth = self._plain_file(Path(eauth)) if eauth else None
        tag = "ods_" + uuid.uuid4().hex[:8]
        names = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(1, 28))

        def ods(file: Path, suffix: str) -> str:
            return (f"read_csv({_quote(file)}, header=false, columns={{{names}}}, quote='\"', "
                    f"store_rejects=true, rejects_table='{tag}{suffix}_rej', rejects_scan='{tag}{suffix}_scan')")

        lookups = []
        for label, file in (("ccg", eccg), ("auth", eauth)):
            if file:
                try:
                    self.con.execute(f"CREATE OR REPLACE TEMP TABLE {tag}_{label} AS "
                                     f"SELECT trim(c1) AS code, trim(c2) AS name FROM {ods(Path(file), label)}")
                except duckdb.Error as exc:
                    raise IngestError(f"{file}: cannot be read as an ODS file (no header, 27 quoted "
                                      f"columns) for {'commissioner' if label == 'ccg' else 'region'} names "
                                      f"({exc}).") from exc
            else:
                self.con.execute(f"CREATE OR REPLACE TEMP TABLE {tag}_{label} (code VARCHAR, name VARCHAR)")
            lookups.append(f"{tag}_{label}")
        ccg, auth = lookups
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, * FROM {ods(read, '')}),
            typed AS (
                SELECT data_row, upper(trim(c1)) AS practice_code, trim(c2) AS practice_name,
                    upper(trim(c3)) AS region_code, upper(trim(c4)) AS icb_code,
                    upper(trim(c15)) AS sub_icb_code, trim(c26) AS setting, upper(trim(c13)) AS status,
                    TRY_CAST(try_strptime(trim(c12), '%Y%m%d') AS DATE) AS close_date
                FROM raw),
            named AS (
                SELECT t.*, 'U' || t.sub_icb_code AS pcn_code, 'No PCN: ' || coalesce(cc.name, t.sub_icb_code) AS pcn_name,
                    coalesce(cc.name, t.sub_icb_code) AS sub_icb_name, coalesce(ai.name, t.icb_code) AS icb_name,
                    coalesce(ar.name, t.region_code) AS region_name,
                    row_number() OVER (PARTITION BY t.practice_code ORDER BY t.data_row) AS dup
                FROM typed t
                LEFT JOIN (SELECT code, any_value(name) AS name FROM {ccg} GROUP BY code) cc ON cc.code = t.sub_icb_code
                LEFT JOIN (SELECT code, any_value(name) AS name FROM {auth} GROUP BY code) ai ON ai.code = t.icb_code
                LEFT JOIN (SELECT code, any_value(name) AS name FROM {auth} GROUP BY code) ar ON ar.code = t.region_code)
            SELECT *, CASE
                WHEN coalesce(setting, '') <> '4' THEN NULL
                {_code_check("practice_code", "practice code")}
                {_code_check("sub_icb_code", "commissioner code (column 15)", 11)}
                {_code_check("icb_code", "health geography code (column 4)")}
                {_code_check("region_code", "national grouping code (column 3)")}
                WHEN dup > 1 THEN 'duplicate practice code'
            END AS reject_reason
            FROM named"""
        staged = self._stage(path, tag, select, read)
        # Cost centres that are not GP practices go to cost_centres, so that their prescribing is
        # recognised (counted, not stored) instead of being rejected as unknown.
        self.con.execute(f"""
            CREATE TEMP TABLE {tag}_cc AS
            SELECT practice_code AS code, any_value(practice_name) AS name, any_value(setting) AS setting,
                   any_value(sub_icb_code) AS commissioner
            FROM {staged}
            WHERE coalesce(setting, '') <> '4' AND regexp_full_match(coalesce(practice_code, ''), '[A-Z0-9]{{1,12}}')
            GROUP BY practice_code""")
        n_cc = self.con.execute(f"SELECT count(*) FROM {tag}_cc").fetchall()[0][0]
        if hierarchy:
            n_gp = self.con.execute(f"SELECT count(*) FROM {staged} WHERE setting = '4'").fetchall()[0][0]
            if n_gp == 0:
                self._drop_temporaries(tag)
                raise IngestError(
                    f"{path}: holds no GP practices (prescribing setting 4 in column 26), so it cannot be the "
                    "organisation file. Is it epraccur? (eccg and eauth files go under eccg: and eauth:.)")
            not_gp = self._keep_only(staged, "setting = '4'")
            closed = self.con.execute(f"SELECT count(*) FROM {staged} WHERE reject_reason IS NULL "
                                      "AND status IN ('C', 'D')").fetchall()[0][0]
            report = self._finish(path, "ods_epraccur", "organisations", staged, tag, ORGANISATION_COLUMNS,
                                  "TRUE", max_reject_share, "coalesce(practice_code, '')", set_aside=not_gp,
                                  header_lines=0,
                                  note=f"{not_gp:,} rows for {n_cc:,} cost centres that are not GP practices "
                                       f"counted, not stored; {closed:,} closed or dormant practices kept for "
                                       "their history")
            self.con.execute("DELETE FROM cost_centres")
            self.con.execute(f"INSERT INTO cost_centres SELECT * FROM {tag}_cc")
        else:
            gp = self._keep_only(staged, "coalesce(setting, '') <> '4'")
            report = self._finish(path, "ods_epraccur", "cost_centres", staged, tag,
                                  ["code", "name", "setting", "commissioner"], "TRUE", max_reject_share,
                                  "coalesce(practice_code, '')", final_sql=f"SELECT * FROM {tag}_cc",
                                  set_aside=gp, header_lines=0,
                                  note=f"{gp:,} GP practices counted (their organisations come from the practice map)")
        self.con.execute(f"DROP TABLE IF EXISTS {tag}_cc")
        for label in ("ccg", "auth"):
            self.con.execute(f"DROP TABLE IF EXISTS {tag}_{label}")
            for suffix in ("_rej", "_scan"):
                self.con.execute(f"DROP TABLE IF EXISTS {tag}{label}{suffix}")
        return report

    def ingest_practice_attributes(self, path: str | Path, max_reject_share: float = 0.01) -> IngestReport:
        """Load practice attributes (PRACTICE_CODE, DEPRIVATION_SCORE, RURAL, CARE_HOME_BEDS)."""
        path = Path(path)
        tag = "att_" + uuid.uuid4().hex[:8]
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, * FROM {self._read_csv(path, tag)}),
            typed AS (
                SELECT data_row, upper(trim(PRACTICE_CODE)) AS practice_code,
                       moopt_number(DEPRIVATION_SCORE) AS deprivation_score,
                       upper(trim(RURAL)) AS rural, TRY_CAST(CARE_HOME_BEDS AS BIGINT) AS care_home_beds
                FROM raw)
            SELECT *, CASE
                WHEN practice_code NOT IN (SELECT practice_code FROM organisations)
                    THEN 'practice code is not in the organisation map'
                WHEN deprivation_score IS NULL OR deprivation_score < 0 THEN 'DEPRIVATION_SCORE is missing or negative'
                WHEN care_home_beds IS NULL OR care_home_beds < 0 THEN 'CARE_HOME_BEDS is missing or negative'
            END AS reject_reason FROM typed"""
        try:
            staged = self._stage(path, tag, select)
        except IngestError as exc:
            raise IngestError(f"{exc} Expected columns PRACTICE_CODE, DEPRIVATION_SCORE, RURAL, "
                              "CARE_HOME_BEDS.") from exc
        return self._finish(path, "practice_attributes", "practice_attributes", staged, tag,
                            ["practice_code", "deprivation_score", "rural", "care_home_beds"], "TRUE",
                            max_reject_share, "coalesce(practice_code, '')")

    # -- prescribing ---------------------------------------------------------------------------

    def ingest_prescribing(self, path: str | Path, max_reject_share: float = 0.01,
                           force: bool = False, window: RunWindow | None = None) -> IngestReport:
        """Validate one prescribing file and replace its months in the store.

        Reads the NHSBSA English Prescribing Dataset (every era) and the legacy NHS Digital
        practice level prescribing file (PDPI), plain, gzip or zip. Rows for cost centres that
        are not GP practices (known from ODS epraccur) are counted, not stored. With a run
        ``window``, rows for months outside it are rejected.
        """
        src = self._source(path, "prescribing")
        path = src.path
        window_text = window.text() if window else ""
        if not force and (kept := self._unchanged(path, window_text)):
            return kept
        self._require_organisations(path)
        tag = "epd_" + uuid.uuid4().hex[:8]
        legacy = src.layout.reader == "lines"
        if legacy:
            typed, dup_key, column = self._pdpi_typed(src, tag), "month, practice_code, bnf_code", "PERIOD"
        else:
            typed, dup_key, column = self._epd_typed(src, tag), "month, practice_code, bnf_code, quantity", \
                "YEAR_MONTH"
        # The legacy files carry no ADQ usage and may lack the quantity: those stay empty, and the
        # engine leaves indicators that need them without a value rather than counting them as 0.
        quantity_check = ("WHEN quantity < 0 OR total_quantity < 0 THEN 'QUANTITY is negative'" if legacy else
                          """WHEN quantity IS NULL OR quantity < 0 THEN 'QUANTITY is missing, non-numeric or negative'
                WHEN total_quantity IS NULL OR total_quantity < 0 THEN 'TOTAL_QUANTITY is missing, non-numeric or negative'
                WHEN adq_usage IS NULL OR adq_usage < 0 THEN 'ADQ usage is missing, non-numeric or negative'""")
        select = f"""
            WITH {typed},
            numbered AS (
                SELECT *, TRY_CAST(items_raw AS BIGINT) AS items,
                    practice_code IN (SELECT practice_code FROM organisations) AS gp_practice,
                    row_number() OVER (PARTITION BY {dup_key} ORDER BY data_row) AS dup
                FROM typed),
            placed AS (
                SELECT *, NOT gp_practice AND practice_code IN (SELECT code FROM cost_centres) AS other_cost_centre
                FROM numbered)
            SELECT *, CASE
                WHEN n_fields IS NOT NULL AND n_fields < expected_fields
                    THEN 'malformed line: ' || n_fields || ' fields where the header has ' || expected_fields
                WHEN month IS NULL THEN '{column} is not a month (YYYYMM, YYYY-MM or YYYY_MM)'
                {window.check("month", column) if window else ""}
                WHEN coalesce(practice_code, '') = '' THEN 'PRACTICE_CODE is blank'
                WHEN NOT regexp_full_match(coalesce(bnf_code, ''), '{BNF_CODE_PATTERN}') THEN 'BNF code is malformed'
                WHEN items_raw IS NULL OR items_raw <> floor(items_raw) THEN 'ITEMS is not a whole number'
                WHEN items_raw < 0 THEN 'ITEMS is negative'
                {quantity_check}
                WHEN nic IS NULL OR nic < 0 THEN 'NIC is missing, non-numeric or negative'
                WHEN actual_cost IS NULL OR actual_cost < 0 THEN 'ACTUAL_COST is missing, non-numeric or negative'
                WHEN other_cost_centre THEN NULL
                WHEN NOT gp_practice THEN 'PRACTICE_CODE is not a GP practice in the organisation map'
                WHEN dup > 1 THEN 'duplicate row (same month, practice, BNF code{"" if legacy else " and quantity per item"})'
            END AS reject_reason, {_quote(path.name)} AS source_file
            FROM placed"""
        staged = self._stage(path, tag, select, src.read_path)
        not_practices = self._keep_only(staged, "NOT other_cost_centre")
        columns = ["month", "practice_code", "bnf_code", "quantity", "items", "total_quantity",
                   "adq_usage", "nic", "actual_cost", "source_file"]
        return self._finish(src, src.layout.name, "prescribing", staged, tag, columns,
                            "month IN (SELECT DISTINCT month FROM {final})", max_reject_share,
                            "concat_ws(' ', practice_code, bnf_code)", month_column="month", window=window_text,
                            set_aside=not_practices, month_label=column,
                            note=f"{not_practices:,} rows for cost centres that are not GP practices "
                                 "(out of hours, walk-in, community ...) counted, not stored" if not_practices else "")

    def _epd_typed(self, src: Source, tag: str) -> str:
        c = {k: src.col(k) for k in src.columns}
        return f"""raw AS (SELECT row_number() OVER () AS data_row, *
                         FROM {self._read_csv(src.read_path, tag, src.n_columns)}),
            typed AS (
                SELECT data_row, NULL AS n_fields, NULL AS expected_fields,
                    moopt_month(try_strptime(regexp_replace({c['year_month']}, '[-_]', '', 'g'), '%Y%m')) AS month,
                    upper({c['practice_code']}) AS practice_code,
                    upper({c['bnf_code']}) AS bnf_code,
                    moopt_number({c['quantity']}) AS quantity,
                    moopt_number({c['items']}) AS items_raw,
                    moopt_number({c['total_quantity']}) AS total_quantity,
                    moopt_number({c['adq_usage']}) AS adq_usage,
                    moopt_number({c['nic']}) AS nic,
                    moopt_number({c['actual_cost']}) AS actual_cost
                FROM raw)"""

    def _pdpi_typed(self, src: Source, tag: str) -> str:
        """The legacy PDPI file, read as whole lines and split here.

        BNF NAME is free text that can hold commas (they corrupted the December 2018 file),
        so fields before it are counted from the left and fields after it from the right;
        a trailing comma (the files before December 2018) is dropped first.
        """
        header = read_header(src.read_path)
        while header and not header[-1].strip():
            header.pop()
        n = len(header)
        name_at = src.columns["bnf_name"]

        def field(canonical: str) -> str:
            i = src.columns.get(canonical)
            if i is None:
                return "NULL"
            return f"trim(f[{i + 1}])" if i < name_at else f"trim(f[len(f) - {n - 1 - i}])"

        return f"""{self._split_lines(src.read_path)},
            typed AS (
                SELECT data_row, len(f) AS n_fields, {n} AS expected_fields,
                    moopt_month(try_strptime({field('year_month')}, '%Y%m')) AS month,
                    upper({field('practice_code')}) AS practice_code,
                    upper({field('bnf_code')}) AS bnf_code,
                    moopt_number({field('items')}) AS items_raw,
                    moopt_number({field('total_quantity')}) AS total_quantity,
                    -- the legacy grain is practice x presentation, not pack size: the quantity per
                    -- item of each prescription is not known (a mean would misclassify courses)
                    CAST(NULL AS DOUBLE) AS quantity,
                    CAST(NULL AS DOUBLE) AS adq_usage,
                    moopt_number({field('nic')}) AS nic,
                    moopt_number({field('actual_cost')}) AS actual_cost
                FROM split)"""

    # -- list sizes --------------------------------------------------------------------------------

    def ingest_list_size(self, path: str | Path, max_reject_share: float = 0.01,
                         force: bool = False, window: RunWindow | None = None) -> IngestReport:
        """Validate one list-size file and replace its months in the store.

        Three layouts: NHS Digital quinary age/sex files, NHS Digital single-year-of-age files
        (one per sex) or files of totals only (``gp-reg-pat-prac-all``), and the NHSBSA quarterly
        Patient List Size files (nine age bands per sex in columns; each quarter's counts are
        used for its three months).

        Rows for other organisation types (PCN, sub-ICB ... in the national files) and the
        ALL-age/ALL-sex total rows, where bands are given, are summaries of the band rows: they
        are counted as read and accepted but not stored. The totals are checked against the
        bands: a practice whose bands do not add up to its total is rejected. A file replaces
        the same months and sexes (and any totals-only rows of those months); a totals-only
        file replaces its whole months.
        """
        src = self._source(path, "list_size")
        path = src.path
        window_text = window.text() if window else ""
        if not force and (kept := self._unchanged(path, window_text)):
            return kept
        self._require_organisations(path)
        if src.layout.name == "nhsbsa_patient_list_size":
            return self._ingest_nhsbsa_list_size(src, max_reject_share, window)
        if src.layout.name == "practice_list_size_from_lsoa":
            return self._ingest_lsoa_totals(src, max_reject_share, window)
        tag = "ls_" + uuid.uuid4().hex[:8]
        c = {k: src.col(k) for k in src.columns}
        single_age = src.layout.name == "gp_reg_pat_prac_single_age_or_all"
        if single_age:
            # AGE is a single year (0 ... 95+) or ALL; a band is one year wide, 95+ open-ended.
            age_column, band_test = "AGE", "regexp_full_match(age_group, '[0-9]{1,3}\\+?')"
            upper = "CASE WHEN age_group LIKE '%+' THEN NULL ELSE age_lower END"
            age_group = c["age"]
        else:
            bands = ", ".join(_quote(b) for b in AGE_BANDS)
            age_column, band_test = "AGE_GROUP_5", f"age_group IN ({bands})"
            upper = "CASE WHEN age_group LIKE '%+' THEN NULL ELSE age_lower + 4 END"
            age_group = c["age_group"]
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, *
                         FROM {self._read_csv(src.read_path, tag, src.n_columns)}),
            typed AS (
                SELECT data_row,
                    moopt_month(date_trunc('month', try_strptime({c['extract_date']},
                        ['%d%b%Y', '%d-%b-%y', '%d-%b-%Y', '%Y-%m-%d', '%d/%m/%Y']))) AS month,
                    upper({c['org_type']}) AS org_type, upper({c['practice_code']}) AS practice_code,
                    upper({c['sex']}) AS sex_raw, upper({age_group}) AS age_group,
                    moopt_number({c['patients']}) AS patients_raw
                FROM raw),
            banded AS (
                SELECT *,
                    CASE WHEN sex_raw = 'MALE' THEN 'male' WHEN sex_raw = 'FEMALE' THEN 'female' END AS sex,
                    TRY_CAST(split_part(replace(age_group, '+', '_'), '_', 1) AS INTEGER) AS age_lower,
                    TRY_CAST(patients_raw AS BIGINT) AS patients
                FROM typed),
            checked AS (
                SELECT *, {upper} AS age_upper,
                    -- totals are checked per sex (a single-age file holds one sex) and, where
                    -- both sexes have bands, for the whole practice
                    sum(CASE WHEN sex IS NOT NULL AND age_group <> 'ALL' THEN patients_raw END)
                        OVER (PARTITION BY practice_code, month, sex_raw) AS band_total_sex,
                    max(CASE WHEN sex IS NOT NULL AND age_group = 'ALL' THEN patients_raw END)
                        OVER (PARTITION BY practice_code, month, sex_raw) AS stated_total_sex,
                    sum(CASE WHEN sex IS NOT NULL AND age_group <> 'ALL' THEN patients_raw END)
                        OVER (PARTITION BY practice_code, month) AS band_total,
                    max(CASE WHEN sex = 'male' AND age_group <> 'ALL' THEN 1 ELSE 0 END)
                        OVER (PARTITION BY practice_code, month)
                      + max(CASE WHEN sex = 'female' AND age_group <> 'ALL' THEN 1 ELSE 0 END)
                        OVER (PARTITION BY practice_code, month) AS sexes_with_bands,
                    max(CASE WHEN sex IS NOT NULL AND age_group <> 'ALL' THEN 1 ELSE 0 END)
                        OVER (PARTITION BY month) AS file_has_bands,
                    max(CASE WHEN sex_raw = 'ALL' AND age_group = 'ALL' THEN patients_raw END)
                        OVER (PARTITION BY practice_code, month) AS stated_total,
                    -- the practice's registered patients, however this file gives them
                    max(CASE WHEN age_group = 'ALL' THEN patients_raw END)
                        OVER (PARTITION BY practice_code, month) AS largest_stated_total,
                    row_number() OVER (PARTITION BY month, practice_code, sex_raw, age_group ORDER BY data_row) AS dup
                FROM banded)
            SELECT *, CASE
                WHEN month IS NULL THEN 'EXTRACT_DATE is not a recognised date'
                {window.check("month", "EXTRACT_DATE") if window else ""}
                WHEN org_type <> 'GP' THEN NULL
                WHEN sex_raw NOT IN ('ALL', 'MALE', 'FEMALE') THEN 'SEX is not ALL, MALE or FEMALE'
                WHEN age_group <> 'ALL' AND NOT {band_test} THEN '{age_column} is not an age band of this layout'
                WHEN patients_raw IS NULL OR patients_raw <> floor(patients_raw) THEN 'NUMBER_OF_PATIENTS is not a whole number'
                WHEN patients_raw < 0 THEN 'NUMBER_OF_PATIENTS is negative'
                WHEN practice_code NOT IN (SELECT practice_code FROM organisations)
                    THEN 'practice code is not in the organisation map'
                WHEN dup > 1 THEN 'duplicate row (same month, practice, sex and age band)'
                WHEN greatest(coalesce(largest_stated_total, 0), coalesce(band_total, 0)) < 1
                    THEN '{ZERO_LIST_SIZE_REASON}'
                WHEN stated_total_sex IS NOT NULL AND band_total_sex IS NOT NULL AND stated_total_sex <> band_total_sex
                    THEN 'age bands do not add up to the total for that sex'
                WHEN sexes_with_bands = 2 AND stated_total IS NOT NULL AND stated_total <> band_total
                    THEN 'age/sex bands do not add up to the practice total'
            END AS reject_reason, {_quote(path.name)} AS source_file
            FROM checked"""
        staged = self._stage(path, tag, select, src.read_path)
        # Summary rows (other organisation types, ALL totals where bands exist) are totals of the
        # band rows stored. A file with no bands in a month (gp-reg-pat-prac-all) stores its totals.
        summary_rows = self._keep_only(
            staged, "org_type = 'GP' AND ((sex IS NOT NULL AND age_group <> 'ALL') "
                    "OR (file_has_bands = 0 AND sex_raw = 'ALL' AND age_group = 'ALL'))")
        final_sql = """SELECT month, practice_code, coalesce(sex, 'all') AS sex,
                               CASE WHEN age_group = 'ALL' THEN NULL ELSE age_lower END AS age_lower,
                               CASE WHEN age_group = 'ALL' THEN NULL ELSE age_upper END AS age_upper,
                               patients, source_file
                        FROM {staged} WHERE reject_reason IS NULL ORDER BY data_row"""
        return self._finish(src, src.layout.name, "list_size", staged, tag, LIST_SIZE_COLUMNS,
                            LIST_SIZE_REPLACES, max_reject_share,
                            "concat_ws(' ', practice_code, sex_raw, age_group)", month_column="month",
                            final_sql=final_sql, window=window_text, set_aside=summary_rows,
                            month_label="EXTRACT_DATE",
                            note=f"{summary_rows:,} total and other-organisation rows (sums of the bands stored) "
                                 "counted, not stored" if summary_rows else "")

    def _ingest_nhsbsa_list_size(self, src: Source, max_reject_share: float,
                                 window: RunWindow | None) -> IngestReport:
        """NHSBSA Patient List Size: a row per practice and quarter, 18 band columns."""
        path = src.path
        tag = "bsa_" + uuid.uuid4().hex[:8]
        c = {k: src.col(k) for k in src.columns}
        if "month" in src.columns:
            # Month is the quarter's first day, written dd/mm/yy (e.g. 01/04/11)
            month_sql = (f"moopt_month(date_trunc('month', try_strptime({c['month']}, "
                         "['%d/%m/%y', '%d/%m/%Y', '%Y-%m-%d'])))")
            month_from = "Month"
        else:
            found = re.search(r"(20\d{2})[_-](\d{2})-(\d{2})", path.name)
            if not found or (int(found.group(3)) - int(found.group(2))) % 12 != 2:
                raise IngestError(
                    f"{path}: this NHSBSA list-size file has no Month column, so its quarter must be in the "
                    "file name, e.g. Patient_List_Size_2016_01-03.csv for January to March 2016.")
            month_sql = f"DATE '{found.group(1)}-{found.group(2)}-01'"
            month_from = "the file name's quarter"
        bands = [(sex, band) for band in NHSBSA_BANDS for sex in ("male", "female")]
        counts = ", ".join(f"moopt_number({c[f'{sex}_{band}']}) AS \"{sex}_{band}\"" for sex, band in bands)
        values = ", ".join(f'"{sex}_{band}"' for sex, band in bands)
        band_checks = "\n".join(
            f"""WHEN "{sex}_{band}" IS NULL OR "{sex}_{band}" <> floor("{sex}_{band}") OR "{sex}_{band}" < 0
                    THEN '{sex.title()} {band} is not a whole number of 0 or more'""" for sex, band in bands)
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, *
                         FROM {self._read_csv(src.read_path, tag, src.n_columns)}),
            typed AS (
                SELECT data_row, {month_sql} AS month, upper({c['practice_code']}) AS practice_code, {counts}
                FROM raw),
            checked AS (
                SELECT *, row_number() OVER (PARTITION BY month, practice_code ORDER BY data_row) AS dup FROM typed)
            SELECT *, CASE
                WHEN month IS NULL THEN 'Month is not a date (dd/mm/yy)'
                {window.check("month", month_from) if window else ""}
                {_code_check("practice_code", "Practice Code")}
                {band_checks}
                WHEN practice_code NOT IN (SELECT practice_code FROM organisations)
                    THEN 'practice code is not in the organisation map'
                WHEN dup > 1 THEN 'duplicate row (same quarter and practice)'
                WHEN {" + ".join(f'"{sex}_{band}"' for sex, band in bands)} < 1 THEN '{ZERO_LIST_SIZE_REASON}'
            END AS reject_reason, {_quote(path.name)} AS source_file
            FROM checked"""
        staged = self._stage(path, tag, select, src.read_path)
        band_rows = " UNION ALL ".join(
            f"SELECT '{sex}' AS sex, {int(band.rstrip('+').split('-')[0])} AS age_lower, "
            f"{'NULL' if band.endswith('+') else int(band.split('-')[1])} AS age_upper, '{sex}_{band}' AS name"
            for sex, band in bands)
        # One stored row per practice, month of the quarter, sex and band.
        final_sql = f"""
            WITH accepted AS (SELECT * FROM {{staged}} WHERE reject_reason IS NULL),
            long AS (UNPIVOT accepted ON {values} INTO NAME name VALUE patients_raw),
            months AS (SELECT unnest([0, 1, 2]) AS k)
            SELECT CAST(l.month + to_months(m.k) AS DATE) AS month, l.practice_code, b.sex,
                   CAST(b.age_lower AS INTEGER) AS age_lower, CAST(b.age_upper AS INTEGER) AS age_upper,
                   TRY_CAST(l.patients_raw AS BIGINT) AS patients, l.source_file
            FROM long l JOIN ({band_rows}) b USING (name) CROSS JOIN months m
            ORDER BY l.data_row, m.k"""
        return self._finish(src, src.layout.name, "list_size", staged, tag, LIST_SIZE_COLUMNS,
                            LIST_SIZE_REPLACES, max_reject_share, "coalesce(practice_code, '')",
                            month_column="month", final_sql=final_sql, window=window.text() if window else "",
                            month_label=month_from)

    def _ingest_lsoa_totals(self, src: Source, max_reject_share: float,
                            window: RunWindow | None) -> IngestReport:
        """Practice totals summed over the LSOA file: one 'all' row per practice and month."""
        path = src.path
        found = re.search(r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*[_-]?(20\d{2})", path.name, re.I)
        if not found:
            raise IngestError(f"{path}: this list-size file has no date column, so its month must be in the "
                              "file name, e.g. practice_list_size_Oct2025_from_lsoa.csv.")
        month = pd.Timestamp(f"1 {found.group(1)[:3].title()} {found.group(2)}").strftime("%Y-%m-%d")
        tag = "lsoa_" + uuid.uuid4().hex[:8]
        c = {k: src.col(k) for k in src.columns}
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, *
                         FROM {self._read_csv(src.read_path, tag, src.n_columns)}),
            typed AS (
                SELECT data_row, DATE '{month}' AS month, upper({c['practice_code']}) AS practice_code,
                    moopt_number({c['patients']}) AS patients_raw
                FROM raw),
            checked AS (
                SELECT *, 'all' AS sex, CAST(NULL AS INTEGER) AS age_lower, CAST(NULL AS INTEGER) AS age_upper,
                    TRY_CAST(patients_raw AS BIGINT) AS patients,
                    row_number() OVER (PARTITION BY practice_code ORDER BY data_row) AS dup
                FROM typed)
            SELECT *, CASE
                {window.check("month", "the file name's month") if window else ""}
                {_code_check("practice_code", "PRACTICE_CODE")}
                WHEN patients_raw IS NULL OR patients_raw <> floor(patients_raw) OR patients_raw < 0
                    THEN 'NUMBER_OF_PATIENTS_SUM_LSOA is not a whole number of 0 or more'
                WHEN practice_code NOT IN (SELECT practice_code FROM organisations)
                    THEN 'practice code is not in the organisation map'
                WHEN dup > 1 THEN 'duplicate practice code'
                WHEN patients_raw < 1 THEN '{ZERO_LIST_SIZE_REASON}'
            END AS reject_reason, {_quote(path.name)} AS source_file
            FROM checked"""
        staged = self._stage(path, tag, select, src.read_path)
        return self._finish(src, src.layout.name, "list_size", staged, tag, LIST_SIZE_COLUMNS,
                            LIST_SIZE_REPLACES, max_reject_share, "coalesce(practice_code, '')",
                            month_column="month", window=window.text() if window else "")

    # -- reference files (legacy addresses and chemical names) ---------------------------------------

    def ingest_reference(self, path: str | Path, max_reject_share: float = 0.01) -> IngestReport:
        """Load a legacy NHS Digital ADDR (practice addresses) or CHEM (chemical names) file.

        They are kept for analysts (names and addresses as published each month, chemical
        substance names); the indicators do not depend on them.
        """
        src = self._source(path, "reference")
        path = src.path
        tag = "ref_" + uuid.uuid4().hex[:8]
        if src.layout.name == "nhs_digital_addr":
            # Split here rather than by a CSV reader: some months end every line with a comma,
            # some do not, and a name or address holding a comma must be rejected, not shifted.
            select = f"""
                WITH {self._split_lines(src.read_path, header=False)},
                typed AS (
                    SELECT data_row, len(f) AS n_fields,
                        moopt_month(try_strptime(trim(f[1]), '%Y%m')) AS month,
                        upper(trim(f[2])) AS practice_code, trim(f[3]) AS practice_name,
                        trim(f[4]) AS address_1, trim(f[5]) AS address_2, trim(f[6]) AS address_3,
                        trim(f[7]) AS county, upper(trim(f[8])) AS postcode
                    FROM split),
                numbered AS (SELECT *, row_number() OVER (PARTITION BY month, practice_code ORDER BY data_row) AS dup
                             FROM typed)
                SELECT *, CASE
                    WHEN n_fields <> 8 THEN 'malformed line: ' || n_fields || ' fields where ADDR has 8 '
                        || '(a name or address holding a comma?)'
                    WHEN month IS NULL THEN 'PERIOD (column 1) is not a month (YYYYMM)'
                    {_code_check("practice_code", "practice code")}
                    WHEN dup > 1 THEN 'duplicate row (same month and practice)'
                END AS reject_reason, {_quote(path.name)} AS source_file
                FROM numbered"""
            staged = self._stage(path, tag, select, src.read_path)
            return self._finish(src, src.layout.name, "practice_addresses", staged, tag, ADDRESS_COLUMNS,
                                "month IN (SELECT DISTINCT month FROM {final})", max_reject_share,
                                "coalesce(practice_code, '')", month_column="month", header_lines=0)
        if src.layout.name in REFERENCE_TABLES:
            return self._ingest_reference_table(src, tag, max_reject_share)
        # CHEM: the code, then the name, which may hold commas (everything up to the trailing comma)
        select = f"""
            WITH {self._split_lines(src.read_path, header=True)},
            typed AS (
                SELECT data_row, upper(trim(f[1])) AS chemical_code, trim(array_to_string(f[2:], ',')) AS chemical_name
                FROM split),
            numbered AS (SELECT *, row_number() OVER (PARTITION BY chemical_code ORDER BY data_row) AS dup FROM typed)
            SELECT *, CASE
                -- 9 characters for medicines; appliances (chapters 20 to 23) have 4-digit codes
                WHEN NOT regexp_full_match(coalesce(chemical_code, ''), '[0-9A-Z]{{9}}|[0-9]{{4}}')
                    THEN 'CHEM SUB is not a chemical substance code (9 characters, or 4 digits for appliances)'
                WHEN dup > 1 THEN 'duplicate chemical substance code'
            END AS reject_reason, {_quote(path.name)} AS source_file
            FROM numbered"""
        staged = self._stage(path, tag, select, src.read_path)
        return self._finish(src, src.layout.name, "bnf_chemicals", staged, tag,
                            ["chemical_code", "chemical_name", "source_file"],
                            "chemical_code IN (SELECT chemical_code FROM {final})", max_reject_share,
                            "coalesce(chemical_code, '')")

    def _ingest_reference_table(self, src: Source, tag: str, max_reject_share: float) -> IngestReport:
        """A reference file stored as text in ``reference_<table>``; a file replaces its own rows."""
        spec = REFERENCE_TABLES[src.layout.name]
        path = src.path
        table = f"reference_{spec.table}"
        columns = (["org_level"] if spec.org_level else []) + [c for c in src.layout.columns] + ["source_file"]
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{c} VARCHAR' for c in columns)})")
        values = ", ".join(f"{src.col(c) if c in src.columns else 'NULL'} AS {c}" for c in src.layout.columns)
        level = f"'{spec.org_level}' AS org_level, " if spec.org_level else ""
        key = ", ".join(spec.key)
        if src.layout.reader == "headerless":
            names = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(src.layout.columns)))
            read = (f"read_csv({_quote(src.read_path)}, header=false, columns={{{names}}}, quote='\"', "
                    f"store_rejects=true, rejects_table='{tag}_rej', rejects_scan='{tag}_scan')")
        else:
            read = self._read_csv(src.read_path, tag, src.n_columns)
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, * FROM {read}),
            typed AS (SELECT data_row, {level}{values} FROM raw),
            numbered AS (SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY data_row) AS dup FROM typed)
            SELECT *, CASE
                {" ".join(f"WHEN coalesce({k}, '') = '' THEN '{k} is blank'" for k in spec.key if k != "org_level")}
                WHEN dup > 1 THEN 'duplicate row (same {", ".join(spec.key)})'
            END AS reject_reason, {_quote(path.name)} AS source_file
            FROM numbered"""
        staged = self._stage(path, tag, select, src.read_path)
        return self._finish(src, src.layout.name, table, staged, tag, columns,
                            f"source_file = {_quote(path.name)}", max_reject_share,
                            f"concat_ws(' ', {key})")

    # -- supplied indicators -------------------------------------------------------------------------

    def _register_supplied_definitions(self, indicators) -> None:
        rows = [{"indicator_id": i.id, "value_kind": i.value_kind, "period_type": i.supplied["period_type"],
                 "layout": i.supplied["source_layout"],
                 "breakdowns": ",".join(["all", *i.supplied.get("breakdowns", [])])}
                for i in indicators if i.is_supplied]
        frame = pd.DataFrame(rows, columns=["indicator_id", "value_kind", "period_type", "layout", "breakdowns"])
        self.con.register("supplied_definitions", frame)
        codes = []
        for level, column in (("practice", "practice_code"), ("pcn", "pcn_code"), ("sub_icb", "sub_icb_code"),
                              ("icb", "icb_code"), ("region", "region_code")):
            codes.append(f"SELECT DISTINCT '{level}' AS org_level, {column} AS org_code FROM organisations")
        self.con.execute("CREATE OR REPLACE TEMP VIEW org_codes AS " + " UNION ALL ".join(codes))

    def ingest_supplied(self, path: str | Path, indicators, max_reject_share: float = 0.01,
                        force: bool = False) -> IngestReport:
        """Validate one supplied-indicator file (moopt tidy layout or QOF achievement) and load it.

        ``indicators`` are the indicator definitions; only supplied ones may appear in the file.
        Re-ingesting replaces the same indicators and periods.
        """
        src = self._source(path, "supplied")
        path = src.path
        if not force and (kept := self._unchanged(path)):
            return kept
        self._require_organisations(path)
        self._register_supplied_definitions(indicators)
        if src.layout.name == "qof_achievement":
            return self._ingest_qof(src, indicators, max_reject_share)
        tag = "sup_" + uuid.uuid4().hex[:8]
        c = {k: src.col(k) for k in src.columns}
        breakdown = c.get("breakdown", "'all'")
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, *
                         FROM {self._read_csv(src.read_path, tag, src.n_columns)}),
            typed AS (
                SELECT data_row, upper({c['indicator_id']}) AS indicator_id, lower({c['org_level']}) AS org_level,
                    upper({c['org_code']}) AS org_code,
                    moopt_month(TRY_CAST({c['period_start']} AS DATE)) AS period_start,
                    moopt_month(TRY_CAST({c['period_end']} AS DATE)) AS period_end,
                    lower(coalesce(nullif({breakdown}, ''), 'all')) AS breakdown,
                    moopt_number({c['numerator']}) AS numerator,
                    moopt_number({c['denominator']}) AS denominator
                FROM raw),
            checked AS (
                SELECT t.*, d.value_kind, d.period_type AS expected_period_type, d.breakdowns,
                    date_diff('month', t.period_start, t.period_end) + 1 AS span,
                    CAST(date_trunc('month', t.period_end) AS DATE) AS period,
                    CASE date_diff('month', t.period_start, t.period_end) + 1
                        WHEN 1 THEN 'month' WHEN 3 THEN 'quarter' WHEN 12 THEN 'rolling_12m' END AS period_type,
                    (SELECT count(*) FROM org_codes o WHERE o.org_level = t.org_level AND o.org_code = t.org_code) AS known_org,
                    row_number() OVER (PARTITION BY t.indicator_id, t.org_level, t.org_code, t.period_end, t.breakdown
                                       ORDER BY t.data_row) AS dup,
                    sum(CASE WHEN t.breakdown <> 'all' THEN t.numerator END) OVER key AS parts_numerator,
                    sum(CASE WHEN t.breakdown <> 'all' THEN t.denominator END) OVER key AS parts_denominator,
                    max(CASE WHEN t.breakdown = 'all' THEN t.numerator END) OVER key AS all_numerator,
                    max(CASE WHEN t.breakdown = 'all' THEN t.denominator END) OVER key AS all_denominator
                FROM typed t LEFT JOIN supplied_definitions d USING (indicator_id)
                WINDOW key AS (PARTITION BY t.indicator_id, t.org_level, t.org_code, t.period_start, t.period_end))
            SELECT *, CASE
                WHEN value_kind IS NULL THEN 'INDICATOR_ID is not a supplied indicator in the library'
                WHEN org_level NOT IN ('practice', 'pcn', 'sub_icb', 'icb', 'region') THEN 'ORG_LEVEL is not a level'
                WHEN known_org = 0 THEN 'ORG_CODE is not an organisation at that level in the organisation map'
                WHEN period_start IS NULL OR period_end IS NULL THEN 'PERIOD_START or PERIOD_END is not a date (YYYY-MM-DD)'
                WHEN day(period_start) <> 1 OR period_end <> last_day(period_end) OR period_type IS NULL
                    THEN 'the period is not 1, 3 or 12 whole months'
                WHEN period_type <> expected_period_type THEN 'the period length differs from the definition''s period_type'
                WHEN NOT list_contains(string_split(breakdowns, ','), breakdown) THEN 'BREAKDOWN is not one the definition lists'
                WHEN numerator IS NULL OR numerator < 0 THEN 'NUMERATOR is missing, non-numeric or negative'
                WHEN denominator IS NULL OR denominator < 0 THEN 'DENOMINATOR is missing, non-numeric or negative'
                WHEN value_kind = 'proportion' AND numerator > denominator THEN 'NUMERATOR exceeds DENOMINATOR for a proportion'
                WHEN dup > 1 THEN 'duplicate row (same indicator, organisation, period and breakdown)'
                WHEN parts_numerator IS NOT NULL AND (all_numerator IS NULL
                        OR abs(parts_numerator - all_numerator) > 1e-9 * greatest(1, all_numerator)
                        OR abs(parts_denominator - all_denominator) > 1e-9 * greatest(1, all_denominator))
                    THEN 'breakdown rows do not add up to the "all" row for this organisation and period'
            END AS reject_reason, {_quote(path.name)} AS source_file
            FROM checked"""
        staged = self._stage(path, tag, select, src.read_path)
        return self._finish(src, src.layout.name, "supplied", staged, tag,
                            ["indicator_id", "org_level", "org_code", "period", "period_type", "breakdown",
                             "numerator", "denominator", "source_file"],
                            SUPPLIED_REPLACES, max_reject_share, month_column="period", detail_sql=
                            "concat_ws(' ', indicator_id, org_level, org_code, breakdown)")

    def _ingest_qof(self, src: Source, indicators, max_reject_share: float) -> IngestReport:
        """QOF achievement: numerator and denominator rows per practice and QOF indicator code."""
        path = src.path
        # The year is in the archive's or the member's name (QOF2324.zip, ACHIEVEMENT_2324.csv).
        # (an extracted member is named <folder>__<archive>__<member>: the member's own name counts)
        named = Path(src.read_path.name.split("__")[-1]) if src.read_path != path else path
        match = re.search(r"(\d{2})(\d{2})", named.stem)
        if not match or (int(match.group(2)) - int(match.group(1))) % 100 != 1:
            raise IngestError(f"{path}: the QOF financial year must be in the file name, e.g. ACHIEVEMENT_2526.csv "
                              "for April 2025 to March 2026.")
        period = f"20{match.group(2)}-03-01"
        mapping = pd.DataFrame(
            [(code, i.id) for i in indicators if i.is_supplied and i.supplied["source_layout"] == "qof_achievement"
             for code in i.supplied["qof_indicator_codes"]], columns=["indicator_code", "indicator_id"])
        self.con.register("qof_mapping", mapping)
        tag = "qof_" + uuid.uuid4().hex[:8]
        c = {k: src.col(k) for k in src.columns}
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, *
                         FROM {self._read_csv(src.read_path, tag, src.n_columns)}),
            typed AS (
                SELECT data_row, upper({c['practice_code']}) AS practice_code,
                    upper({c['indicator_code']}) AS indicator_code, upper({c['measure']}) AS measure,
                    moopt_number({c['value']}) AS value
                FROM raw),
            used AS (
                SELECT t.*, m.indicator_id,
                    max(CASE WHEN measure = 'NUMERATOR' THEN value END) OVER w AS numerator,
                    max(CASE WHEN measure = 'DENOMINATOR' THEN value END) OVER w AS denominator,
                    count(*) FILTER (WHERE measure = 'NUMERATOR') OVER w AS n_num,
                    count(*) FILTER (WHERE measure = 'DENOMINATOR') OVER w AS n_den,
                    row_number() OVER (PARTITION BY practice_code, indicator_code, measure ORDER BY data_row) AS dup,
                    count(DISTINCT indicator_code) OVER (PARTITION BY practice_code, m.indicator_id) AS codes_for_indicator
                FROM typed t LEFT JOIN qof_mapping m USING (indicator_code)
                WINDOW w AS (PARTITION BY practice_code, indicator_code))
            SELECT *, 'practice' AS org_level, practice_code AS org_code, CAST('{period}' AS DATE) AS period,
                'rolling_12m' AS period_type, 'all' AS breakdown, CASE
                WHEN value IS NULL OR value < 0 THEN 'VALUE is missing, non-numeric or negative'
                WHEN dup > 1 THEN 'duplicate row (same practice, indicator and measure)'
                WHEN indicator_id IS NULL THEN NULL
                WHEN practice_code NOT IN (SELECT practice_code FROM organisations)
                    THEN 'PRACTICE_CODE is not a GP practice in the organisation map'
                WHEN codes_for_indicator > 1 THEN 'more than one QOF code for the same moopt indicator at this practice'
                WHEN n_num <> 1 OR n_den <> 1 THEN 'the practice lacks exactly one NUMERATOR and one DENOMINATOR row'
                WHEN numerator > denominator THEN 'NUMERATOR exceeds DENOMINATOR'
            END AS reject_reason, {_quote(path.name)} AS source_file
            FROM used"""
        staged = self._stage(path, tag, select, src.read_path)
        # Rows for QOF indicators moopt does not use, and the other measures, are valid input that is
        # not stored; one row per practice and indicator (the NUMERATOR row, carrying both) is kept.
        unused = self._keep_only(staged, "indicator_id IS NOT NULL AND measure = 'NUMERATOR'")
        return self._finish(src, "qof_achievement", "supplied", staged, tag,
                            ["indicator_id", "org_level", "org_code", "period", "period_type", "breakdown",
                             "numerator", "denominator", "source_file"],
                            SUPPLIED_REPLACES, max_reject_share, month_column="period", detail_sql=
                            "concat_ws(' ', practice_code, indicator_code, measure)", set_aside=unused,
                            note=f"{unused:,} rows for other QOF indicators and measures (the denominator is "
                                 "kept with its numerator) counted, not stored" if unused else "")

    def _require_organisations(self, path: Path) -> None:
        n = self.con.execute("SELECT count(*) FROM organisations").fetchall()[0][0]
        if n == 0:
            raise IngestError(f"{path}: load the practice mapping file before prescribing or list sizes "
                              "(unknown practices are checked against it).")

    # -- checks over the whole store ---------------------------------------------------------------

    def record_practices_without_list_size(self) -> int:
        """Rebuild ``practices_without_list_size``: practice-months with prescribing whose population
        is unknown, with the reason; return how many.

        Reasons: no list size in the files for that month; a list size of 0 (those rows were
        quarantined at ingest); or fewer than ``MIN_PLAUSIBLE_LIST_SIZE`` registered patients,
        which cannot be the population of a practice that prescribes. The indicator engine
        leaves every practice-month listed here out of numerator and denominator alike above
        practice level, and gives it no value per patient.
        """
        con = self.con
        con.execute("DELETE FROM practices_without_list_size")
        con.execute(f"""
            INSERT INTO practices_without_list_size
            WITH rx AS (SELECT DISTINCT month, practice_code FROM prescribing),
            lists AS (SELECT month, practice_code, sum(patients) AS patients FROM list_size GROUP BY ALL),
            zero AS (
                SELECT DISTINCT CAST(m.month || '-01' AS DATE) AS month, split_part(r.detail, ' ', 1) AS practice_code
                FROM rejects r JOIN ingest_log l ON l.file = r.file AND l.table_name = 'list_size',
                     unnest(string_split(l.months, ',')) AS m(month)
                WHERE r.reason = ?)
            SELECT rx.month, rx.practice_code, CASE
                WHEN lists.patients IS NOT NULL
                    THEN 'list size of ' || lists.patients || ' registered patients is implausibly small for a '
                         || 'practice that prescribes (under {MIN_PLAUSIBLE_LIST_SIZE})'
                WHEN zero.practice_code IS NOT NULL THEN '{ZERO_LIST_SIZE} (quarantined at ingest)'
                ELSE 'no list size in the files for this month' END
            FROM rx LEFT JOIN lists USING (month, practice_code)
                    LEFT JOIN zero ON zero.month = rx.month AND zero.practice_code = rx.practice_code
            WHERE lists.patients IS NULL OR lists.patients < {MIN_PLAUSIBLE_LIST_SIZE}
            ORDER BY 1, 2""", [ZERO_LIST_SIZE_REASON])
        return con.execute("SELECT count(*) FROM practices_without_list_size").fetchall()[0][0]

    def month_drops(self, share: float) -> list[str]:
        """Warnings for prescribing months holding fewer than ``1 - share`` times the rows of the
        month before (a file cut short, or part of a month missing)."""
        counts = self.con.execute("SELECT month, count(*) FROM prescribing GROUP BY month ORDER BY month").fetchall()
        return [f"prescribing {month:%Y-%m} has {n:,} rows, {1 - n / n_before:.0%} fewer than the {n_before:,} of "
                f"{before:%Y-%m} (more than data.month_drop_warning_share, {share:.0%}): check that its file is "
                "complete"
                for (before, n_before), (month, n) in zip(counts, counts[1:]) if n < (1 - share) * n_before]

    # -- queries -----------------------------------------------------------------------------------

    def months(self) -> list[str]:
        return [m.strftime("%Y-%m") for (m,) in
                self.con.execute("SELECT DISTINCT month FROM prescribing ORDER BY 1").fetchall()]

    def ingest_summary(self) -> pd.DataFrame:
        return self.con.execute("SELECT * FROM ingest_log ORDER BY table_name, file").fetchdf()


def _zip_members(path: Path) -> list[str]:
    """The CSV members of the zip archive ``path``; a broken archive is an IngestError."""
    try:
        return csv_members(path)
    except zipfile.BadZipFile as exc:
        raise IngestError(f"{path}: not a readable zip archive ({exc}).") from exc


def _not_utf8_message(path: Path, line: int, n_lines: int, text: str | None) -> str:
    """The refusal for a file with bytes that are not UTF-8, naming the first such line."""
    shown = (text or "").strip("\r\n")[:80]
    more = f" (and {n_lines - 1:,} more lines)" if n_lines > 1 else ""
    return (f"{path}: line {line}{more} holds bytes that are not UTF-8 text ({shown!r}): the file was saved "
            "in another encoding, probably Latin-1 or Windows-1252. Convert it to UTF-8 (e.g. "
            "iconv -f WINDOWS-1252 -t UTF-8) and run again; nothing from this file was stored.")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def _mixed_line_ends(path: Path) -> str | None:
    """Say where ``path`` first changes from one kind of line end (CRLF, LF or CR) to another."""
    names = {b"\r\n": "CRLF (Windows)", b"\n": "LF (Unix)", b"\r": "CR alone"}
    try:
        with _open_binary(path) as handle:
            first, line = None, 0
            for raw in handle:  # binary lines end at \n; a lone CR stays inside one
                line += 1
                end = b"\r\n" if raw.endswith(b"\r\n") else b"\n" if raw.endswith(b"\n") else None
                if b"\r" in raw[:len(raw) - len(end or b"")]:
                    end = b"\r"  # a CR with no LF after it ends a line of its own
                if end is None:
                    break
                if first is None:
                    first = end
                elif end != first:
                    return (f"line {line} ends with {names[end]} where the lines before it end with "
                            f"{names[first]}.")
    except (OSError, EOFError, zlib.error):
        return None
    return None


def _refuse_if_not_utf8(path: Path, read_path: Path) -> None:
    """Raise an :class:`IngestError` naming the first line of ``read_path`` that is not UTF-8.

    DuckDB checks the encoding only of the columns a query uses, so a name in another encoding
    in a column moopt does not store would pass unseen; the whole file is checked here (fast
    while the text is ASCII). Plain files only: a gzip file is left to DuckDB's check.
    """
    if str(read_path).lower().endswith(".gz"):
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(read_path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            pending = decoder.getstate()[0]  # the start of a character cut by the chunk boundary
            if pending or not chunk.isascii():
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    _raise_not_utf8(path, read_path, offset - len(pending) + exc.start)
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        _raise_not_utf8(path, read_path, offset - 1)


def _raise_not_utf8(path: Path, read_path: Path, at: int) -> None:
    """Raise the refusal for a byte at offset ``at`` that is not UTF-8, with its line."""
    with open(read_path, "rb") as handle:
        before = handle.read(max(at, 0))
        line_start = before.rfind(b"\n") + 1
        text = before[line_start:] + handle.readline()
    raise IngestError(_not_utf8_message(path, before.count(b"\n") + 1, 1, text.decode("utf-8", "replace")))


def _refuse_if_cut(path: Path, read_path: Path, first_row: list[str]) -> None:
    """Raise an :class:`IngestError` when ``read_path`` (read for ``path``) ends part-way through
    a record, with fewer fields than its first row (the legacy padding's blank last name aside)."""
    expected = len(first_row)
    while expected and not first_row[expected - 1].strip():
        expected -= 1
    cut = _cut_last_record(read_path, expected)
    if cut:
        line, fields = cut
        raise IngestError(
            f"{path}: the file ends part-way through a record: its last line ({line:,}) has {fields} of "
            f"{expected} fields and no line end. It looks truncated (an interrupted download or copy); "
            "fetch it again. Nothing from this file was stored.")


def _cut_last_record(path: Path, expected_fields: int) -> tuple[int, int] | None:
    """(line, fields) of the last record when ``path`` ends part-way through it, else None.

    Part-way means no line end after the last record and fewer fields than ``expected_fields``
    (an interrupted download or copy); a last line that is complete but lacks its line end is
    fine. Plain files only: a gzip stream cut short is refused by the reader already.
    """
    if str(path).lower().endswith(".gz"):
        return None
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        if size == 0:
            return None
        handle.seek(max(size - (1 << 20), 0))
        tail = handle.read()
    if tail.endswith((b"\n", b"\r")):
        return None
    start = tail.rfind(b"\n") + 1
    records = list(csv.reader(io.StringIO(tail[start:].decode("utf-8", errors="replace"), newline="")))
    if not records or len(records[-1]) >= expected_fields:
        return None
    with open(path, "rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b"")) + 1
    return lines, len(records[-1])


def _record_start_lines(path: Path, n_records: int) -> np.ndarray | None:
    """The line each CSV record of ``path`` starts on (blank lines skipped, quoted line breaks
    kept in their record), or None when every line is one record and the simple count holds."""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    newlines, last = 0, b"\n"
    with opener(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    if newlines + (last != b"\n") == n_records:
        return None
    starts = []
    with opener(path, "rt", newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        previous = 0
        for record in reader:
            if any(field.strip() for field in record):
                starts.append(previous + 1 + _leading_blank_lines(record, reader.line_num - previous))
            previous = reader.line_num
    return np.array(starts, dtype=np.int64) if len(starts) == n_records else None


def _leading_blank_lines(record: list[str], span: int) -> int:
    """csv.reader folds blank lines into the next record's span; they come first."""
    inner = sum(field.count("\n") for field in record)
    return max(span - 1 - inner, 0)


def _data_rows_to_lines(data_rows: np.ndarray, struct_lines: np.ndarray, header_lines: int = 1) -> np.ndarray:
    """File line numbers of parsed data rows, given the lines DuckDB rejected as malformed.

    With a header (line 1) and no malformed lines, data row k is line k + 1 (line k with no
    header); each malformed line at or before a row's line pushes it one line further down.
    """
    lines = data_rows + header_lines
    for _ in range(len(struct_lines) + 1):
        shifted = data_rows + header_lines + np.searchsorted(struct_lines, lines, side="right")
        if np.array_equal(shifted, lines):
            break
        lines = shifted
    return lines


def ingest_files(store: Store, organisations: str | Path | dict, prescribing: list[str | Path],
                 list_sizes: list[str | Path], practice_attributes: str | Path | None = None,
                 max_reject_share: float = 0.01, progress=None, supplied: list[str | Path] = (),
                 indicators=None, window: RunWindow | None = None,
                 reference: list[str | Path] = (), memory_limit: str | None = "2GB",
                 month_drop_share: float | None = 0.5) -> list[IngestReport]:
    """Ingest a run's files in dependency order and return one report per file.

    The whole file list is one transaction: if any file is refused (or anything fails) every
    table is left as it was, and the error says which file and why. After the files,
    ``practices_without_list_size`` is rebuilt (:meth:`Store.record_practices_without_list_size`)
    and a prescribing month with fewer rows than ``1 - month_drop_share`` times the month before
    it is reported as a warning (None: no check).

    DuckDB is held to ``memory_limit`` while ingesting (spilling to a folder beside the
    store), so a national month (7 GB of CSV) needs about that much memory, not its size.

    ``organisations`` is a practice mapping file, or a mapping of ODS files: ``epraccur``
    (+ ``eccg``, ``eauth`` for names), or ``map`` with an optional ``epraccur`` that then
    only supplies the cost centres that are not GP practices.
    """
    say = progress or (lambda msg: None)
    with store.memory_limit(memory_limit), store.transaction():
        reports = _ingest_all(store, organisations, prescribing, list_sizes, practice_attributes,
                              max_reject_share, say, supplied, indicators, window, reference)
        excluded = store.record_practices_without_list_size()
        if excluded:
            say(f"note: {excluded:,} practice-months with prescribing have no usable list size (listed with "
                "the reason in the store's practices_without_list_size table); they are left out of "
                "population-based indicators above practice level")
        if month_drop_share is not None:
            for warning in store.month_drops(month_drop_share):
                log.warning(warning)
                say(f"warning: {warning}")
    return reports


def _ingest_all(store, organisations, prescribing, list_sizes, practice_attributes, max_reject_share, say,
                supplied, indicators, window, reference) -> list[IngestReport]:
    if isinstance(organisations, dict) and organisations.get("map"):
        reports = [store.ingest_organisations(organisations["map"], max_reject_share)]
        say(reports[-1].line())
        if organisations.get("epraccur"):
            reports.append(store.ingest_ods_organisations(organisations["epraccur"],
                                                          max_reject_share=max_reject_share, hierarchy=False))
    elif isinstance(organisations, dict):
        reports = [store.ingest_ods_organisations(organisations["epraccur"], organisations.get("eccg"),
                                                  organisations.get("eauth"), max_reject_share)]
    else:
        reports = [store.ingest_organisations(organisations, max_reject_share)]
    say(reports[-1].line())
    if practice_attributes:
        reports.append(store.ingest_practice_attributes(practice_attributes, max_reject_share))
        say(reports[-1].line())
    steps = [("list sizes", list_sizes, lambda p: store.ingest_list_size(p, max_reject_share, window=window)),
             ("prescribing", prescribing, lambda p: store.ingest_prescribing(p, max_reject_share, window=window)),
             ("reference", reference, lambda p: store.ingest_reference(p, max_reject_share))]
    for label, paths, ingest in steps:
        for i, path in enumerate(paths, 1):
            start = time.perf_counter()
            reports.append(ingest(path))
            say(f"{label} {i}/{len(paths)}: {reports[-1].line()} [{time.perf_counter() - start:.1f}s]")
    if supplied:
        if indicators is None:
            from moopt.indicators.definitions import load_indicators
            indicators = load_indicators()
        for i, path in enumerate(supplied, 1):
            reports.append(store.ingest_supplied(path, indicators, max_reject_share))
            say(f"supplied {i}/{len(supplied)}: {reports[-1].line()}")
    return reports
