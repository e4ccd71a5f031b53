"""Readers for the published formats beyond the current EPD: legacy NHS Digital files,
other list-size layouts, zip archives, cost centres and the run window."""

from __future__ import annotations

import datetime
import gzip
import zipfile

import ibis
import pytest

import factories as f
from moopt.indicators.definitions import load_indicators
from moopt.indicators.engine import IndicatorEngine
from moopt.store import IngestError, RunWindow, Store, ingest_files

PDPI_HEADER = " SHA,PCT,PRACTICE,BNF CODE,BNF NAME                                    ,ITEMS  ,NIC        ,ACT COST   ,QUANTITY,PERIOD,"


def rows(store, sql):
    return store.con.execute(sql).fetchall()


def monthly_values(folder, prescribing, list_sizes, practice):
    """Ingest into a new store beside map.csv, run the engine; a practice's monthly values by indicator."""
    with Store(folder / "s.duckdb") as s:
        ingest_files(s, folder / "map.csv", prescribing, list_sizes)
    backend = ibis.duckdb.connect(str(folder / "s.duckdb"))
    IndicatorEngine(backend, load_indicators()).run()
    values = backend.table("indicator_values").to_pandas()
    backend.disconnect()
    return values[(values.org_code == practice) & (values.period_type == "month")].set_index("indicator_id")


def padded(value, width, zeros=False):
    text = str(value)
    return text.rjust(width, "0") if zeros else text.ljust(width)


def write_pdpi_old(path, lines):
    """Before December 2018: CRLF, padded values, zero-padded numbers, trailing comma."""
    body = [PDPI_HEADER]
    for practice, bnf, name, items, nic, cost, quantity, period in lines:
        body.append(",".join(["Q30", "5D7", practice, bnf, padded(name, 40), padded(items, 7, True),
                              f"{nic:011.2f}", f"{cost:011.2f}", padded(quantity, 7, True), period]) + ",")
    path.write_bytes(("\r\n".join(body) + "\r\n").encode())
    return path


def test_legacy_pdpi_padded_with_trailing_comma_crlf_and_comma_in_name(store, tmp_path):
    path = write_pdpi_old(tmp_path / "T201710PDPI BNFT.CSV", [
        ("A00001", "0501013B0AAABAB", "Amoxicillin_Cap 500mg", 31, 83.79, 78.12, 651, "201710"),
        ("A00002", "0501013K0AAAJAJ", "Co-Amoxiclav_Tab 500mg/125mg, new", 4, 12.0, 11.5, 84, "201710"),
        ("A00002", "0501", "Bad code", 1, 1.0, 1.0, 1, "201710"),
    ])
    report = store.ingest_prescribing(path, max_reject_share=1.0)
    assert report.layout == "nhs_digital_pdpi"
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (3, 2, 1)
    assert rows(store, "SELECT reason, line FROM rejects") == [("BNF code is malformed", 4)]
    got = rows(store, "SELECT month, practice_code, bnf_code, items, nic, actual_cost, total_quantity, "
                      "quantity, adq_usage FROM prescribing ORDER BY practice_code")
    assert str(got[0][0]) == "2017-10-01"
    assert got[0][1:] == ("A00001", "0501013B0AAABAB", 31, 83.79, 78.12, 651.0, None, None)
    # The comma inside BNF NAME did not shift the numbers after it.
    assert got[1][1:7] == ("A00002", "0501013K0AAAJAJ", 4, 12.0, 11.5, 84.0)


def test_legacy_pdpi_after_december_2018_and_without_quantity(store, tmp_path):
    new = tmp_path / "new.csv"
    new.write_text("SHA,PCT,PRACTICE,BNF CODE,BNF NAME,ITEMS,NIC,ACT COST,QUANTITY,PERIOD\n"
                   "Q30,00K,A00001,0501013B0AAABAB,Amoxicillin_Cap 500mg,3,2.5,2.4,52.5,201812\n")
    report = store.ingest_prescribing(new)
    assert (report.rows_accepted, report.months) == (1, ["2018-12"])
    assert rows(store, "SELECT total_quantity FROM prescribing") == [(52.5,)]
    short = tmp_path / "noqty.csv"
    short.write_text("SHA,PCT,PRACTICE,BNF CODE,BNF NAME,ITEMS,NIC,ACT COST,PERIOD\n"
                     "Q30,00K,A00003,0501013B0AAABAB,Amoxicillin,7,2.5,2.4,201811\n"
                     "Q30,00K,A00003\n")
    report = store.ingest_prescribing(short, max_reject_share=1.0)
    assert (report.rows_read, report.rows_accepted) == (2, 1)
    assert rows(store, "SELECT reason FROM rejects WHERE line = 3") == [
        ("malformed line: 3 fields where the header has 9",)]
    assert rows(store, "SELECT items, total_quantity FROM prescribing WHERE month = '2018-11-01'") == [(7, None)]


def test_legacy_months_leave_adq_and_quantity_indicators_empty_not_zero(tmp_path):
    """SAF02 sums ADQ usage and AMR05 tests quantity per item: legacy files carry neither."""
    f.write_map(tmp_path / "map.csv")
    pdpi = write_pdpi_old(tmp_path / "pdpi.csv", [
        ("A00001", "0401010Z0AAAAAA", "Zopiclone_Tab 7.5mg", 2, 1.6, 2.5, 56, "202501"),
        ("A00001", "0501080W0AAAEAE", "Trimethoprim_Tab 200mg", 5, 3.0, 3.1, 30, "202501"),
    ])
    ls = f.write_list_sizes(tmp_path / "ls.csv", f.list_size_rows("2025-01", "A00001", {("MALE", "25_29"): 1000}))
    practice = monthly_values(tmp_path, [pdpi], [ls], "A00001")
    assert practice.loc["SAF02", "numerator"] != practice.loc["SAF02", "numerator"]  # NaN: unknown
    assert practice.loc["AMR05", "numerator"] != practice.loc["AMR05", "numerator"]
    assert practice.loc["AMR03", "numerator"] == 5  # item counts are known


def single_age_rows(extract, practice, sex, counts):
    out = [["GP_PRAC_PAT_LIST", extract, "GP", "16C", "E38000247", practice, "TS18 1HU", sex, str(age), n]
           for age, n in counts.items()]
    out.append(["GP_PRAC_PAT_LIST", extract, "GP", "16C", "E38000247", practice, "TS18 1HU", sex, "ALL",
                sum(counts.values())])
    return out


SINGLE_AGE_COLUMNS = ["PUBLICATION", "EXTRACT_DATE", "TYPE", "SUB_ICB_LOCATION_CODE", "ONS_SUB_ICB_LOCATION_CODE",
                      "ORG_CODE", "POSTCODE", "SEX", "AGE", "NUMBER_OF_PATIENTS"]


def test_single_age_files_one_per_sex_keep_each_other(store, tmp_path):
    male = f.write_csv(tmp_path / "m" / "gp-reg-pat-prac-sing-age-male.csv", SINGLE_AGE_COLUMNS,
                       single_age_rows("2026-04-01", "A00001", "MALE", {0: 10, 64: 5, 65: 7, "95+": 2}))
    female = f.write_csv(tmp_path / "f" / "gp-reg-pat-prac-sing-age-female.csv", SINGLE_AGE_COLUMNS,
                         single_age_rows("2026-04-01", "A00001", "FEMALE", {30: 20}))
    assert store.ingest_list_size(male).rows_accepted == 5
    store.ingest_list_size(female)
    got = rows(store, "SELECT sex, age_lower, age_upper, patients FROM list_size ORDER BY sex, age_lower")
    assert got == [("female", 30, 30, 20), ("male", 0, 0, 10), ("male", 64, 64, 5), ("male", 65, 65, 7),
                   ("male", 95, None, 2)]
    # Re-ingesting the male file replaces the male rows only.
    store.ingest_list_size(male, force=True)
    assert rows(store, "SELECT sex, sum(patients) FROM list_size GROUP BY 1 ORDER BY 1") == [
        ("female", 20), ("male", 24)]


def test_single_age_totals_checked_per_sex(store, tmp_path):
    bad = single_age_rows("2026-04-01", "A00002", "MALE", {40: 3})
    bad[-1][-1] = 4  # MALE ALL says 4, the ages say 3
    path = f.write_csv(tmp_path / "bad.csv", SINGLE_AGE_COLUMNS, bad)
    report = store.ingest_list_size(path, max_reject_share=1.0)
    assert report.rows_rejected == 2
    assert report.reasons == {"age bands do not add up to the total for that sex": 2}


def test_totals_only_file_then_bands_replace_it(store, tmp_path):
    columns = ["PUBLICATION", "EXTRACT_DATE", "TYPE", "CCG_CODE", "ONS_CCG_CODE", "CODE", "POSTCODE", "SEX", "AGE",
               "NUMBER_OF_PATIENTS"]
    totals = f.write_csv(tmp_path / "gp-reg-pat-prac-all.csv", columns, [
        ["GP_PRAC_PAT_LIST", "01JAN2021", "GP", "00L", "E38000130", "A00001", "NE65 7UW", "ALL", "ALL", 5903]])
    report = store.ingest_list_size(totals)
    assert report.months == ["2021-01"]
    assert rows(store, "SELECT sex, age_lower, age_upper, patients FROM list_size") == [("all", None, None, 5903)]
    quinary = f.write_list_sizes(tmp_path / "quin.csv",
                                 f.list_size_rows("2021-01", "A00001", {("MALE", "0_4"): 3000, ("FEMALE", "95+"): 2903}))
    store.ingest_list_size(quinary)
    assert rows(store, "SELECT sex, age_lower, age_upper, patients FROM list_size WHERE patients > 0 "
                       "ORDER BY sex") == [("female", 95, None, 2903), ("male", 0, 4, 3000)]


def test_totals_only_list_sizes_give_list_size_but_not_star_pu_values(tmp_path):
    f.write_map(tmp_path / "map.csv")
    columns = ["PUBLICATION", "EXTRACT_DATE", "TYPE", "CCG_CODE", "ONS_CCG_CODE", "CODE", "POSTCODE", "SEX", "AGE",
               "NUMBER_OF_PATIENTS"]
    totals = f.write_csv(tmp_path / "all.csv", columns, [
        ["GP_PRAC_PAT_LIST", "01JAN2025", "GP", "00L", "E38000130", "A00001", "X", "ALL", "ALL", 2000]])
    epd = f.write_epd(tmp_path / "epd.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 10)])
    practice = monthly_values(tmp_path, [epd], [totals], "A00001")
    assert practice.loc["AMR03", "denominator"] == 2000  # items per 1,000 patients: the total is enough
    assert practice.loc["AMR01", "denominator"] != practice.loc["AMR01", "denominator"]  # STAR-PU needs ages
    assert practice.loc["MH02", "denominator"] != practice.loc["MH02", "denominator"]  # aged 65+ unknown


NHSBSA_BANDS = ["0-4", "5-14", "15-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"]
NHSBSA_COLUMNS = ["Regional Office Name", "Regional Office Code", "Area Team Name", "Area Team Code", "PCO Name",
                  "PCO Code", "Practice Name", "Practice Code"] + [f"{s} {b}" for b in NHSBSA_BANDS
                                                                   for s in ("Male", "Female")]


def test_nhsbsa_quarterly_list_size_spreads_the_quarter_over_its_months(store, tmp_path):
    counts = list(range(1, 19))
    path = f.write_csv(tmp_path / "Patient_List_Size_2016_01-03.csv", NHSBSA_COLUMNS, [
        ["NORTH", "Y54", "AREA", "Q45", "CCG", "00K00", "Practice", "A00001", *counts],
        ["NORTH", "Y54", "AREA", "Q45", "CCG", "00K00", "Practice", "A00002", *counts[:-1], -1],
    ])
    report = store.ingest_list_size(path, max_reject_share=1.0)
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (2, 1, 1)
    assert report.reasons == {"Female 75+ is not a whole number of 0 or more": 1}
    assert report.months == ["2016-01", "2016-02", "2016-03"]
    per_month = rows(store, "SELECT month, count(*), sum(patients) FROM list_size GROUP BY 1 ORDER BY 1")
    assert [(n, total) for _, n, total in per_month] == [(18, sum(counts))] * 3
    bands = rows(store, "SELECT sex, age_lower, age_upper, patients FROM list_size WHERE month = '2016-02-01' "
                        "ORDER BY age_lower, sex")
    assert bands[:4] == [("female", 0, 4, 2), ("male", 0, 4, 1), ("female", 5, 14, 4), ("male", 5, 14, 3)]
    assert bands[-1] == ("male", 75, None, 17)


def test_nhsbsa_month_column_and_missing_quarter(store, tmp_path):
    dated = f.write_csv(tmp_path / "Patient_List_Size_nodate.csv", ["Month", *NHSBSA_COLUMNS], [
        ["01/04/11", "N", "Y54", "A", "Q46", "C", "01N00", "P", "A00003", *[1] * 18]])
    assert store.ingest_list_size(dated).months == ["2011-04", "2011-05", "2011-06"]
    undated = f.write_csv(tmp_path / "list_sizes.csv", NHSBSA_COLUMNS, [
        ["N", "Y54", "A", "Q46", "C", "01N00", "P", "A00003", *[1] * 18]])
    with pytest.raises(IngestError, match="quarter must be in the file name"):
        store.ingest_list_size(undated)


def test_zip_archives_are_read_at_their_one_matching_member(store, tmp_path):
    epd = f.write_epd(tmp_path / "EPD_202501.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3)])
    archive = tmp_path / "EPD_202501.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(epd, "EPD_202501.csv")
        z.writestr("README.txt", "not data")
    report = store.ingest_prescribing(archive)
    assert (report.file, report.rows_accepted) == (str(archive), 1)
    assert store.ingest_prescribing(archive).skipped  # unchanged archive: kept
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as z:
        z.write(epd, "a.csv")
        z.write(epd, "b.csv")
    with pytest.raises(IngestError, match="exactly one prescribing file; found a.csv, b.csv"):
        store.ingest_prescribing(two)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(IngestError, match="not a readable zip archive"):
        store.ingest_prescribing(broken)


def test_gzip_legacy_file(store, tmp_path):
    plain = write_pdpi_old(tmp_path / "p.csv", [("A00004", "0501013B0AAABAB", "Amoxicillin", 2, 1.0, 1.0, 42,
                                                 "201501")])
    gz = tmp_path / "p.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert store.ingest_prescribing(gz).rows_accepted == 1


def test_months_outside_the_run_are_rejected(store, tmp_path):
    path = f.write_epd(tmp_path / "epd.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3),
                                              f.epd_row("2025-02", "A00001", "0501013B0AAABAB", 3)])
    window = RunWindow("2024-03", "2025-01")
    report = store.ingest_prescribing(path, max_reject_share=1.0, window=window)
    assert report.reasons == {"YEAR_MONTH is outside the run (2024-03 to 2025-01)": 1}
    assert report.months == ["2025-01"]
    # Outside the run is not bad data: quarantined with the reason, but not counted towards the
    # share that stops a run, so a file wholly outside is read, reported and stores nothing.
    outside = store.ingest_prescribing(path, window=RunWindow("2023-01", "2023-12"), force=True)
    assert (outside.rows_read, outside.rows_rejected, outside.months) == (2, 2, [])
    assert rows(store, "SELECT DISTINCT month FROM prescribing") == [(datetime.date(2025, 1, 1),)]
    # A different window is not "unchanged": the file is read again.
    assert not store.ingest_prescribing(path, max_reject_share=1.0, window=RunWindow("2025-01", "2025-02")).skipped


def test_run_window_from_parameters(tmp_path):
    from moopt.config import load_config
    from moopt.pipeline import run_window

    params = tmp_path / "run.yml"
    params.write_text("period: {end: 2026-09, months: 24}\n")
    # the period is 2024-10 to 2026-09; the first rolling value needs the 11 months before it
    assert run_window(load_config(params)) == RunWindow("2023-11", "2026-09")
    params.write_text("period: {end: latest}\n")
    assert run_window(load_config(params)) is None


def epraccur_row(code, setting, commissioner="S1A"):
    fields = [code, f"Name {code}", "Y01", "QA1", "", "", "", "", "", "ZZ1 1ZZ", "20130401", "", "A", "B",
              commissioner, "20130401", "", "", "", "", "", "0", "", commissioner, "", str(setting), ""]
    return ",".join(f'"{x}"' for x in fields)


def test_other_cost_centres_counted_not_rejected_with_map_and_epraccur(tmp_path):
    f.write_map(tmp_path / "map.csv")
    (tmp_path / "epraccur.csv").write_text("\n".join(
        [epraccur_row("A00001", 4), epraccur_row("Y00001", 2), epraccur_row("Y00002", 10)]) + "\n")
    epd = f.write_epd(tmp_path / "epd.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3),
                                             f.epd_row("2025-01", "Y00001", "0501013B0AAABAB", 9),
                                             f.epd_row("2025-01", "Z99999", "0501013B0AAABAB", 1)])
    with Store(tmp_path / "s.duckdb") as s:
        reports = ingest_files(s, {"map": tmp_path / "map.csv", "epraccur": tmp_path / "epraccur.csv"},
                               [epd], [], max_reject_share=1.0)
        cost_centres, rx = reports[1], reports[2]
        assert (cost_centres.table, cost_centres.rows_read, cost_centres.rows_accepted) == ("cost_centres", 3, 3)
        assert rows(s, "SELECT code, setting FROM cost_centres ORDER BY code") == [("Y00001", "2"), ("Y00002", "10")]
        assert (rx.rows_read, rx.rows_accepted, rx.rows_rejected) == (3, 2, 1)
        assert "1 rows for cost centres that are not GP practices" in rx.note
        assert rx.reasons == {"PRACTICE_CODE is not a GP practice in the organisation map": 1}
        assert rows(s, "SELECT practice_code FROM prescribing") == [("A00001",)]


def test_legacy_addr_and_chem_reference_files(store, tmp_path):
    addr = tmp_path / "T201008ADDR BNFT.CSV"
    addr.write_bytes(b"201008,A00001,THE DENSHAM SURGERY  ,THE HEALTH CENTRE ,LAWSON STREET ,STOCKTON ,"
                     b"CLEVELAND ,TS18 1HU ,\r\n201008,a00002,SECOND ,X ,Y ,Z ,C ,TS1 1AA ,\r\n")
    report = store.ingest_reference(addr)
    assert (report.layout, report.rows_accepted) == ("nhs_digital_addr", 2)
    assert rows(store, "SELECT practice_code, practice_name, postcode FROM practice_addresses ORDER BY 1") == [
        ("A00001", "THE DENSHAM SURGERY", "TS18 1HU"), ("A00002", "SECOND", "TS1 1AA")]
    chem = tmp_path / "T201008CHEM SUBS.CSV"
    chem.write_bytes(b"CHEM SUB ,NAME,        201008,\r\n0101010A0,Alexitol Sodium      ,\r\n"
                     b"2346     ,Discharge Solidifying Agents ,\r\nBAD,Nothing ,\r\n")
    report = store.ingest_reference(chem, max_reject_share=1.0)
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (3, 2, 1)
    assert rows(store, "SELECT chemical_code, chemical_name FROM bnf_chemicals ORDER BY 1") == [
        ("0101010A0", "Alexitol Sodium"), ("2346", "Discharge Solidifying Agents")]


def test_closed_practices_keep_their_history_but_get_no_page(tmp_path):
    from moopt.config import load_config
    from moopt.pipeline import organisations_for_run

    rows_ = [epraccur_row("A00001", 4), epraccur_row("A00002", 4)]
    closed = epraccur_row("A00002", 4).split(",")
    closed[11], closed[12] = '"20250131"', '"C"'  # close date and status
    rows_[1] = ",".join(closed)
    (tmp_path / "epraccur.csv").write_text("\n".join(rows_) + "\n")
    params = tmp_path / "run.yml"
    params.write_text("organisations: {level: practice}\n")
    with Store(tmp_path / "s.duckdb") as s:
        report = s.ingest_ods_organisations(tmp_path / "epraccur.csv")
        assert "1 closed or dormant practices kept for their history" in report.note
        assert rows(s, "SELECT practice_code, status, close_date FROM organisations ORDER BY 1")[1][1:] == (
            "C", datetime.date(2025, 1, 31))
        epd = f.write_epd(tmp_path / "epd.csv", [f.epd_row("2025-01", "A00002", "0501013B0AAABAB", 3)])
        assert s.ingest_prescribing(epd).rows_accepted == 1  # its last month still counts
        config = load_config(params)
        practices = lambda: [o["code"] for o in organisations_for_run(s, config) if o["level"] == "practice"]
        assert practices() == ["A00001"]
        config.org_codes = ["A00002"]  # asked for by code: its history can still be shown
        assert practices() == ["A00002"]


def test_a_run_that_stores_no_prescribing_stops_and_says_why(tmp_path):
    from moopt.config import load_config
    from moopt.pipeline import ensure_data, ingest_run

    (tmp_path / "epraccur.csv").write_text("\n".join([epraccur_row("A00001", 4), epraccur_row("Y00001", 2)]) + "\n")
    epd = f.write_epd(tmp_path / "epd.csv", [f.epd_row("2025-01", "Y00001", "0501013B0AAABAB", 9)])
    ls = f.write_list_sizes(tmp_path / "ls.csv", f.list_size_rows("2024-12", "A00001", {("MALE", "0_4"): 10}))
    params = tmp_path / "run.yml"
    params.write_text(f"data: {{source: files, organisations: {{epraccur: {tmp_path / 'epraccur.csv'}}}, "
                      f"epd: [{epd}], list_sizes: [{ls}]}}\n")
    config = load_config(params, project_dir=tmp_path)
    with Store(tmp_path / "s.duckdb") as s:
        with pytest.raises(ValueError, match="No prescribing rows were stored.*1 rows for cost centres that are not GP"):
            ingest_run(s, config, ensure_data(config))
    f.write_epd(epd, [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 9)])
    said = []
    with Store(tmp_path / "s2.duckdb") as s:
        ingest_run(s, config, ensure_data(config), said.append)
    assert any("no list sizes for 1 of the 1 prescribing months (2025-01); the list sizes cover 2024-12 to 2024-12"
               in m for m in said)


def test_epraccur_without_gp_practices_is_refused(tmp_path):
    (tmp_path / "eccg.csv").write_text(epraccur_row("00C", 0) + "\n")
    with Store(tmp_path / "s.duckdb") as s, pytest.raises(IngestError, match="holds no GP practices"):
        s.ingest_ods_organisations(tmp_path / "eccg.csv")


def test_qof_raw_zip_gives_achievement_to_supplied_and_prevalence_to_reference(store, tmp_path):
    from moopt.indicators.definitions import load_indicators as definitions

    archive = tmp_path / "QOF2324.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ACHIEVEMENT_2324.csv", "PRACTICE_CODE,INDICATOR_CODE,MEASURE,VALUE\n"
                                           "A00001,AF006,NUMERATOR,40\nA00001,AF006,DENOMINATOR,50\n")
        z.writestr("PREVALENCE_2324.csv", "PRACTICE_CODE,GROUP_CODE,REGISTER,PATIENT_LIST_TYPE,PRACTICE_LIST_SIZE\n"
                                          "A00001,AF,120,TOTAL,6000\nA00001,DM,300,17OV,4800\n")
        z.writestr("MAPPING_INDICATORS_2324.csv", "INDICATOR_CODE,INDICATOR_DESCRIPTION\nAF006,x\n")
    supplied = store.ingest_supplied(archive, definitions())
    assert (supplied.layout, supplied.rows_read, supplied.rows_rejected) == ("qof_achievement", 2, 0)
    prevalence = store.ingest_reference(archive)
    assert (prevalence.layout, prevalence.rows_accepted) == ("qof_prevalence_raw", 2)
    assert rows(store, "SELECT group_code, register FROM reference_qof_prevalence_raw ORDER BY 1") == [
        ("AF", "120"), ("DM", "300")]


# -- text that is not what the CSV reader expects (issue 10, item 9) -------------------------------------------

def epd_lines(tmp_path, n=6, month="2025-01"):
    """An EPD file of ``n`` rows over the four practices, as a list of its lines (header first)."""
    path = f.write_epd(tmp_path / "lines.csv", [f.epd_row(month, f"A0000{i % 4 + 1}", "0501013B0AAABAB", i + 1,
                                                          quantity=i + 1)
                                                for i in range(n)])
    return path.read_bytes().splitlines()


def test_unclosed_quote_counts_every_line_it_swallows(store, tmp_path):
    lines = epd_lines(tmp_path, 8)
    lines[2] = lines[2].replace(b",REGION,", b',"REGION,')  # line 3: a quote that never closes
    lines[6] = lines[6].replace(b",REGION,", b',"REGION",')  # line 7: the next quote in the file
    path = tmp_path / "epd.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = store.ingest_prescribing(path, max_reject_share=1.0)
    assert report.rows_read == 8 == report.rows_accepted + report.rows_rejected
    rejected = rows(store, "SELECT line, reason FROM rejects ORDER BY line")
    assert [line for line, _ in rejected] == [3, 4, 5, 6, 7]
    assert "unterminated quote" in rejected[0][1]
    assert all("opened on line 3" in reason for _, reason in rejected[1:])
    # the rows after the damage keep their own line numbers (line 8 onwards are accepted)
    assert rows(store, "SELECT sum(items) FROM prescribing") == [(1 + 7 + 8,)]


def test_latin1_byte_in_the_second_line_is_named_not_blamed_on_the_header(store, tmp_path):
    lines = epd_lines(tmp_path)
    lines[1] = lines[1].replace(b"Practice", b"Pr\xe9ctice")
    path = tmp_path / "epd.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(IngestError) as refused:
        store.ingest_prescribing(path)
    message = str(refused.value)
    assert "header" not in message and "line 2 holds bytes that are not UTF-8" in message
    assert str(path) in message and "iconv" in message
    assert rows(store, "SELECT count(*) FROM prescribing") == [(0,)]


def test_latin1_byte_later_in_a_name_refuses_the_file_naming_the_line(store, tmp_path):
    lines = epd_lines(tmp_path, 3000)
    lines[2500] = lines[2500].replace(b"Practice", b"Pr\xe9ctice")
    path = tmp_path / "epd.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(IngestError, match="line 2501 holds bytes that are not UTF-8"):
        store.ingest_prescribing(path)
    assert rows(store, "SELECT count(*) FROM prescribing") == [(0,)]


def test_latin1_byte_in_the_header_is_named(store, tmp_path):
    lines = epd_lines(tmp_path)
    lines[0] = lines[0].replace(b"PRACTICE_NAME", b"PRACTICE_N\xc9ME")
    path = tmp_path / "epd.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match=r"first line holds bytes that are not UTF-8 text \(byte 0xC9"):
        store.ingest_prescribing(path)


@pytest.mark.parametrize("first, rest, named", [(b"\r\n", b"\n", "line 4 ends with LF (Unix) where the lines "
                                                                  "before it end with CRLF (Windows)"),
                                                (b"\n", b"\r\n", "line 4 ends with CRLF (Windows) where the lines "
                                                                 "before it end with LF (Unix)")])
def test_mixed_line_endings_name_the_line_where_they_change(store, tmp_path, first, rest, named):
    lines = epd_lines(tmp_path, 40)
    path = tmp_path / "epd.csv"
    path.write_bytes(first.join(lines[:3]) + first + rest.join(lines[3:]) + rest)
    with pytest.raises(IngestError) as refused:
        store.ingest_prescribing(path)
    message = str(refused.value)
    assert named in message and str(path) in message
    assert "Possible fixes" not in message and "sample_size" not in message  # not DuckDB's settings dump


def test_refused_file_leaves_the_rejects_csv_agreeing_with_the_store(store, tmp_path):
    path = f.write_epd(tmp_path / "epd.csv", [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3),
                                              f.epd_row("2025-01", "Z99999", "0501013B0AAABAB", 3)])
    store.ingest_prescribing(path, max_reject_share=1.0)
    (written,) = store.rejects_dir.glob("*.rejects.csv")
    kept = written.read_bytes()
    f.write_epd(path, [f.epd_row("2025-01", "Z99999", "0501013B0AAABAB", 3),
                       f.epd_row("2025-01", "Z99998", "0501013B0AAABAB", 3)])
    with pytest.raises(IngestError) as refused:
        store.ingest_prescribing(path, force=True)
    assert written.read_bytes() == kept  # still the rows the store holds
    assert rows(store, "SELECT line, detail FROM rejects") == [(3, "Z99999 0501013B0AAABAB")]
    (refused_csv,) = store.rejects_dir.glob("*.refused.csv")
    assert str(refused_csv) in str(refused.value)
    assert len(refused_csv.read_text().splitlines()) == 3  # header and the two refused rows
    f.write_epd(path, [f.epd_row("2025-01", "A00001", "0501013B0AAABAB", 3)])
    store.ingest_prescribing(path, force=True)
    assert list(store.rejects_dir.glob("*.csv")) == []  # a clean file leaves neither behind
