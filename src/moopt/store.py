"""The columnar store: validated ingest of published files into DuckDB.

One DuckDB file (``outputs/store/moopt.duckdb``) holds the canonical tables
the indicator engine reads:

``organisations``       practice -> PCN -> sub-ICB -> ICB -> region, one row per practice
``practice_attributes`` optional attributes used to choose peer groups
``prescribing``         one row per month x practice x BNF presentation x quantity per item
``list_size``           registered patients per month x practice x sex x quinary age band
``ingest_log``          one row per ingested file: rows read, accepted and rejected
``rejects``             every rejected row with its file, line and reason

Every file is validated on the way in. Rows that fail are quarantined to
``rejects`` (and a CSV beside the store) with a reason, never dropped
silently: for every file rows read = rows accepted + rows rejected. Ingest of
a file is one transaction that first deletes the months the file holds, so
re-running a month replaces it (idempotent) and a failure leaves the previous
store intact (atomic).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

import re

from moopt.atomic import write_csv_atomic
from moopt.sources.layouts import detect_layout

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS organisations (
    practice_code VARCHAR PRIMARY KEY, practice_name VARCHAR,
    pcn_code VARCHAR, pcn_name VARCHAR, sub_icb_code VARCHAR, sub_icb_name VARCHAR,
    icb_code VARCHAR, icb_name VARCHAR, region_code VARCHAR, region_name VARCHAR);
CREATE TABLE IF NOT EXISTS practice_attributes (
    practice_code VARCHAR PRIMARY KEY, deprivation_score DOUBLE, rural VARCHAR, care_home_beds BIGINT);
CREATE TABLE IF NOT EXISTS prescribing (
    month DATE, practice_code VARCHAR, bnf_code VARCHAR, quantity DOUBLE, items BIGINT,
    total_quantity DOUBLE, adq_usage DOUBLE, nic DOUBLE, actual_cost DOUBLE, source_file VARCHAR);
CREATE TABLE IF NOT EXISTS list_size (
    month DATE, practice_code VARCHAR, sex VARCHAR, age_lower INTEGER, patients BIGINT,
    source_file VARCHAR);
CREATE TABLE IF NOT EXISTS ingest_log (
    file VARCHAR, layout VARCHAR, table_name VARCHAR, rows_read BIGINT, rows_accepted BIGINT,
    rows_rejected BIGINT, months VARCHAR, file_size BIGINT, file_mtime DOUBLE,
    ingested_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS rejects (file VARCHAR, line BIGINT, reason VARCHAR, detail VARCHAR);
CREATE TABLE IF NOT EXISTS supplied (
    indicator_id VARCHAR, org_level VARCHAR, org_code VARCHAR, period DATE, period_type VARCHAR,
    breakdown VARCHAR, numerator DOUBLE, denominator DOUBLE, source_file VARCHAR);
"""

BNF_CODE_PATTERN = "[0-9A-Z]{15}|[0-9]{11}"  # presentations are 15 characters; appliances 11 digits
AGE_BANDS = ["0_4", "5_9", "10_14", "15_19", "20_24", "25_29", "30_34", "35_39", "40_44", "45_49",
             "50_54", "55_59", "60_64", "65_69", "70_74", "75_79", "80_84", "85_89", "90_94", "95+"]


ORGANISATION_COLUMNS = ["practice_code", "practice_name", "pcn_code", "pcn_name", "sub_icb_code",
                        "sub_icb_name", "icb_code", "icb_name", "region_code", "region_name"]


def _code_check(column: str, what: str, longest: int = 12) -> str:
    """A CASE branch rejecting a blank or malformed organisation code (codes become file names)."""
    return (f"WHEN NOT regexp_full_match(coalesce({column}, ''), '[A-Z0-9]{{1,{longest}}}') "
            f"THEN '{what} is blank or malformed'")


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

    def line(self) -> str:
        if self.skipped:
            return f"{Path(self.file).name}: unchanged since last ingest, kept"
        text = (f"{Path(self.file).name}: {self.rows_read:,} rows read, "
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
        self.rejects_dir = self.path.parent / "rejects"

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- helpers ---------------------------------------------------------------------------

    def _unchanged(self, path: Path) -> bool:
        stat = path.stat()
        row = self.con.execute(
            "SELECT count(*) FROM ingest_log WHERE file = ? AND file_size = ? AND file_mtime = ?",
            [str(path), stat.st_size, stat.st_mtime],
        ).fetchall()[0]
        return bool(row and row[0])

    def _read_csv(self, path: Path, tag: str) -> str:
        return (f"read_csv({_quote(path)}, all_varchar=true, header=true, store_rejects=true, "
                f"rejects_table='{tag}_rej', rejects_scan='{tag}_scan')")

    def _finish(self, path: Path, layout: str, table: str, staged: str, tag: str,
                columns: list[str], month_filter: bool | str, max_reject_share: float,
                detail_sql: str) -> IngestReport:
        """Move accepted rows of ``staged`` into ``table``; quarantine the rest."""
        con = self.con
        struct = con.execute(
            # DuckDB records one error per missing column; a line is one reject.
            f"SELECT line, 'malformed CSV line: ' || arg_min(error_message, column_idx), "
            f"any_value(csv_line) FROM {tag}_rej GROUP BY line ORDER BY line"
        ).fetchall() if _table_exists(con, f"{tag}_rej") else []
        struct_lines = np.array(sorted(r[0] for r in struct), dtype=np.int64)
        bad = con.execute(
            f"SELECT data_row, reject_reason, {detail_sql} FROM {staged} WHERE reject_reason IS NOT NULL"
        ).fetchdf()
        bad_lines = _data_rows_to_lines(bad["data_row"].to_numpy(np.int64), struct_lines)
        rejects = pd.concat(
            [
                pd.DataFrame({"file": str(path), "line": bad_lines,
                              "reason": bad["reject_reason"].astype(str),
                              "detail": bad.iloc[:, 2].astype(str)}),
                pd.DataFrame({"file": str(path), "line": [r[0] for r in struct],
                              "reason": [r[1] for r in struct], "detail": [r[2] for r in struct]}),
            ],
            ignore_index=True,
        )
        n_parsed, n_good = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE reject_reason IS NULL) FROM {staged}"
        ).fetchall()[0]
        rows_read = n_parsed + len(struct)
        rows_rejected = len(rejects)
        reasons = rejects["reason"].value_counts().to_dict() if rows_rejected else {}
        # month_filter: True replaces the months the file holds; a string names the period column
        # and key columns to replace by (supplied data); False replaces the whole table.
        month_col = "month" if month_filter is True else "period"
        months = [m.strftime("%Y-%m") for (m,) in con.execute(
            f"SELECT DISTINCT {month_col} FROM {staged} WHERE reject_reason IS NULL ORDER BY 1").fetchall()] \
            if month_filter else []
        report = IngestReport(str(path), layout, table, rows_read, n_good, rows_rejected, months,
                              {str(k): int(v) for k, v in reasons.items()})
        assert report.rows_read == report.rows_accepted + report.rows_rejected
        if rows_rejected:
            self._write_rejects_csv(path, rejects)
        share = rows_rejected / rows_read if rows_read else 0.0
        if share > max_reject_share:
            top = "; ".join(f"{n:,} {r}" for r, n in list(reasons.items())[:5])
            raise IngestError(
                f"{path}: {rows_rejected:,} of {rows_read:,} rows rejected ({share:.1%}), more than the "
                f"allowed {max_reject_share:.1%} (data.max_reject_share). Reasons: {top}. "
                f"The rejected rows are in {self._rejects_csv(path)}; the store was not changed."
            )
        stat = path.stat()
        cols = ", ".join(columns)
        con.execute("BEGIN TRANSACTION")
        try:
            if month_filter is True:
                con.execute(f"DELETE FROM {table} WHERE month IN "
                            f"(SELECT DISTINCT month FROM {staged} WHERE reject_reason IS NULL)")
            elif month_filter:
                con.execute(f"DELETE FROM {table} WHERE ({month_filter}) IN "
                            f"(SELECT DISTINCT {month_filter} FROM {staged} WHERE reject_reason IS NULL)")
            else:
                con.execute(f"DELETE FROM {table}")
            con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {staged} "
                        f"WHERE reject_reason IS NULL ORDER BY data_row")
            con.execute("DELETE FROM rejects WHERE file = ?", [str(path)])
            if rows_rejected:
                con.register("rejects_df", rejects)
                con.execute("INSERT INTO rejects SELECT file, line, reason, detail FROM rejects_df")
                con.unregister("rejects_df")
            con.execute("DELETE FROM ingest_log WHERE file = ?", [str(path)])
            con.execute(
                "INSERT INTO ingest_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
                [str(path), layout, table, rows_read, n_good, rows_rejected, ",".join(months),
                 stat.st_size, stat.st_mtime],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        finally:
            for suffix in ("_rej", "_scan"):
                con.execute(f"DROP TABLE IF EXISTS {tag}{suffix}")
            con.execute(f"DROP TABLE IF EXISTS {staged}")
        return report

    def _rejects_csv(self, path: Path) -> Path:
        # The parent folder is part of the name: published files of different months share names.
        return self.rejects_dir / f"{path.parent.name}__{path.name}.rejects.csv"

    def _write_rejects_csv(self, path: Path, rejects: pd.DataFrame) -> None:
        write_csv_atomic(rejects, self._rejects_csv(path))

    def _keep_only(self, staged: str, condition: str) -> int:
        """Keep rejected rows and rows meeting ``condition``; return how many were set aside.

        Rows set aside are valid input that is not stored (summary rows, measures or cost
        centres moopt does not use); :meth:`_count_set_aside` adds them to the file's read
        and accepted counts, so nothing is lost from the accounts.
        """
        before = self.con.execute(f"SELECT count(*) FROM {staged}").fetchall()[0][0]
        self.con.execute(f"CREATE TEMP TABLE {staged}_kept AS SELECT * FROM {staged} "
                         f"WHERE reject_reason IS NOT NULL OR ({condition})")
        after = self.con.execute(f"SELECT count(*) FROM {staged}_kept").fetchall()[0][0]
        self.con.execute(f"DROP TABLE {staged}")
        self.con.execute(f"ALTER TABLE {staged}_kept RENAME TO {staged}")
        return before - after

    def _count_set_aside(self, report: IngestReport, path: Path, set_aside: int) -> IngestReport:
        report.rows_read += set_aside
        report.rows_accepted += set_aside
        self.con.execute("UPDATE ingest_log SET rows_read = ?, rows_accepted = ? WHERE file = ?",
                         [report.rows_read, report.rows_accepted, str(path)])
        return report

    def _stage(self, path: Path, tag: str, select_sql: str) -> str:
        staged = f"staged_{tag}"
        try:
            self.con.execute(f"CREATE TEMP TABLE {staged} AS {select_sql}")
        except duckdb.Error as exc:
            raise IngestError(f"{path}: could not be read as CSV ({exc}).") from exc
        return staged

    # -- organisations -----------------------------------------------------------------------

    def ingest_organisations(self, path: str | Path, max_reject_share: float = 0.01) -> IngestReport:
        """Load a practice mapping file (sub-ICB or CCG era); it replaces the organisation table."""
        path = Path(path)
        layout, cols = detect_layout(path, "organisations")
        tag = "org_" + uuid.uuid4().hex[:8]
        c = {k: f'trim("{v}")' for k, v in cols.items()}
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, * FROM {self._read_csv(path, tag)}),
            typed AS (
                SELECT data_row, upper({c['practice_code']}) AS practice_code, {c['practice_name']} AS practice_name,
                       upper({c['pcn_code']}) AS pcn_code, {c['pcn_name']} AS pcn_name,
                       upper({c['sub_icb_code']}) AS sub_icb_code, {c['sub_icb_name']} AS sub_icb_name,
                       upper({c['icb_code']}) AS icb_code, {c['icb_name']} AS icb_name,
                       upper({c['region_code']}) AS region_code, {c['region_name']} AS region_name
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
        staged = self._stage(path, tag, select)
        return self._finish(path, layout.name, "organisations", staged, tag, ORGANISATION_COLUMNS, False,
                            max_reject_share, "coalesce(practice_code, '')")

    def ingest_ods_organisations(self, epraccur: str | Path, eccg: str | Path | None = None,
                                 eauth: str | Path | None = None,
                                 max_reject_share: float = 0.01) -> IngestReport:
        """Build the organisation table from ODS files (no header, 27 columns, every field quoted).

        ``epraccur`` gives each prescribing cost centre's commissioner (column 15: CCG or sub-ICB),
        higher-level health geography (column 4) and national grouping (column 3). Only GP
        practices (prescribing setting 4, column 26) are organisations; other cost centres
        (out-of-hours, walk-in, prisons ...) are read and counted but not stored, so their
        prescribing is reported as not belonging to a GP practice. ODS files carry no PCN: each
        practice gets its commissioner's "no PCN" group (code U + commissioner). Names come from
        ``eccg`` (commissioners) and ``eauth`` (area teams and regions) when given, else the codes.
        """
        path = Path(epraccur)
        if not path.exists():
            raise IngestError(f"{path}: file not found.")
        tag = "ods_" + uuid.uuid4().hex[:8]
        names = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(1, 28))

        def ods(file: Path, suffix: str) -> str:
            return (f"read_csv({_quote(file)}, header=false, columns={{{names}}}, quote='\"', "
                    f"store_rejects=true, rejects_table='{tag}{suffix}_rej', rejects_scan='{tag}{suffix}_scan')")

        lookups = []
        for label, file in (("ccg", eccg), ("auth", eauth)):
            if file:
                self.con.execute(f"CREATE OR REPLACE TEMP TABLE {tag}_{label} AS "
                                 f"SELECT trim(c1) AS code, trim(c2) AS name FROM {ods(Path(file), label)}")
            else:
                self.con.execute(f"CREATE OR REPLACE TEMP TABLE {tag}_{label} (code VARCHAR, name VARCHAR)")
            lookups.append(f"{tag}_{label}")
        ccg, auth = lookups
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, * FROM {ods(path, '')}),
            typed AS (
                SELECT data_row, upper(trim(c1)) AS practice_code, trim(c2) AS practice_name,
                    upper(trim(c3)) AS region_code, upper(trim(c4)) AS icb_code,
                    upper(trim(c15)) AS sub_icb_code, trim(c26) AS setting
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
        staged = self._stage(path, tag, select)
        not_gp = self._keep_only(staged, "setting = '4'")  # other cost centres: counted, not stored
        report = self._finish(path, "ods_epraccur", "organisations", staged, tag, ORGANISATION_COLUMNS, False,
                              max_reject_share, "coalesce(practice_code, '')")
        report.note = f"{not_gp:,} cost centres that are not GP practices counted, not stored"
        self._count_set_aside(report, path, not_gp)
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
                       TRY_CAST(DEPRIVATION_SCORE AS DOUBLE) AS deprivation_score,
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
                            ["practice_code", "deprivation_score", "rural", "care_home_beds"], False,
                            max_reject_share, "coalesce(practice_code, '')")

    # -- prescribing ---------------------------------------------------------------------------

    def ingest_prescribing(self, path: str | Path, max_reject_share: float = 0.01,
                           force: bool = False) -> IngestReport:
        """Validate one English Prescribing Dataset file and replace its months in the store."""
        path = Path(path)
        layout, cols = detect_layout(path, "prescribing")
        if not force and self._unchanged(path):
            return IngestReport(str(path), layout.name, "prescribing", 0, 0, 0, skipped=True)
        self._require_organisations(path)
        tag = "epd_" + uuid.uuid4().hex[:8]
        c = {k: f'trim("{v}")' for k, v in cols.items()}
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, * FROM {self._read_csv(path, tag)}),
            typed AS (
                SELECT data_row,
                    TRY_CAST(try_strptime(regexp_replace({c['year_month']}, '[-_]', '', 'g'), '%Y%m') AS DATE) AS month,
                    upper({c['practice_code']}) AS practice_code,
                    upper({c['bnf_code']}) AS bnf_code,
                    TRY_CAST({c['quantity']} AS DOUBLE) AS quantity,
                    TRY_CAST({c['items']} AS DOUBLE) AS items_raw,
                    TRY_CAST({c['total_quantity']} AS DOUBLE) AS total_quantity,
                    TRY_CAST({c['adq_usage']} AS DOUBLE) AS adq_usage,
                    TRY_CAST({c['nic']} AS DOUBLE) AS nic,
                    TRY_CAST({c['actual_cost']} AS DOUBLE) AS actual_cost
                FROM raw),
            numbered AS (
                SELECT *, CAST(items_raw AS BIGINT) AS items,
                    row_number() OVER (PARTITION BY month, practice_code, bnf_code, quantity ORDER BY data_row) AS dup
                FROM typed)
            SELECT *, CASE
                WHEN month IS NULL THEN 'YEAR_MONTH is not a month (YYYYMM, YYYY-MM or YYYY_MM)'
                WHEN coalesce(practice_code, '') = '' THEN 'PRACTICE_CODE is blank'
                WHEN NOT regexp_full_match(coalesce(bnf_code, ''), '{BNF_CODE_PATTERN}') THEN 'BNF code is malformed'
                WHEN items_raw IS NULL OR items_raw <> floor(items_raw) THEN 'ITEMS is not a whole number'
                WHEN items_raw < 0 THEN 'ITEMS is negative'
                WHEN quantity IS NULL OR quantity < 0 THEN 'QUANTITY is missing, non-numeric or negative'
                WHEN total_quantity IS NULL OR total_quantity < 0 THEN 'TOTAL_QUANTITY is missing, non-numeric or negative'
                WHEN adq_usage IS NULL OR adq_usage < 0 THEN 'ADQ usage is missing, non-numeric or negative'
                WHEN nic IS NULL OR nic < 0 THEN 'NIC is missing, non-numeric or negative'
                WHEN actual_cost IS NULL OR actual_cost < 0 THEN 'ACTUAL_COST is missing, non-numeric or negative'
                WHEN practice_code NOT IN (SELECT practice_code FROM organisations)
                    THEN 'PRACTICE_CODE is not a GP practice in the organisation map'
                WHEN dup > 1 THEN 'duplicate row (same month, practice, BNF code and quantity per item)'
            END AS reject_reason, {_quote(path.name)} AS source_file
            FROM numbered"""
        staged = self._stage(path, tag, select)
        columns = ["month", "practice_code", "bnf_code", "quantity", "items", "total_quantity",
                   "adq_usage", "nic", "actual_cost", "source_file"]
        return self._finish(path, layout.name, "prescribing", staged, tag, columns, True,
                            max_reject_share,
                            "concat_ws(' ', practice_code, bnf_code)")

    # -- list sizes --------------------------------------------------------------------------------

    def ingest_list_size(self, path: str | Path, max_reject_share: float = 0.01,
                         force: bool = False) -> IngestReport:
        """Validate one quinary age/sex list-size file and replace its months in the store.

        Rows for other organisation types (PCN, sub-ICB ... in the national file)
        and the ALL-age/ALL-sex total rows are summaries of the band rows: they are
        counted as accepted-but-summary in the log only through the band rows, so
        here they are not stored and not counted as rejects. The totals are
        checked against the bands: a practice whose bands do not add up to its
        total is rejected.
        """
        path = Path(path)
        layout, cols = detect_layout(path, "list_size")
        if not force and self._unchanged(path):
            return IngestReport(str(path), layout.name, "list_size", 0, 0, 0, skipped=True)
        self._require_organisations(path)
        tag = "ls_" + uuid.uuid4().hex[:8]
        c = {k: f'trim("{v}")' for k, v in cols.items()}
        bands = ", ".join(_quote(b) for b in AGE_BANDS)
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, * FROM {self._read_csv(path, tag)}),
            typed AS (
                SELECT data_row,
                    TRY_CAST(date_trunc('month', try_strptime({c['extract_date']},
                        ['%d%b%Y', '%d-%b-%y', '%d-%b-%Y', '%Y-%m-%d', '%d/%m/%Y'])) AS DATE) AS month,
                    upper({c['org_type']}) AS org_type, upper({c['practice_code']}) AS practice_code,
                    upper({c['sex']}) AS sex_raw, upper({c['age_group']}) AS age_group,
                    TRY_CAST({c['patients']} AS DOUBLE) AS patients_raw
                FROM raw),
            checked AS (
                SELECT *,
                    CASE WHEN sex_raw = 'MALE' THEN 'male' WHEN sex_raw = 'FEMALE' THEN 'female' END AS sex,
                    TRY_CAST(split_part(replace(age_group, '+', '_'), '_', 1) AS INTEGER) AS age_lower,
                    CAST(patients_raw AS BIGINT) AS patients,
                    sum(CASE WHEN sex_raw IN ('MALE', 'FEMALE') AND age_group <> 'ALL' THEN patients_raw END)
                        OVER (PARTITION BY practice_code, month) AS band_total,
                    max(CASE WHEN sex_raw = 'ALL' AND age_group = 'ALL' THEN patients_raw END)
                        OVER (PARTITION BY practice_code, month) AS stated_total,
                    row_number() OVER (PARTITION BY month, practice_code, sex_raw, age_group ORDER BY data_row) AS dup
                FROM typed)
            SELECT *, CASE
                WHEN month IS NULL THEN 'EXTRACT_DATE is not a recognised date'
                WHEN org_type <> 'GP' THEN NULL
                WHEN sex_raw NOT IN ('ALL', 'MALE', 'FEMALE') THEN 'SEX is not ALL, MALE or FEMALE'
                WHEN age_group <> 'ALL' AND age_group NOT IN ({bands}) THEN 'AGE_GROUP_5 is not a quinary band'
                WHEN patients_raw IS NULL OR patients_raw <> floor(patients_raw) THEN 'NUMBER_OF_PATIENTS is not a whole number'
                WHEN patients_raw < 0 THEN 'NUMBER_OF_PATIENTS is negative'
                WHEN practice_code NOT IN (SELECT practice_code FROM organisations)
                    THEN 'practice code is not in the organisation map'
                WHEN dup > 1 THEN 'duplicate row (same month, practice, sex and age band)'
                WHEN stated_total IS NOT NULL AND band_total IS NOT NULL AND stated_total <> band_total
                    THEN 'age/sex bands do not add up to the practice total'
            END AS reject_reason, {_quote(path.name)} AS source_file
            FROM checked"""
        staged = self._stage(path, tag, select)
        # Summary rows (other organisation types, ALL totals) are totals of the band rows we store.
        summary_rows = self._keep_only(staged, "org_type = 'GP' AND sex IS NOT NULL AND age_group <> 'ALL'")
        report = self._finish(path, layout.name, "list_size", staged, tag,
                              ["month", "practice_code", "sex", "age_lower", "patients", "source_file"],
                              True, max_reject_share, "concat_ws(' ', practice_code, sex_raw, age_group)")
        return self._count_set_aside(report, path, summary_rows)

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
        path = Path(path)
        layout, cols = detect_layout(path, "supplied")
        if not force and self._unchanged(path):
            return IngestReport(str(path), layout.name, "supplied", 0, 0, 0, skipped=True)
        self._require_organisations(path)
        self._register_supplied_definitions(indicators)
        if layout.name == "qof_achievement":
            return self._ingest_qof(path, cols, indicators, max_reject_share)
        tag = "sup_" + uuid.uuid4().hex[:8]
        c = {k: f'trim("{v}")' for k, v in cols.items()}
        breakdown = c.get("breakdown", "'all'")
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, * FROM {self._read_csv(path, tag)}),
            typed AS (
                SELECT data_row, upper({c['indicator_id']}) AS indicator_id, lower({c['org_level']}) AS org_level,
                    upper({c['org_code']}) AS org_code,
                    TRY_CAST({c['period_start']} AS DATE) AS period_start,
                    TRY_CAST({c['period_end']} AS DATE) AS period_end,
                    lower(coalesce(nullif({breakdown}, ''), 'all')) AS breakdown,
                    TRY_CAST({c['numerator']} AS DOUBLE) AS numerator,
                    TRY_CAST({c['denominator']} AS DOUBLE) AS denominator
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
        staged = self._stage(path, tag, select)
        return self._finish(path, layout.name, "supplied", staged, tag,
                            ["indicator_id", "org_level", "org_code", "period", "period_type", "breakdown",
                             "numerator", "denominator", "source_file"],
                            "indicator_id, period", max_reject_share,
                            "concat_ws(' ', indicator_id, org_level, org_code, breakdown)")

    def _ingest_qof(self, path: Path, cols: dict, indicators, max_reject_share: float) -> IngestReport:
        """QOF achievement: numerator and denominator rows per practice and QOF indicator code."""
        match = re.search(r"(\d{2})(\d{2})", path.stem)
        if not match or (int(match.group(2)) - int(match.group(1))) % 100 != 1:
            raise IngestError(f"{path}: the QOF financial year must be in the file name, e.g. ACHIEVEMENT_2526.csv "
                              "for April 2025 to March 2026.")
        period = f"20{match.group(2)}-03-01"
        mapping = pd.DataFrame(
            [(code, i.id) for i in indicators if i.is_supplied and i.supplied["source_layout"] == "qof_achievement"
             for code in i.supplied["qof_indicator_codes"]], columns=["indicator_code", "indicator_id"])
        self.con.register("qof_mapping", mapping)
        tag = "qof_" + uuid.uuid4().hex[:8]
        c = {k: f'trim("{v}")' for k, v in cols.items()}
        select = f"""
            WITH raw AS (SELECT row_number() OVER () AS data_row, * FROM {self._read_csv(path, tag)}),
            typed AS (
                SELECT data_row, upper({c['practice_code']}) AS practice_code,
                    upper({c['indicator_code']}) AS indicator_code, upper({c['measure']}) AS measure,
                    TRY_CAST({c['value']} AS DOUBLE) AS value
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
        staged = self._stage(path, tag, select)
        # Rows for QOF indicators moopt does not use, and the other measures, are valid input that is
        # not stored; one row per practice and indicator (the NUMERATOR row, carrying both) is kept.
        unused = self._keep_only(staged, "indicator_id IS NOT NULL AND measure = 'NUMERATOR'")
        report = self._finish(path, "qof_achievement", "supplied", staged, tag,
                              ["indicator_id", "org_level", "org_code", "period", "period_type", "breakdown",
                               "numerator", "denominator", "source_file"],
                              "indicator_id, period", max_reject_share,
                              "concat_ws(' ', practice_code, indicator_code, measure)")
        return self._count_set_aside(report, path, unused)

    def _require_organisations(self, path: Path) -> None:
        n = self.con.execute("SELECT count(*) FROM organisations").fetchall()[0][0]
        if n == 0:
            raise IngestError(f"{path}: load the practice mapping file before prescribing or list sizes "
                              "(unknown practices are checked against it).")

    # -- queries -----------------------------------------------------------------------------------

    def months(self) -> list[str]:
        return [m.strftime("%Y-%m") for (m,) in
                self.con.execute("SELECT DISTINCT month FROM prescribing ORDER BY 1").fetchall()]

    def ingest_summary(self) -> pd.DataFrame:
        return self.con.execute("SELECT * FROM ingest_log ORDER BY table_name, file").fetchdf()


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


def _data_rows_to_lines(data_rows: np.ndarray, struct_lines: np.ndarray) -> np.ndarray:
    """File line numbers of parsed data rows, given the lines DuckDB rejected as malformed.

    Line 1 is the header. Without malformed lines, data row k is line k + 1; each
    malformed line at or before a row's line pushes it one line further down.
    """
    lines = data_rows + 1
    for _ in range(len(struct_lines) + 1):
        shifted = data_rows + 1 + np.searchsorted(struct_lines, lines, side="right")
        if np.array_equal(shifted, lines):
            break
        lines = shifted
    return lines


def ingest_files(store: Store, organisations: str | Path | dict, prescribing: list[str | Path],
                 list_sizes: list[str | Path], practice_attributes: str | Path | None = None,
                 max_reject_share: float = 0.01, progress=None, supplied: list[str | Path] = (),
                 indicators=None) -> list[IngestReport]:
    """Ingest a run's files in dependency order and return one report per file."""
    say = progress or (lambda msg: None)
    if isinstance(organisations, dict):  # ODS files: epraccur (+ eccg, eauth for names)
        reports = [store.ingest_ods_organisations(organisations["epraccur"], organisations.get("eccg"),
                                                  organisations.get("eauth"), max_reject_share)]
    else:
        reports = [store.ingest_organisations(organisations, max_reject_share)]
    say(reports[-1].line())
    if practice_attributes:
        reports.append(store.ingest_practice_attributes(practice_attributes, max_reject_share))
        say(reports[-1].line())
    for i, path in enumerate(list_sizes, 1):
        start = time.perf_counter()
        reports.append(store.ingest_list_size(path, max_reject_share))
        say(f"list sizes {i}/{len(list_sizes)}: {reports[-1].line()} [{time.perf_counter() - start:.1f}s]")
    for i, path in enumerate(prescribing, 1):
        start = time.perf_counter()
        reports.append(store.ingest_prescribing(path, max_reject_share))
        say(f"prescribing {i}/{len(prescribing)}: {reports[-1].line()} [{time.perf_counter() - start:.1f}s]")
    if supplied:
        if indicators is None:
            from moopt.indicators.definitions import load_indicators
            indicators = load_indicators()
        for i, path in enumerate(supplied, 1):
            reports.append(store.ingest_supplied(path, indicators, max_reject_share))
            say(f"supplied {i}/{len(supplied)}: {reports[-1].line()}")
    return reports
