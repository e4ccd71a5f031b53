"""Validated ingest: every row is accepted or rejected with a reason, and nothing else."""

from __future__ import annotations

import gzip
import shutil

import pytest

import factories as f
from moopt.store import IngestError, Store, ingest_files


def count(store, table):
    return store.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def test_valid_rows_accepted_and_typed(store, tmp_path):
    path = f.write_epd(tmp_path / "epd.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3),
                                              f.epd_row("2025-01", "A00002", "0501013B0AAABAB", 4)])
    report = store.ingest_prescribing(path)
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (2, 2, 0)
    assert report.months == ["2025-01"]
    row = store.con.execute("SELECT month, items, total_quantity FROM prescribing ORDER BY items").fetchall()[0]
    assert str(row[0]) == "2025-01-01" and row[1] == 3 and row[2] == 84.0


def test_bad_rows_are_quarantined_with_reasons_and_lines(store, tmp_path):
    rows = [
        f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3),  # line 2: fine
        f.epd_row("2025-01", "A00001", "0501013B0AAABAB", -1, quantity=7),  # line 3: negative items
        f.epd_row("2025-01", "Z99999", "0501013B0AAABAB", 2),  # line 4: unknown practice
        f.epd_row("2025-01", "A00002", "0501", 2),  # line 5: malformed BNF code
        f.epd_row("2025-13", "A00002", "0501013B0AAABAB", 2),  # line 6: no such month
        f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3),  # line 7: duplicate of line 2
    ]
    rows[5][20] = 3
    bad_number = f.epd_row("2025-01", "A00003", "0501013B0AAABAB", 1)
    bad_number[20] = "lots"  # line 8: not a number
    rows.append(bad_number)
    path = f.write_epd(tmp_path / "epd.csv", rows)
    with pytest.raises(IngestError, match="6 of 7 rows rejected"):
        store.ingest_prescribing(path)  # far above the default 1% allowance
    assert count(store, "prescribing") == 0  # the store is unchanged
    report = store.ingest_prescribing(path, max_reject_share=1.0)
    assert report.rows_read == 7 == report.rows_accepted + report.rows_rejected
    assert report.rows_accepted == 1
    rejects = dict(store.con.execute("SELECT line, reason FROM rejects").fetchall())
    assert rejects[3] == "ITEMS is negative"
    assert rejects[4] == "PRACTICE_CODE is not a GP practice in the organisation map"
    assert rejects[5] == "BNF code is malformed"
    assert rejects[6].startswith("YEAR_MONTH is not a month")
    assert rejects[7].startswith("duplicate row")
    assert rejects[8] == "ITEMS is not a whole number"
    assert (store.rejects_dir / f"{tmp_path.name}__epd.csv.rejects.csv").exists()


def test_malformed_csv_lines_are_counted_not_lost(store, tmp_path):
    path = f.write_epd(tmp_path / "epd.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3),
                                              f.epd_row("2025-01", "A00002", "0501013B0AAABAB", 3)])
    lines = path.read_text().splitlines()
    lines.insert(2, "202501,too,few,columns")  # becomes line 3
    path.write_text("\n".join(lines) + "\n")
    report = store.ingest_prescribing(path, max_reject_share=1.0)
    assert report.rows_read == 3 and report.rows_accepted == 2 and report.rows_rejected == 1
    reasons = store.con.execute("SELECT line, reason FROM rejects").fetchall()
    assert reasons[0][0] == 3 and reasons[0][1].startswith("malformed CSV line")


def test_unknown_layout_names_file_and_expected_columns(store, tmp_path):
    path = tmp_path / "mystery.csv"
    path.write_text("A,B,C\n1,2,3\n")
    with pytest.raises(ValueError) as err:
        store.ingest_prescribing(path)
    message = str(err.value)
    assert "mystery.csv" in message and "YEAR_MONTH" in message and "BNF_CODE or BNF_PRESENTATION_CODE" in message


def test_reingest_replaces_month_never_doubles(store, tmp_path):
    path = f.write_epd(tmp_path / "epd.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3)])
    store.ingest_prescribing(path)
    store.ingest_prescribing(path, force=True)
    assert count(store, "prescribing") == 1
    again = f.write_epd(tmp_path / "epd_again.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 5)])
    store.ingest_prescribing(again)
    assert store.con.execute("SELECT sum(items) FROM prescribing").fetchall()[0][0] == 5
    skipped = store.ingest_prescribing(again)
    assert skipped.skipped  # unchanged files are not read again


@pytest.mark.parametrize("year_month", ["202501", "2025-01", "2025_01"])
def test_year_month_formats(store, tmp_path, year_month):
    row = f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3)
    row[0] = year_month
    report = store.ingest_prescribing(f.write_epd(tmp_path / "e.csv", [row]))
    assert report.months == ["2025-01"]


def test_gzip_and_snomed_era_column_names(store, tmp_path):
    plain = f.write_epd(tmp_path / "e.csv", [f.epd_row("2025-02", "A00001", "0501013B0AAABAB", 3)])
    text = plain.read_text().replace("BNF_CODE", "BNF_PRESENTATION_CODE").replace("ADQUSAGE", "ADQ_USAGE")
    gz = tmp_path / "EPD_SNOMED_202502.csv.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(text)
    report = store.ingest_prescribing(gz)
    assert report.rows_accepted == 1 and report.layout == "epd"


def test_list_sizes_bands_totals_and_dates(store, tmp_path):
    rows = f.list_size_rows("2025-01", "A00001", {("MALE", "0_4"): 10, ("FEMALE", "95+"): 5})
    report = store.ingest_list_size(f.write_list_sizes(tmp_path / "ls.csv", rows))
    assert report.rows_read == len(rows) == report.rows_accepted
    total = store.con.execute("SELECT sum(patients), max(age_lower) FROM list_size").fetchall()[0]
    assert total == (15, 95)
    bad = f.list_size_rows("2025-02", "A00002", {("MALE", "0_4"): 10})
    bad[-1][-1] = 11  # stated total disagrees with the bands
    report = store.ingest_list_size(f.write_list_sizes(tmp_path / "ls2.csv", bad), max_reject_share=1.0)
    assert report.rows_rejected == len(bad) and report.rows_accepted == 0


@pytest.mark.parametrize("extract", ["01SEP2017", "01-Sep-17", "01Sep2017", "2017-09-01"])
def test_list_size_extract_date_formats(store, tmp_path, extract):
    rows = f.list_size_rows("2017-09", "A00001", {("MALE", "0_4"): 10})
    for r in rows:
        r[1] = extract
    report = store.ingest_list_size(f.write_list_sizes(tmp_path / "ls.csv", rows))
    assert report.months == ["2017-09"]


def test_prescribing_needs_organisations_first(tmp_path):
    with Store(tmp_path / "s.duckdb") as empty:
        path = f.write_epd(tmp_path / "e.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3)])
        with pytest.raises(IngestError, match="practice mapping file"):
            empty.ingest_prescribing(path)


def test_real_2017_epd_sample_every_row_accounted(realdata, tmp_path):
    """The real Sept 2017 EPD sample (AREA_TEAM era, YYYY_MM months): rows read = accepted + rejected."""
    sample = realdata / "openprescribing" / "e2e-data-1"
    practices = {"L84073": ("P1", "11M", "Q1", "Y1"), "L84018": ("P1", "11M", "Q1", "Y1"),
                 "B85054": ("P2", "03A", "Q2", "Y2"), "B85010": ("P2", "03A", "Q2", "Y2")}
    f.write_map(tmp_path / "map.csv", practices)
    epd = tmp_path / "epd_201709.csv"
    shutil.copy(sample / "epd_201709.csv", epd)
    with Store(tmp_path / "s.duckdb") as store:
        reports = ingest_files(store, tmp_path / "map.csv", [epd], [sample / "gp-reg-pat-prac-quin-age.csv"])
        epd_report = reports[-1]
        assert epd_report.rows_read == 10027
        assert epd_report.rows_accepted + epd_report.rows_rejected == 10027
        items = store.con.execute("SELECT sum(items) FROM prescribing").fetchall()[0][0]
        rejected_items = store.con.execute("SELECT count(*) FROM rejects").fetchall()[0][0]
        assert rejected_items == epd_report.rows_rejected
        assert items > 40000  # the README of the sample gives 47,000 items for the month
        assert store.con.execute("SELECT count(DISTINCT practice_code) FROM list_size").fetchall()[0][0] == 4


def test_organisation_map_rejects_malformed_codes(tmp_path):
    path = f.write_map(tmp_path / "map.csv", {"A00001": ("P01", "S1A", "QA1", "Y01"),
                                              "A0/002": ("P01", "S1A", "QA1", "Y01"),
                                              "A00003": ("P02", "", "QA1", "Y01")})
    with Store(tmp_path / "s.duckdb") as store:
        report = store.ingest_organisations(path, max_reject_share=1.0)
        assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (3, 1, 2)
        assert set(report.reasons) == {"practice code is blank or malformed", "sub-ICB code is blank or malformed"}


def test_real_epraccur_counts_other_cost_centres(realdata, tmp_path):
    """ODS epraccur (Feb 2016): GP practices (prescribing setting 4) are stored, the rest counted."""
    with Store(tmp_path / "s.duckdb") as store:
        report = store.ingest_ods_organisations(realdata / "openprescribing" / "epraccur_2016-02.csv",
                                                realdata / "openprescribing" / "eccg_2016-02.csv")
        stored = store.con.execute("SELECT count(*) FROM organisations").fetchall()[0][0]
        assert report.rows_read == 12922 == report.rows_accepted + report.rows_rejected
        assert stored == report.rows_accepted - int(report.note.split()[0].replace(",", ""))
        assert stored > 7756  # every active GP practice, plus closed and dormant ones
        name = store.con.execute("SELECT sub_icb_name FROM organisations WHERE sub_icb_code = '11M' "
                                 "LIMIT 1").fetchall()[0][0]
        assert name == "NHS GLOUCESTERSHIRE CCG"


def test_stray_month_row_is_quarantined_and_leaves_that_month_alone(store, tmp_path):
    store.ingest_prescribing(f.write_epd(tmp_path / "jan.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3)]))
    february = [f.epd_row("2025-02", "A00001", "0501013B0AAABAB", 1, quantity=q) for q in range(1, 101)]
    february.append(f.epd_row("2025-01", "A00002", "0501013B0AAABAB", 9))  # line 102: a January row
    report = store.ingest_prescribing(f.write_epd(tmp_path / "feb.csv", february))
    assert report.months == ["2025-02"] and report.rows_rejected == 1
    assert store.con.execute("SELECT line, reason FROM rejects").fetchall() == [
        (102, "YEAR_MONTH 2025-01 is a stray: the rest of the file is 2025-02 (100 rows), and a file replaces "
              "only its own month")]
    assert store.con.execute("SELECT sum(items) FROM prescribing WHERE month = '2025-01-01'").fetchall() == [(3,)]


def test_a_file_of_two_whole_months_still_replaces_both(store, tmp_path):
    rows = [f.epd_row(m, "A00001", "0501013B0AAABAB", 2) for m in ("2025-01", "2025-02")]
    report = store.ingest_prescribing(f.write_epd(tmp_path / "two.csv", rows))
    assert report.months == ["2025-01", "2025-02"] and report.rows_rejected == 0


def test_zero_list_size_is_quarantined_without_stopping_the_file(store, tmp_path):
    rows = (f.list_size_rows("2025-01", "A00001", {("MALE", "0_4"): 500})
            + f.list_size_rows("2025-01", "A00002", {}))  # every band 0: no registered patients
    report = store.ingest_list_size(f.write_list_sizes(tmp_path / "ls.csv", rows))  # the default 1% allowance
    zero = len(f.list_size_rows("2025-01", "A00002", {}))
    assert report.rows_rejected == zero and report.rows_read == len(rows)
    assert set(report.reasons) == {"list size is 0 registered patients: quarantined, so rates per patient for "
                                   "this practice stay empty"}
    assert store.con.execute("SELECT DISTINCT practice_code FROM list_size").fetchall() == [("A00001",)]


def test_practices_without_list_size_records_each_reason(store, tmp_path):
    lists = (f.list_size_rows("2025-01", "A00001", {("MALE", "0_4"): 500})
             + f.list_size_rows("2025-01", "A00002", {("MALE", "0_4"): 40})
             + f.list_size_rows("2025-01", "A00003", {}))
    epd = f.write_epd(tmp_path / "epd.csv", [f.epd_row("2025-01", p, "0501013B0AAABAB", 3) for p in f.PRACTICES])
    ingest_files(store, tmp_path / "map.csv", [epd], [f.write_list_sizes(tmp_path / "ls.csv", lists)])
    recorded = dict(store.con.execute("SELECT practice_code, reason FROM practices_without_list_size").fetchall())
    assert set(recorded) == {"A00002", "A00003", "A00004"}
    assert recorded["A00002"].startswith("list size of 40 registered patients is implausibly small")
    assert recorded["A00003"] == "list size is 0 registered patients (quarantined at ingest)"
    assert recorded["A00004"] == "no list size in the files for this month"


def test_truncated_file_is_refused_naming_the_cut_line(store, tmp_path):
    path = f.write_epd(tmp_path / "epd.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", i, quantity=i)
                                              for i in range(1, 6)])
    whole = path.read_bytes()
    path.write_bytes(whole[:whole.rindex(b",N")])  # the last line loses its last field and line end
    with pytest.raises(IngestError, match=r"line \(6\) has 25 of 26 fields.*truncated"):
        store.ingest_prescribing(path)
    assert count(store, "prescribing") == 0
    path.write_bytes(whole.rstrip(b"\n"))  # complete, only without the last line end: read as it is
    assert store.ingest_prescribing(path).rows_accepted == 5


def test_ingest_files_is_one_transaction(store, tmp_path):
    """A later file refused undoes the earlier files of the same call, and their rejects CSVs."""
    good = f.write_epd(tmp_path / "a.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3),
                                            f.epd_row("2025-01", "Z99999", "0501013B0AAABAB", 3)])
    bad = f.write_epd(tmp_path / "b.csv", [f.epd_row("2025-02", "Z99999", "0501013B0AAABAB", 3)])
    before = store.con.execute("SELECT * FROM organisations ORDER BY ALL").fetchall()
    with pytest.raises(IngestError, match="b.csv"):
        ingest_files(store, tmp_path / "map.csv", [good, bad], [], max_reject_share=0.6)
    assert count(store, "prescribing") == 0 and count(store, "rejects") == 0 and count(store, "ingest_log") == 1
    assert store.con.execute("SELECT * FROM organisations ORDER BY ALL").fetchall() == before
    assert list(store.rejects_dir.glob("*.rejects.csv")) == []


def test_month_drops_warn_naming_both_counts(store, tmp_path):
    rows = ([f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 1, quantity=q) for q in range(1, 11)]
            + [f.epd_row("2025-02", "A00001", "0501013B0AAABAB", 1, quantity=q) for q in range(1, 5)])
    store.ingest_prescribing(f.write_epd(tmp_path / "epd.csv", rows))
    (warning,) = store.month_drops(0.5)
    assert "2025-02 has 4 rows" in warning and "the 10 of 2025-01" in warning
    assert store.month_drops(0.7) == []


@pytest.mark.parametrize("value", [0, 1.5, "half", True])
def test_month_drop_warning_share_is_validated(tmp_path, value):
    from moopt.config import ParameterError, load_config

    params = tmp_path / "run.yml"
    params.write_text(f"data: {{month_drop_warning_share: {value!r}}}\n".replace("'", ""))
    with pytest.raises(ParameterError, match="data.month_drop_warning_share must be a number above 0"):
        load_config(params, project_dir=tmp_path)
    params.write_text("data: {month_drop_warning_share: 0.8}\n")
    assert load_config(params, project_dir=tmp_path).month_drop_warning_share == 0.8


def test_memory_limit_can_be_taken_twice_after_spilling(tmp_path):
    """Ingest and then the indicator stage each hold DuckDB to a limit on the same connection."""
    from moopt.store import Store

    with Store(tmp_path / "store" / "moopt.duckdb") as s:
        for _ in range(2):
            with s.memory_limit("200MB"):
                # a sort large enough to spill at this limit, which fixes DuckDB's temporary folder
                s.con.execute("CREATE OR REPLACE TABLE big AS SELECT range AS i, md5(range::VARCHAR) AS h "
                              "FROM range(4000000) ORDER BY h").fetchall()
        assert s.con.execute("SELECT count(*) FROM big").fetchall()[0][0] == 4_000_000
