"""Hostile probes of ingest on the real 2017 sample (issue 10), and the README's ingest promises.

Each test copies the sample (``parameters/real-sample-2017.yml``: two months of four
practices, with their list sizes and ODS files) to a temporary folder, damages a copy the
way a user or an interrupted download might, and runs ingest as ``moopt ingest`` does
(:func:`ingest` below calls the same library functions in the same order).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import ibis
import pandas as pd
import pytest

from moopt.config import load_config
from moopt.indicators.definitions import load_indicators
from moopt.indicators.engine import IndicatorEngine
from moopt.pipeline import ensure_data, ingest_run, reset_store_if_data_changed
from moopt.store import IngestError, Store

SEPTEMBER_ROWS, OCTOBER_ROWS = 10_027, 10_223


@pytest.fixture
def sample(realdata, tmp_path) -> Path:
    """The real 2017 sample copied to ``tmp_path``, with a run file ``run.yml`` naming the copies."""
    e2e = realdata / "openprescribing"
    for name in ("epraccur.csv", "eccg.csv", "eauth.csv", "epd_201709.csv"):
        shutil.copy(e2e / "e2e-data-1" / name, tmp_path / name)
    shutil.copy(e2e / "e2e-data-2" / "epd_201710.csv", tmp_path / "epd_201710.csv")
    for folder, month in (("e2e-data-1", "09"), ("e2e-data-2", "10")):
        shutil.copy(e2e / folder / "gp-reg-pat-prac-quin-age.csv", tmp_path / f"list_2017{month}.csv")
    write_run_file(tmp_path, ["epd_201709.csv", "epd_201710.csv"])
    return tmp_path


def write_run_file(folder: Path, epd: list[str]) -> Path:
    run = folder / "run.yml"
    run.write_text(
        "data:\n  source: files\n"
        "  organisations: {epraccur: epraccur.csv, eccg: eccg.csv, eauth: eauth.csv}\n"
        f"  epd: [{', '.join(epd)}]\n"
        "  list_sizes: [list_201709.csv, list_201710.csv]\n"
        "period: {months: 2}\norganisations: {level: sub_icb}\noutputs: out\n")
    return run


def ingest(folder: Path, said: list[str] | None = None):
    """What `moopt ingest --params run.yml` does, returning the reports."""
    config = load_config(folder / "run.yml", project_dir=folder)
    files = ensure_data(config)
    reset_store_if_data_changed(config.store_path, files)
    with Store(config.store_path) as store:
        return ingest_run(store, config, files, (said if said is not None else []).append)


def store_path(folder: Path) -> Path:
    return folder / "out" / "store" / "moopt.duckdb"


def query(folder: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(store_path(folder)), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def month_rows(folder: Path) -> dict[str, int]:
    return {str(m)[:7]: n for m, n in query(folder, "SELECT month, count(*) FROM prescribing GROUP BY 1")}


def store_digest(folder: Path) -> dict[str, str]:
    """A hash of every table's full contents (rows in a fixed order), by table name."""
    con = duckdb.connect(str(store_path(folder)), read_only=True)
    try:
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY 1").fetchall()]
        return {t: hashlib.sha256(repr(con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()).encode())
                .hexdigest() for t in tables}
    finally:
        con.close()


def rejects_csvs_agree_with_table(folder: Path) -> None:
    """The rejects CSVs beside the store hold exactly the rows of the store's rejects table."""
    rejects_dir = store_path(folder).parent / "rejects"
    written = sorted(rejects_dir.glob("*.rejects.csv")) if rejects_dir.is_dir() else []
    from_csvs = sorted((str(r.file), int(r.line), str(r.reason)) for path in written
                       for r in pd.read_csv(path, dtype=str, keep_default_na=False).itertuples())
    assert from_csvs == sorted(query(folder, "SELECT file, line, reason FROM rejects"))


def data_lines(path: Path) -> int:
    """Lines after the header that hold anything."""
    return sum(1 for line in path.read_bytes().splitlines()[1:] if line.strip())


# -- probe 1: a stray row of another month ------------------------------------------------------------

def test_stray_row_of_another_month_does_not_wipe_that_month(sample):
    ingest(sample)
    october = sample / "epd_201710.csv"
    lines = october.read_text().splitlines(keepends=True)
    lines.insert(40, lines[40].replace("2017_10", "2017_09", 1))
    october.write_text("".join(lines))
    reports = ingest(sample)
    assert month_rows(sample) == {"2017-09": SEPTEMBER_ROWS, "2017-10": OCTOBER_ROWS}
    (report,) = [r for r in reports if r.file == str(october)]
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (OCTOBER_ROWS + 1, OCTOBER_ROWS, 1)
    ((line, reason),) = query(sample, "SELECT line, reason FROM rejects")
    assert line == 41 and "2017-09 is a stray" in reason
    ingest(sample)  # a later run of the same files keeps both months
    assert month_rows(sample) == {"2017-09": SEPTEMBER_ROWS, "2017-10": OCTOBER_ROWS}


# -- probe 2: a refused file, and the promise that a refused file leaves the store unchanged -----------

def add_november_with_bad_rows(folder: Path, bad_share: float) -> Path:
    """A third month (October relabelled) with ``bad_share`` of its rows' ITEMS made non-numeric."""
    lines = (folder / "epd_201710.csv").read_text().splitlines(keepends=True)
    header, rows = lines[0], [line.replace("2017_10", "2017_11", 1) for line in lines[1:]]
    step = int(1 / bad_share)
    for i in range(0, len(rows), step):
        fields = rows[i].split(",")
        fields[-6] = "lots"  # ITEMS, counted from the right past the quoted area-team names
        rows[i] = ",".join(fields)
    november = folder / "epd_201711.csv"
    november.write_text(header + "".join(rows))
    write_run_file(folder, ["epd_201709.csv", "epd_201710.csv", "epd_201711.csv"])
    return november


def test_a_refused_file_leaves_the_store_unchanged(sample):
    september = sample / "epd_201709.csv"
    text = september.read_text().splitlines(keepends=True)
    text[5] = text[5].replace("B85", "Z99", 1) if "B85" in text[5] else text[5].replace("L84", "Z99", 1)
    september.write_text("".join(text))  # one rejected row, so the store holds a reject and its CSV
    ingest(sample)
    before = store_digest(sample)
    assert query(sample, "SELECT count(*) FROM rejects") == [(1,)]
    rejects_csvs_agree_with_table(sample)
    november = add_november_with_bad_rows(sample, 0.03)
    with pytest.raises(IngestError) as refused:
        ingest(sample)
    message = str(refused.value)
    assert str(november) in message and "the store was not changed" in message
    assert store_digest(sample) == before  # every table, row for row
    assert month_rows(sample) == {"2017-09": SEPTEMBER_ROWS - 1, "2017-10": OCTOBER_ROWS}
    rejects_csvs_agree_with_table(sample)
    refused_csv = next((store_path(sample).parent / "rejects").glob("*epd_201711.csv.refused.csv"))
    assert str(refused_csv) in message and len(pd.read_csv(refused_csv)) > 0.02 * OCTOBER_ROWS


def test_store_writes_are_atomic_when_a_later_file_fails(sample):
    """A file DuckDB cannot read at all, after others were ingested in the same run, undoes the run."""
    ingest(sample)
    before = store_digest(sample)
    september = sample / "epd_201709.csv"
    september.write_text(september.read_text().replace("2017_09", "2017_9X", 3))  # 3 rows rejected
    october = sample / "epd_201710.csv"
    lines = october.read_bytes().splitlines()
    october.write_bytes(b"\r\n".join(lines[:2000]) + b"\r\n" + b"\n".join(lines[2000:]) + b"\n")
    with pytest.raises(IngestError) as failed:
        ingest(sample)
    assert str(october) in str(failed.value) and "line 2001 ends with LF" in str(failed.value)
    assert store_digest(sample) == before
    rejects_csvs_agree_with_table(sample)  # September's rejects were not written: they were not stored


# -- probe 3: a truncated file, and a month that shrinks ------------------------------------------------

def test_truncated_file_is_refused_not_half_loaded(sample):
    ingest(sample)
    october = sample / "epd_201710.csv"
    data = october.read_bytes()
    cut = data[: len(data) // 2]
    assert not cut.endswith(b"\n")
    october.write_bytes(cut)
    with pytest.raises(IngestError, match="truncated") as refused:
        ingest(sample)
    assert str(october) in str(refused.value)
    cut_line = cut.count(b"\n") + 1
    assert f"({cut_line:,})" in str(refused.value)  # the line named is the cut one
    assert month_rows(sample)["2017-10"] == OCTOBER_ROWS


def test_month_that_falls_by_more_than_the_configured_share_warns(sample):
    october = sample / "epd_201710.csv"
    lines = october.read_text().splitlines(keepends=True)
    kept = len(lines) // 3
    october.write_text("".join(lines[:kept]))  # cut at a line end: a well-formed but short file
    said = []
    ingest(sample, said)
    warnings = [s for s in said if s.startswith("warning:")]
    assert len(warnings) == 1
    assert f"{kept - 1:,} rows" in warnings[0] and f"{SEPTEMBER_ROWS:,}" in warnings[0]
    run = sample / "run.yml"
    run.write_text(run.read_text().replace("source: files", "source: files\n  month_drop_warning_share: 0.9"))
    said = []
    ingest(sample, said)
    assert not [s for s in said if s.startswith("warning:")]


# -- probe 4: a list size of zero --------------------------------------------------------------------------

def test_zero_list_size_is_quarantined_and_its_items_left_out_above_practice(sample):
    listed = sample / "list_201710.csv"
    frame = pd.read_csv(listed, dtype=str, keep_default_na=False)
    zero_practice = "B85010"
    frame.loc[frame["ORG_CODE"] == zero_practice, "NUMBER_OF_PATIENTS"] = "0"
    frame.to_csv(listed, index=False)
    ingest(sample)
    assert query(sample, "SELECT count(*) FROM list_size WHERE practice_code = ? AND month = '2017-10-01'"
                 .replace("?", f"'{zero_practice}'")) == [(0,)]
    reasons = query(sample, "SELECT DISTINCT reason FROM rejects")
    assert len(reasons) == 1 and reasons[0][0].startswith("list size is 0 registered patients")
    assert query(sample, "SELECT month, practice_code, reason FROM practices_without_list_size") == [
        (pd.Timestamp("2017-10-01").date(), zero_practice, "list size is 0 registered patients (quarantined at ingest)")]
    backend = ibis.duckdb.connect(str(store_path(sample)))
    try:
        IndicatorEngine(backend, load_indicators()).run()
        values = backend.table("indicator_values").to_pandas()
    finally:
        backend.disconnect()
    october = values[(values.indicator_id == "AMR03") & (values.period == pd.Timestamp("2017-10-01"))
                     & (values.period_type == "month")]
    practice = october[october.org_level == "practice"].set_index("org_code")
    assert pd.isna(practice.loc[zero_practice, "value"])
    sub_icb = october[(october.org_level == "sub_icb") & (october.org_code == "03A")].iloc[0]
    # Only the other practice of 03A counts, in numerator and denominator alike.
    other = practice.loc["B85054"]
    assert sub_icb["n_practices"] == 1
    assert sub_icb["numerator"] == other["numerator"] and sub_icb["denominator"] == other["denominator"]


def test_implausibly_small_list_size_is_set_aside_for_a_practice_that_prescribes(sample):
    listed = sample / "list_201710.csv"
    frame = pd.read_csv(listed, dtype=str, keep_default_na=False)
    rows = frame["ORG_CODE"] == "B85010"
    frame.loc[rows, "NUMBER_OF_PATIENTS"] = "0"
    frame.loc[rows & (frame["SEX"] == "MALE") & (frame["AGE_GROUP_5"] == "30_34"), "NUMBER_OF_PATIENTS"] = "12"
    frame.loc[rows & (frame["SEX"].isin(["MALE", "ALL"])) & (frame["AGE_GROUP_5"] == "ALL"), "NUMBER_OF_PATIENTS"] = "12"
    frame.to_csv(listed, index=False)
    ingest(sample)
    ((reason,),) = query(sample, "SELECT reason FROM practices_without_list_size")
    assert reason.startswith("list size of 12 registered patients is implausibly small")
    backend = ibis.duckdb.connect(str(store_path(sample)))
    try:
        IndicatorEngine(backend, load_indicators()).run()
        values = backend.table("indicator_values").to_pandas()
    finally:
        backend.disconnect()
    row = values[(values.indicator_id == "AMR03") & (values.org_code == "03A")
                 & (values.period == pd.Timestamp("2017-10-01")) & (values.period_type == "month")].iloc[0]
    assert row["n_practices"] == 1


# -- the promise that rows in = accepted + rejected -----------------------------------------------------------

def test_rows_in_equal_accepted_plus_rejected(sample):
    """Every data line of every file is accepted or rejected, even after a stray quote."""
    october = sample / "epd_201710.csv"
    lines = october.read_text().splitlines(keepends=True)
    opened = next(i for i in range(100, 200) if '"' not in lines[i] and '"' in lines[i + 6])
    lines[opened] = lines[opened].replace(",", ',"', 5).replace(',"', ",", 4)  # one quote that never closes
    october.write_text("".join(lines))
    reports = ingest(sample)
    for report in reports:
        assert report.rows_read == report.rows_accepted + report.rows_rejected, report.line()
    (report,) = [r for r in reports if r.file == str(october)]
    assert report.rows_read == data_lines(october)
    rejected = query(sample, f"SELECT line, reason FROM rejects WHERE file = '{october}' ORDER BY line")
    assert len(rejected) == report.rows_rejected
    assert rejected[0][0] == opened + 1 and "quote" in rejected[0][1]
    assert all(f"opened on line {opened + 1}" in reason for _, reason in rejected[1:])
    # the rows after the quoted value are numbered as the file's lines
    assert [line for line, _ in rejected] == list(range(opened + 1, opened + 1 + len(rejected)))
    rejects_csvs_agree_with_table(sample)
