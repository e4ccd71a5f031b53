"""Every real sample file kept beside the repository is read by one of moopt's readers.

The files are enumerated from ../shared/realdata (the tests skip, saying why, where it is
absent). Each file's layout is detected from its header, the file is ingested into a store
whose organisations come from the real February 2016 ODS epraccur, and the rows the store
read are compared with a count of the file's data rows made here independently.
"""

from __future__ import annotations

import csv
import json
import shutil

import pandas as pd
import pytest

from factories import REALDATA
from moopt.indicators.denominators import star_pu_weights
from moopt.sources.layouts import detect_layout
from moopt.store import Store

KINDS = ("prescribing", "list_size", "organisations", "supplied", "reference")
# Real files that are not inputs moopt reads, and why.
NOT_INPUTS = {
    "gridall.csv": "ONS postcode directory; moopt takes geography from the practice map and ODS, not postcodes",
}
INGEST = {
    "prescribing": lambda store, path: store.ingest_prescribing(path, max_reject_share=1.0),
    "list_size": lambda store, path: store.ingest_list_size(path, max_reject_share=1.0),
    "organisations": lambda store, path: store.ingest_organisations(path, max_reject_share=1.0),
    "reference": lambda store, path: store.ingest_reference(path, max_reject_share=1.0),
}


def real_files():
    if not REALDATA.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"real NHS sample data not found at {REALDATA} (it lives beside the repository)"))]
    return [pytest.param(p, id=str(p.relative_to(REALDATA))) for p in sorted(REALDATA.rglob("*.csv"))]


def detect(path):
    for kind in KINDS:
        try:
            layout, _ = detect_layout(path, kind)
        except ValueError:
            continue
        return kind, layout
    return None, None


def data_rows(path, headerless: bool) -> int:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if any(field.strip() for field in row)]
    return len(rows) - (0 if headerless else 1)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("template")
    with Store(folder / "moopt.duckdb") as store:
        store.ingest_ods_organisations(REALDATA / "openprescribing" / "epraccur_2016-02.csv",
                                       REALDATA / "openprescribing" / "eccg_2016-02.csv")
    return folder / "moopt.duckdb"


@pytest.mark.parametrize("path", real_files())
def test_every_real_file_is_read_and_every_row_accounted(path, template, tmp_path):
    if path.name in NOT_INPUTS:
        kind, layout = detect(path)
        assert kind is None, f"{path.name} is listed as not an input but matches {layout.name}"
        return
    kind, layout = detect(path)
    assert kind is not None, f"no reader recognises {path}"
    store_path = tmp_path / "store" / "moopt.duckdb"
    store_path.parent.mkdir()
    shutil.copy(template, store_path)
    with Store(store_path) as store:
        report = INGEST[kind](store, path)
        expected = data_rows(path, layout.reader == "headerless")
        assert report.rows_read == expected, f"{path.name}: read {report.rows_read} of {expected} rows"
        assert report.rows_read == report.rows_accepted + report.rows_rejected
        assert report.rows_accepted > 0
        logged = store.con.execute("SELECT rows_read, rows_rejected FROM ingest_log WHERE file = ?",
                                   [str(path)]).fetchall()
        assert logged == [(report.rows_read, report.rows_rejected)]
        rejected = store.con.execute("SELECT count(*) FROM rejects WHERE file = ?", [str(path)]).fetchall()[0][0]
        assert rejected == report.rows_rejected


def test_real_layouts_are_the_expected_ones():
    if not REALDATA.is_dir():
        pytest.skip(f"real NHS sample data not found at {REALDATA}")
    expected = {
        "openprescribing/e2e-data-1/epd_201709.csv": "epd",
        "openprescribing/format_samples/hscic_prescribing_sample.csv": "nhs_digital_pdpi",
        "openprescribing/format_samples/hscic_practices.csv": "nhs_digital_addr",
        "openprescribing/format_samples/hscic_chemicals.csv": "nhs_digital_chem",
        "openprescribing/Patient_List_Size_2016_01-03.csv": "nhsbsa_patient_list_size",
        "openprescribing/format_samples/Patient_List_Size_nodate.csv": "nhsbsa_patient_list_size",
        "openprescribing/e2e-data-2/gp-reg-pat-prac-quin-age.csv": "gp_reg_pat_prac_quin_age",
        "gp-reg-pat-prac-all_2021-01/gp-reg-pat-prac-all_01JAN2021.csv": "gp_reg_pat_prac_single_age_or_all",
        "gp-reg-pat-prac-map_2025-10/QNC_practice_list_size_Oct2025_from_lsoa.csv": "practice_list_size_from_lsoa",
        "gp-reg-pat-prac-map_2020-09/gp-reg-pat-prac-map_01Sep2020.csv": "gp_reg_pat_prac_map",
        "openprescribing/eccg_2018-11.csv": "ods_organisations",
        "orgs_ccg_2020-09.csv": "organisation_names_ccg",
        "orgs_icb_2025-10.csv": "organisation_names_icb",
    }
    for relative, name in expected.items():
        assert detect(REALDATA / relative)[1].name == name, relative


def test_packaged_star_pu_weights_equal_the_published_ones():
    """moopt ships its own copy of the 2013 STAR-PU weights; check it against the real file
    (group -> age band -> [male, female])."""
    source = REALDATA / "openprescribing" / "star_pu_weights.json"
    if not source.exists():
        pytest.skip(f"{source} not found (the real data lives beside the repository)")
    published = json.loads(source.read_text())
    ours = star_pu_weights().set_index(["star_pu_group", "age_band", "sex"])["weight"]
    assert set(published) == set(ours.index.get_level_values(0))
    for group, bands in published.items():
        assert len(bands) == 9, group
        for band, (male, female) in bands.items():
            assert ours[(group, band, "male")] == pytest.approx(male, abs=1e-12), (group, band)
            assert ours[(group, band, "female")] == pytest.approx(female, abs=1e-12), (group, band)


def test_real_nhsbsa_list_size_totals_match_the_file(template, tmp_path):
    """Stored band rows add up, per month of the quarter, to the file's own column sums."""
    path = REALDATA / "openprescribing" / "Patient_List_Size_2016_01-03.csv"
    if not path.exists():
        pytest.skip(f"{path} not found (the real data lives beside the repository)")
    store_path = tmp_path / "moopt.duckdb"
    shutil.copy(template, store_path)
    raw = pd.read_csv(path)
    with Store(store_path) as store:
        store.ingest_list_size(path, max_reject_share=1.0)
        known = {r[0] for r in store.con.execute("SELECT practice_code FROM organisations").fetchall()}
        expected = raw[raw["Practice Code"].isin(known)].iloc[:, 8:].to_numpy().sum()
        per_month = store.con.execute(
            "SELECT month, sum(patients) FROM list_size GROUP BY 1 ORDER BY 1").fetchall()
    assert [str(m) for m, _ in per_month] == ["2016-01-01", "2016-02-01", "2016-03-01"]
    assert all(total == expected for _, total in per_month)
