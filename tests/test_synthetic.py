"""Tests for the embedded synthetic data generator (moopt.sources.synthetic).

Most checks read back the files a small-scale run writes, the way an ingest would, and
compute realism figures from them independently of the generator's internals.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from moopt.sources import synthetic
from moopt.sources.synthetic import SCALES, build_organisations, generate_synthetic

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
REALDATA = SHARED / "realdata"

# The published layouts, written out here rather than imported so that a change in the
# module cannot silently change what the test expects.
EPD_HEADER = (
    "YEAR_MONTH,REGIONAL_OFFICE_NAME,REGIONAL_OFFICE_CODE,ICB_NAME,ICB_CODE,PCO_NAME,PCO_CODE,"
    "PRACTICE_NAME,PRACTICE_CODE,ADDRESS_1,ADDRESS_2,ADDRESS_3,ADDRESS_4,POSTCODE,"
    "BNF_CHEMICAL_SUBSTANCE,CHEMICAL_SUBSTANCE_BNF_DESCR,BNF_CODE,BNF_DESCRIPTION,"
    "BNF_CHAPTER_PLUS_CODE,QUANTITY,ITEMS,TOTAL_QUANTITY,ADQUSAGE,NIC,ACTUAL_COST,UNIDENTIFIED"
)
LIST_HEADER = (
    "PUBLICATION,EXTRACT_DATE,ORG_TYPE,ORG_CODE,ONS_CODE,POSTCODE,SEX,AGE_GROUP_5,NUMBER_OF_PATIENTS"
)
MAP_HEADER = (
    "PUBLICATION,EXTRACT_DATE,PRACTICE_CODE,PRACTICE_NAME,PRACTICE_POSTCODE,PCN_CODE,PCN_NAME,"
    "ONS_SUB_ICB_LOCATION_CODE,SUB_ICB_LOCATION_CODE,SUB_ICB_LOCATION_NAME,ONS_ICB_CODE,ICB_CODE,"
    "ICB_NAME,ONS_COMM_REGION_CODE,COMM_REGION_CODE,COMM_REGION_NAME,SUPPLIER_NAME"
)
ATTRIBUTES_HEADER = "PRACTICE_CODE,DEPRIVATION_SCORE,RURAL,CARE_HOME_BEDS"

MONTHS = [f"{y}-{m:02d}" for y, m in [(2024, 10), (2024, 11), (2024, 12)]] + [
    f"2025-{m:02d}" for m in range(1, 13)
] + [f"2026-{m:02d}" for m in range(1, 10)]

# STAR-PU bands and the quinary bands that fold into them.
STARPU_OF_QUINARY = {
    "0_4": "0-4", "5_9": "5-14", "10_14": "5-14", "15_19": "15-24", "20_24": "15-24",
    "25_29": "25-34", "30_34": "25-34", "35_39": "35-44", "40_44": "35-44", "45_49": "45-54",
    "50_54": "45-54", "55_59": "55-64", "60_64": "55-64", "65_69": "65-74", "70_74": "65-74",
    "75_79": "75+", "80_84": "75+", "85_89": "75+", "90_94": "75+", "95+": "75+",
}  # fmt: skip


def _read(path: Path, strings: tuple[str, ...]) -> pd.DataFrame:
    types = {c: pa.string() for c in strings}
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    return table.to_pandas()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One small-scale run, read back the way an ingest would read it."""
    out = tmp_path_factory.mktemp("synthetic_small")
    messages: list[str] = []
    summary = generate_synthetic(out, scale="small", seed=7, progress=messages.append)
    code_cols = ("PRACTICE_CODE", "BNF_CODE", "BNF_CHEMICAL_SUBSTANCE", "PCO_CODE", "ICB_CODE")
    epd = pd.concat(
        [_read(p, code_cols) for p in sorted((out / "epd").glob("EPD_*.csv"))], ignore_index=True
    )
    lists = pd.concat(
        [
            _read(p, ("ORG_CODE",)).assign(file=p.name)
            for p in sorted((out / "list_sizes").glob("*.csv"))
        ],
        ignore_index=True,
    )
    mapping = _read(
        out / "organisations" / "gp-reg-pat-prac-map.csv",
        ("PRACTICE_CODE", "PCN_CODE", "SUB_ICB_LOCATION_CODE", "ICB_CODE", "COMM_REGION_CODE"),
    )
    attributes = _read(out / "organisations" / "practice_attributes.csv", ("PRACTICE_CODE",))
    return {
        "out": out,
        "summary": summary,
        "messages": messages,
        "epd": epd,
        "lists": lists,
        "map": mapping,
        "attributes": attributes,
    }


@pytest.fixture(scope="module")
def starpu(small):
    """Oral-antibacterial item STAR-PU per practice from the list-size files (mean list)."""
    weights = synthetic._age_weights()["oral_antibacterials_item"]  # (2, 9) male, female
    bands = list(synthetic.STARPU_BANDS)
    lists = small["lists"]
    bands_only = lists[(lists.SEX != "ALL") & (lists.AGE_GROUP_5 != "ALL")].copy()
    bands_only["weight"] = [
        weights[0 if sex == "MALE" else 1, bands.index(STARPU_OF_QUINARY[age])]
        for sex, age in zip(bands_only.SEX, bands_only.AGE_GROUP_5)
    ]
    bands_only["units"] = bands_only.NUMBER_OF_PATIENTS * bands_only.weight
    n_months = bands_only.file.nunique()
    return bands_only.groupby("ORG_CODE").units.sum() / n_months


def _items(epd: pd.DataFrame, pattern: str) -> pd.Series:
    """Items by month for BNF codes matching a regular expression."""
    hit = epd.BNF_CODE.str.match(pattern)
    return epd[hit].groupby("YEAR_MONTH").ITEMS.sum()


# ---------------------------------------------------------------------------------------------
# API and validation
# ---------------------------------------------------------------------------------------------


def test_scales_are_the_documented_ones():
    assert set(SCALES) == {"national", "small"}


def test_unknown_scale_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="national.*small|small.*national"):
        generate_synthetic(tmp_path, scale="regional")
    with pytest.raises(ValueError, match="Unknown synthetic data scale"):
        build_organisations("tiny")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"end_month": "2026-13"}, "end_month"),
        ({"end_month": "202609"}, "end_month"),
        ({"n_months": 0}, "n_months"),
        ({"n_months": 2.0}, "n_months"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic(tmp_path, scale="small", **kwargs)


def test_module_constants_match_the_published_layouts():
    assert ",".join(synthetic.EPD_COLUMNS) == EPD_HEADER
    assert ",".join(synthetic.LIST_SIZE_COLUMNS) == LIST_HEADER
    assert ",".join(synthetic.MAP_COLUMNS) == MAP_HEADER
    assert ",".join(synthetic.ATTRIBUTE_COLUMNS) == ATTRIBUTES_HEADER


# ---------------------------------------------------------------------------------------------
# Files and headers
# ---------------------------------------------------------------------------------------------


def test_every_file_type_has_the_exact_header(small):
    out = small["out"]
    epd_files = sorted((out / "epd").glob("*.csv"))
    list_files = sorted((out / "list_sizes").glob("*.csv"))
    assert [p.name for p in epd_files] == [f"EPD_{m.replace('-', '')}.csv" for m in MONTHS]
    assert [p.name for p in list_files] == [
        f"gp-reg-pat-prac-quin-age_{m.replace('-', '')}.csv" for m in MONTHS
    ]
    for path in epd_files:
        assert path.read_text().split("\n", 1)[0] == EPD_HEADER
    for path in list_files:
        assert path.read_text().split("\n", 1)[0] == LIST_HEADER
    org = out / "organisations"
    assert (org / "gp-reg-pat-prac-map.csv").read_text().split("\n", 1)[0] == MAP_HEADER
    assert (org / "practice_attributes.csv").read_text().split("\n", 1)[0] == ATTRIBUTES_HEADER


def test_no_temporary_files_are_left_behind(small):
    leftovers = [p for p in small["out"].rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_manifest_marks_a_complete_synthetic_set(small):
    manifest = json.loads((small["out"] / "synthetic_manifest.json").read_text())
    assert manifest["synthetic"] is True
    assert manifest["generator"] == "moopt.sources.synthetic"
    assert manifest["seed"] == 7 and manifest["scale"] == "small"
    assert manifest["months"] == MONTHS
    assert "fictional" in manifest["notice"].lower()
    assert manifest["counts"]["practices"] == small["map"].PRACTICE_CODE.nunique()
    # written last: no file is newer than the manifest
    manifest_time = (small["out"] / "synthetic_manifest.json").stat().st_mtime_ns
    others = [p for p in small["out"].rglob("*.csv")]
    assert max(p.stat().st_mtime_ns for p in others) <= manifest_time


def test_summary_reports_counts_rows_and_time(small):
    summary = small["summary"]
    assert summary["counts"] == {
        "regions": 2,
        "icbs": 3,
        "sub_icbs": 6,
        "pcns": small["map"].PCN_CODE.nunique(),
        "practices": len(small["map"]),
        "out_of_hours_cost_centres": 3,
    }
    assert summary["rows"]["epd"] == len(small["epd"])
    assert summary["rows"]["list_sizes"] == len(small["lists"])
    assert summary["rows"]["practice_map"] == len(small["map"])
    assert summary["months"] == MONTHS
    assert summary["seconds"] > 0  # timings are for benchmarks, not tests
    assert any(re.fullmatch(r"writing EPD 2025-03 \(6/24\)", m) for m in small["messages"])


def test_small_scale_is_small(small):
    assert 90 <= len(small["map"]) <= 150
    assert 15 <= small["map"].PCN_CODE.nunique() <= 35


# ---------------------------------------------------------------------------------------------
# Organisation structure
# ---------------------------------------------------------------------------------------------


def test_small_hierarchy_counts_and_parents_are_consistent(small):
    m = small["map"]
    assert m.COMM_REGION_CODE.nunique() == 2
    assert m.ICB_CODE.nunique() == 3
    assert m.SUB_ICB_LOCATION_CODE.nunique() == 6
    assert m.PRACTICE_CODE.is_unique
    # every child has exactly one parent
    for child, parent in [
        ("PCN_CODE", "SUB_ICB_LOCATION_CODE"),
        ("SUB_ICB_LOCATION_CODE", "ICB_CODE"),
        ("ICB_CODE", "COMM_REGION_CODE"),
        ("SUB_ICB_LOCATION_CODE", "SUB_ICB_LOCATION_NAME"),
        ("ICB_CODE", "ICB_NAME"),
    ]:
        assert m.groupby(child)[parent].nunique().max() == 1, (child, parent)


def test_codes_are_format_valid_and_names_fictional(small):
    m = small["map"]
    assert m.PRACTICE_CODE.str.fullmatch(r"[A-Z]\d{5}").all()
    assert not m.PRACTICE_CODE.str[0].isin(list("ABCDEFGHJKLMNPWY")).any()
    assert m.PCN_CODE.str.fullmatch(r"U\d{5}").all()
    assert m.SUB_ICB_LOCATION_CODE.str.fullmatch(r"\d\d[A-Z]|[A-Z]\d[A-Z]\d[A-Z]").all()
    assert m.ICB_CODE.str.fullmatch(r"Q\d[A-Z]").all()
    assert m.COMM_REGION_CODE.str.fullmatch(r"Y7\d").all()
    assert m.ONS_SUB_ICB_LOCATION_CODE.str.fullmatch(r"E38\d{6}").all()
    assert m.PRACTICE_POSTCODE.str.fullmatch(r"[A-Z]{2}\d{1,2} \d[A-Z]{2}").all()
    assert m.ICB_NAME.str.contains("Synthetic").all()
    assert m.COMM_REGION_NAME.str.contains("Synthetic").all()
    assert set(m.SUPPLIER_NAME) <= {"EMIS", "TPP", "Unknown"}


def test_epd_organisation_columns_agree_with_the_map(small):
    epd, m = small["epd"], small["map"].set_index("PRACTICE_CODE")
    gp = epd[epd.PRACTICE_CODE.isin(m.index)]
    first = gp.drop_duplicates("PRACTICE_CODE").set_index("PRACTICE_CODE")
    parent = m.loc[first.index]
    assert (first.ICB_CODE == parent.ICB_CODE).all()
    assert (first.REGIONAL_OFFICE_CODE == parent.COMM_REGION_CODE).all()
    expected_pco = np.where(
        parent.SUB_ICB_LOCATION_CODE.str.len() == 3,
        parent.SUB_ICB_LOCATION_CODE + "00",
        parent.SUB_ICB_LOCATION_CODE,
    )
    assert (first.PCO_CODE.to_numpy() == expected_pco).all()
    assert (first.PRACTICE_NAME == parent.PRACTICE_NAME).all()
    # one set of organisation columns per practice across every row and month
    assert gp.groupby("PRACTICE_CODE")[["ICB_CODE", "PCO_CODE"]].nunique().max().max() == 1


def test_out_of_hours_cost_centres_are_not_in_the_map_and_are_rare(small):
    epd, m = small["epd"], small["map"]
    unknown = epd[~epd.PRACTICE_CODE.isin(m.PRACTICE_CODE)]
    assert unknown.PRACTICE_CODE.nunique() == 3  # one per ICB
    assert unknown.PRACTICE_CODE.str.fullmatch(r"Y0\d{4}").all()
    assert unknown.PRACTICE_NAME.str.contains("OUT OF HOURS").all()
    assert 0.0002 < len(unknown) / len(epd) < 0.01
    assert not unknown.PRACTICE_CODE.isin(small["lists"].ORG_CODE).any()
    assert not unknown.PRACTICE_CODE.isin(small["attributes"].PRACTICE_CODE).any()


def test_attributes_cover_every_practice_with_sensible_values(small):
    a, m = small["attributes"], small["map"]
    assert sorted(a.PRACTICE_CODE) == sorted(m.PRACTICE_CODE)
    assert a.DEPRIVATION_SCORE.between(0, 100).all()
    assert set(a.RURAL) <= {"Y", "N"}
    assert (a.CARE_HOME_BEDS >= 0).all() and (a.CARE_HOME_BEDS > 0).any()
    # deprivation is clustered by sub-ICB: between-area variance is a real share of the total
    merged = a.merge(m[["PRACTICE_CODE", "SUB_ICB_LOCATION_CODE"]], on="PRACTICE_CODE")
    log_dep = np.log(merged.DEPRIVATION_SCORE)
    area_means = log_dep.groupby(merged.SUB_ICB_LOCATION_CODE).transform("mean")
    assert area_means.var() / log_dep.var() > 0.15


def test_national_structure_without_writing_prescribing():
    orgs = build_organisations("national", seed=42)
    counts = orgs.counts
    assert (counts["regions"], counts["icbs"], counts["sub_icbs"]) == (7, 42, 106)
    assert 6_100 <= counts["practices"] <= 6_300
    assert 1_200 <= counts["pcns"] <= 1_350
    assert counts["out_of_hours_cost_centres"] == 42
    subs_per_region = sorted(orgs.sub_icbs.groupby("region_code").size())
    assert subs_per_region == [5, 7, 11, 14, 19, 23, 27]
    code_lengths = orgs.sub_icbs.sub_icb_code.str.len().value_counts().to_dict()
    assert code_lengths == {3: 97, 5: 9}
    sizes = synthetic.practice_list_counts(orgs, 0).sum(axis=(1, 2))
    # England, January 2021: mean 9,103, median 7,931, p5 2,601, p95 19,293, max 89,786
    assert 8_600 <= sizes.mean() <= 9_600
    assert 7_500 <= np.median(sizes) <= 8_400
    assert 2_200 <= np.percentile(sizes, 5) <= 3_000
    assert 18_000 <= np.percentile(sizes, 95) <= 20_600
    assert 40_000 <= sizes.max() <= 95_000
    assert orgs.practices.practice_code.is_unique
    assert orgs.pcns.pcn_code.is_unique


# ---------------------------------------------------------------------------------------------
# List sizes
# ---------------------------------------------------------------------------------------------


def test_list_size_rows_are_internally_consistent(small):
    lists = small["lists"]
    assert set(lists.PUBLICATION) == {"GP_PRAC_PAT_LIST"}
    assert set(lists.ORG_TYPE) == {"GP"}
    assert set(lists.EXTRACT_DATE) == {
        f"01{pd.Timestamp(m + '-01').strftime('%b').upper()}{m[:4]}" for m in MONTHS
    }
    bands = [f"{a}_{a + 4}" for a in range(0, 95, 5)] + ["95+"]
    assert set(lists.AGE_GROUP_5) == set(bands) | {"ALL"}
    key = ["file", "ORG_CODE"]
    total = lists[(lists.SEX == "ALL") & (lists.AGE_GROUP_5 == "ALL")].set_index(key).NUMBER_OF_PATIENTS
    by_sex = lists[(lists.SEX != "ALL") & (lists.AGE_GROUP_5 == "ALL")].groupby(key).NUMBER_OF_PATIENTS.sum()
    by_band = lists[(lists.SEX != "ALL") & (lists.AGE_GROUP_5 != "ALL")].groupby(key).NUMBER_OF_PATIENTS.sum()
    assert (total.sort_index() == by_sex.sort_index()).all()
    assert (total.sort_index() == by_band.sort_index()).all()
    assert (lists[lists.SEX != "ALL"].groupby(key).size() == 42).all()


def test_list_sizes_drift_slowly(small):
    lists = small["lists"]
    total = lists[(lists.SEX == "ALL")].pivot(index="ORG_CODE", columns="file", values="NUMBER_OF_PATIENTS")
    monthly_change = total.pct_change(axis=1).iloc[:, 1:].abs()
    assert monthly_change.stack().quantile(0.99) < 0.02
    growth = total.iloc[:, -1].sum() / total.iloc[:, 0].sum() - 1
    assert 0.0 < growth < 0.05


# ---------------------------------------------------------------------------------------------
# Prescribing: arithmetic and codes
# ---------------------------------------------------------------------------------------------


def test_epd_arithmetic_and_code_columns(small):
    epd = small["epd"]
    assert np.allclose(epd.TOTAL_QUANTITY, epd.QUANTITY * epd.ITEMS)
    assert (epd.ITEMS >= 1).all() and (epd.QUANTITY > 0).all()
    assert (epd.ADQUSAGE >= 0).all() and (epd.ADQUSAGE > 0).any()
    assert (epd.NIC > 0).all()
    ratio = epd.ACTUAL_COST.sum() / epd.NIC.sum()
    assert 0.88 <= ratio <= 0.97
    assert epd.BNF_CODE.str.len().eq(15).all()
    assert (epd.BNF_CHEMICAL_SUBSTANCE == epd.BNF_CODE.str[:9]).all()
    assert (epd.BNF_CHAPTER_PLUS_CODE.str[:2] == epd.BNF_CODE.str[:2]).all()
    assert set(epd.UNIDENTIFIED) == {"N"}
    assert epd.YEAR_MONTH.between(202410, 202609).all()
    assert sorted(epd.YEAR_MONTH.unique()) == [int(m.replace("-", "")) for m in MONTHS]
    # ADQ usage is consistent within a presentation: ADQs per unit of quantity are constant, the
    # unit being one inhaler also for inhaler rows recorded in doses (quantity per item above 9)
    doses = epd.BNF_DESCRIPTION.str.extract(r"\((\d+) ?D\)", expand=False).astype(float)
    in_doses = epd.BNF_CODE.str.startswith("03") & (epd.QUANTITY > 9) & doses.notna()
    assert 0 < in_doses.sum() < 0.005 * len(epd)  # rare
    units = epd.TOTAL_QUANTITY.where(~in_doses, epd.TOTAL_QUANTITY / doses)
    per_unit = (epd.ADQUSAGE / units).groupby(epd.BNF_CODE)
    assert (per_unit.max() - per_unit.min()).max() < 1e-3


def test_rows_are_split_by_pack_size(small):
    epd = small["epd"]
    key = ["YEAR_MONTH", "PRACTICE_CODE", "BNF_CODE"]
    assert not epd.duplicated(key + ["QUANTITY"]).any()
    split = epd.groupby(key).size()
    assert 1.15 <= split.mean() <= 2.5
    multi = epd.groupby("BNF_CODE").QUANTITY.nunique()
    multi_codes = multi[multi > 1].index
    split_multi = epd[epd.BNF_CODE.isin(multi_codes)].groupby(key).size().mean()
    assert 1.5 <= split_multi <= 2.8


def test_every_indicator_code_family_is_present(small):
    codes = pd.Series(small["epd"].BNF_CODE.unique())
    families = [
        # AMR01-06, including the selected-antibacterial sections and AMR03's exclusions
        "0501", "050101", "0501021", "050103", "050104", "050105", "050106", "050107",
        "050108", "050109", "050110", "050111", "050112", "050113", "0501013K0", "0501080W0",
        "0501130R0", "0501130H0", "0501015P0",
        # SAF01-04
        "100101", "1001010J0", "1001010P0", "0401", "0401010AD", "0408010G0", "0408010AE",
        "040702",
        # MH01-02
        "0403", "040201", "040202",
        # CVD01-02
        "0208020AA", "0208020X0", "0208020Y0", "0208020Z0", "0208020V0", "0212",
        # RES01-02
        "0301011R0", "0301011V0", "0302",
        # DIA01-03
        "0601012V0", "0601012X0", "0601012Z0", "0601012S0", "0601023AG", "0601023AL",
        "0601023AM", "0601023AN", "0601060D0",
    ]  # fmt: skip
    missing = [f for f in families if not codes.str.startswith(f).any()]
    assert missing == []


def test_uti_presentations_have_short_and_long_courses_and_brands(small):
    epd = small["epd"]
    # chemical, strength suffix, longest 3-day quantity (OpenPrescribing uti_antibiotics_3_day)
    thresholds = [
        ("0501015P0", "AB", 10), ("0501080W0", "AE", 6), ("0501130R0", "AA", 12),
        ("0501130R0", "AD", 12), ("0501130R0", "AG", 6),
    ]  # fmt: skip
    for chemical, suffix, limit in thresholds:
        rows = epd[epd.BNF_CODE.str.startswith(chemical) & epd.BNF_CODE.str.endswith(suffix)]
        assert (rows.QUANTITY <= limit).any(), chemical + suffix
        assert (rows.QUANTITY > limit).any(), chemical + suffix
        long_share = rows.ITEMS[rows.QUANTITY > limit].sum() / rows.ITEMS.sum()
        assert 0.1 < long_share < 0.8, (chemical + suffix, long_share)
    brands = epd[
        epd.BNF_CODE.str.match(r"^(0501015P0|0501080W0|0501130R0)")
        & (epd.BNF_CODE.str[9:11] != "AA")
    ]
    assert brands.BNF_CODE.nunique() >= 2


# ---------------------------------------------------------------------------------------------
# Prescribing: realism
# ---------------------------------------------------------------------------------------------


def test_items_per_patient_per_month_is_plausible(small):
    epd, lists, m = small["epd"], small["lists"], small["map"]
    gp_items = epd[epd.PRACTICE_CODE.isin(m.PRACTICE_CODE)].ITEMS.sum()
    patient_months = lists[lists.SEX == "ALL"].NUMBER_OF_PATIENTS.sum()
    assert 1.3 <= gp_items / patient_months <= 2.1


def test_chapter_mix_is_plausible(small):
    epd = small["epd"]
    share = epd.groupby(epd.BNF_CODE.str[:2]).ITEMS.sum() / epd.ITEMS.sum()
    assert 0.24 <= share["02"] <= 0.38  # cardiovascular, the largest chapter
    assert 0.15 <= share["04"] <= 0.26  # central nervous system, the second
    assert 0.02 <= share["05"] <= 0.06  # infections
    assert share.idxmax() == "02"


def test_antibacterial_items_per_starpu(small, starpu):
    epd = small["epd"]
    ab = epd[epd.BNF_CODE.str.startswith("0501")].groupby("PRACTICE_CODE").ITEMS.sum()
    ab = ab.reindex(starpu.index).fillna(0) / len(MONTHS) * 12  # per year
    national = ab.sum() / starpu.sum()
    assert 0.6 <= national <= 1.3
    rates = ab / starpu
    assert 0.4 <= rates.quantile(0.05) and rates.quantile(0.95) <= 1.8


def test_practice_antibiotic_counts_are_overdispersed(small, starpu):
    epd = small["epd"]
    observed = (
        epd[epd.BNF_CODE.str.startswith("0501")]
        .groupby("PRACTICE_CODE")
        .ITEMS.sum()
        .reindex(starpu.index)
        .fillna(0)
    )
    expected = starpu * observed.sum() / starpu.sum()
    dispersion = (((observed - expected) ** 2) / expected).sum() / (len(observed) - 1)
    assert dispersion > 20  # a Poisson process would give about 1


def test_a_few_practices_are_outliers(small, starpu):
    epd = small["epd"]
    ab = epd[epd.BNF_CODE.str.startswith("0501")].groupby("PRACTICE_CODE").ITEMS.sum()
    ab_rate = (ab.reindex(starpu.index) / starpu).dropna()
    assert ab_rate.max() > 2.2 * ab_rate.median()
    hyp = epd[epd.BNF_CODE.str.match(r"^0401(010|020)") & ~epd.BNF_CODE.str.startswith("0401010AD")]
    patients = small["lists"][small["lists"].SEX == "ALL"].groupby("ORG_CODE").NUMBER_OF_PATIENTS.mean()
    hyp_rate = (hyp.groupby("PRACTICE_CODE").ADQUSAGE.sum().reindex(patients.index) / patients).dropna()
    assert hyp_rate.max() > 4.0 * hyp_rate.median()


def test_outlying_practices_are_about_half_a_percent():
    orgs = build_organisations("national", seed=42)
    model = synthetic._build_model(orgs, 24)
    n = len(orgs.practices)
    flagged = np.concatenate(list(model.outliers.values()))
    assert len(np.unique(flagged)) == len(flagged)
    assert 0.003 <= len(flagged) / n <= 0.008
    antibacterial = model.formulary.bnf_code.str.startswith("0501").to_numpy()
    level = model.effect[:, antibacterial].mean(axis=1)
    assert np.all(level[model.outliers["antibacterial"]] > 2.0 * np.median(level))


def test_winter_antibiotic_peak(small):
    ab = _items(small["epd"], r"^0501")
    winter = ab.loc[[202412, 202501, 202512, 202601]].mean()
    summer = ab.loc[[202506, 202507, 202606, 202607]].mean()
    assert 1.15 <= winter / summer <= 1.6


def test_national_trends(small):
    epd = small["epd"]
    first, last = [202410, 202411, 202412, 202501, 202502, 202503], [
        202604, 202605, 202606, 202607, 202608, 202609
    ]
    doac = _items(epd, r"^0208020(AA|X0|Y0|Z0)")
    warfarin = _items(epd, r"^0208020V0")
    share = doac / (doac + warfarin)
    assert 0.78 <= share.loc[first].mean() < share.loc[last].mean() <= 0.95
    broad = _items(epd, r"^(0501013K0|0501021|050112)")
    selected = _items(epd, r"^(050101|0501021|050103|050105|050108|050111|050112|050113)")
    broad_share = broad.groupby(broad.index >= 202510).sum() / selected.groupby(
        selected.index >= 202510
    ).sum()  # whole years, so seasonality cancels
    assert 0.05 <= broad_share.mean() <= 0.13
    assert broad_share.loc[True] < 0.98 * broad_share.loc[False]
    sglt2 = _items(epd, r"^0601023A[GLMN]")
    assert sglt2.loc[last].mean() > 1.15 * sglt2.loc[first].mean()
    pain = _items(epd, r"^(040702|0408010G0|0408010AE)")
    assert pain.loc[last].mean() < pain.loc[first].mean()


def test_older_lists_prescribe_more(small):
    lists, epd = small["lists"], small["epd"]
    bands = lists[(lists.SEX != "ALL") & (lists.AGE_GROUP_5 != "ALL")]
    older = bands.AGE_GROUP_5.isin(["65_69", "70_74", "75_79", "80_84", "85_89", "90_94", "95+"])
    share_65 = (
        bands[older].groupby("ORG_CODE").NUMBER_OF_PATIENTS.sum()
        / bands.groupby("ORG_CODE").NUMBER_OF_PATIENTS.sum()
    )
    patients = lists[lists.SEX == "ALL"].groupby("ORG_CODE").NUMBER_OF_PATIENTS.sum()
    per_patient = epd.groupby("PRACTICE_CODE").ITEMS.sum().reindex(patients.index) / patients
    assert np.corrcoef(share_65, per_patient.loc[share_65.index])[0, 1] > 0.4


# ---------------------------------------------------------------------------------------------
# Prescribing: presentations for the current national priority measures (issue 13)
# ---------------------------------------------------------------------------------------------
# Code lists follow ../shared/reference/indicators-current.md; they are written out here so the
# checks do not depend on the generator's own tables.

# UK-AWaRe chemicals (reference section 3.2) among the antibacterials the generator prescribes.
AWARE_ACCESS = (
    "0501011P0", "0501012G0", "0501013B0", "0501015P0", "0501021L0", "0501030I0", "0501040H0",
    "0501080W0", "0501110C0", "0501130R0",
)  # fmt: skip
AWARE_WATCH = ("0501013K0", "0501030L0", "0501030P0", "0501050A0", "0501050B0", "0501060D0",
               "0501120L0")  # fmt: skip
# Inhalers by device (reference section 3.5): pressurised metered-dose against dry powder and
# soft mist inhalers.
MDI_CODES = ("0301011R0AAAPAP", "0301011R0BEAIAP", "0301011R0BIAFAP", "0302000C0BPABBF",
             "0302000C0BQAABX", "0302000N0BCAEBF", "0302000N0BDAABJ")  # fmt: skip
LOW_CARBON_INHALER_CODES = (
    "0301011V0BBAMAL", "0301011R0BWAABZ", "0301011R0BEAHAQ", "0301020Q0BBACAC",
    "0302000C0BRAABY", "0302000K0BHAAAM", "0302000K0BDABAM", "0302000N0BCACAZ",
    "0302000V0BBABAB",
)  # fmt: skip
# Statins: chemical -> strength suffixes of high intensity (reference section 3.7).
STATIN_HIGH_INTENSITY = {"0212000B0": ("AB", "AC", "AD"), "0212000AA": ("AA", "AB", "AC"),
                         "0212000Y0": ("AH",), "0212000X0": ()}  # fmt: skip
# Long-acting opioid presentations at or above the high-dose thresholds (reference section 3.4).
HIGH_DOSE_OPIOIDS = ("0407020Q0BBACAI", "0407020ADBEADAH", "0407020A0AAAFAF", "0407020B0BDABAF",
                     "0407020AGBBAEAE")  # fmt: skip
# Regular long-acting forms, all strengths (the denominator of the high-dose share).
LONG_ACTING_OPIOIDS = (
    r"^(0407020Q0.*(AK|AL|AI)$|0407020AD.*(AF|AH)$|0407020A0.*(AE|AF|AU)$|0407020B0|0407020AG)"
)
# Oral morphine equivalent mg per unit of quantity (strength x factor; patches x hours worn),
# for every BNF 4.7.2 presentation the generator prescribes (reference section 3.3).
OME_PER_UNIT = {
    "040702040AAAAAA": 50 * 0.1, "0407020A0AAAEAE": 0.025 * 72 * 100,
    "0407020A0AAAFAF": 0.05 * 72 * 100, "0407020A0AAAUAU": 0.012 * 72 * 100,
    "0407020ADAAACAC": 5 * 1.5, "0407020ADAAAFAF": 10 * 1.5, "0407020ADBEADAH": 40 * 1.5,
    "0407020AFBBAAAA": 10 * 1.5, "0407020AGBBACAC": 50 * 0.4, "0407020AGBBAEAE": 150 * 0.4,
    "0407020B0BDABAF": 0.0525 * 96 * 100, "0407020B0BEAAAH": 0.005 * 168 * 100,
    "0407020B0BHABAI": 0.010 * 168 * 100, "0407020C0AAAEAE": 30 * 0.1,
    "0407020G0AAACAC": 30 * 0.1, "0407020Q0AAAKAK": 10, "0407020Q0AAALAL": 30,
    "0407020Q0AACNCN": 2, "0407020Q0BBACAI": 60, "0407020Q0BCAGCN": 2,
}  # fmt: skip
# Gabapentinoid DDDs per unit (mg per unit / WHO DDD: gabapentin 1800 mg, pregabalin 300 mg).
DDD_PER_UNIT = {
    "0408010G0AAAAAA": 100 / 1800, "0408010G0AAABAB": 300 / 1800, "0408010G0AAAJAJ": 600 / 1800,
    "0408010AEAAACAC": 75 / 300, "0408010AEAAAEAE": 150 / 300, "0408010AEAAAGAG": 300 / 300,
}  # fmt: skip
BEST_VALUE_DOACS = ("0208020Y0AA", "0208020Z0AA")  # generically prescribed rivaroxaban, apixaban
RECOMMENDED_STRIPS = ("0601060D0CUAAA0", "0601060D0CUABA0", "0601060D0CIAAA0")
LOW_PRIORITY = r"^(0403010J0|0602010M0|0212000AB|0203020D0|0501030P0|0407020AF|1502010J0.*EL$)"

# Presentations added for the measures, with the range every row's quantity per item must be in.
PRIORITY_QUANTITIES = {
    "0501013B0AAABAB": (15, 42), "0501030I0AAABAB": (6, 14), "0501030L0AAABAB": (28, 84),
    "0501050A0AAAGAG": (6, 24), "0407020A0AAAUAU": (5, 10), "0407020A0AAAEAE": (5, 10),
    "0407020A0AAAFAF": (5, 10), "0407020B0BEAAAH": (4, 4), "0407020B0BDABAF": (4, 8),
    "0407020Q0AAAKAK": (56, 60), "0407020Q0BBACAI": (56, 60), "0407020ADBEADAH": (56, 56),
    "0407020Q0BCAGCN": (100, 500), "0407020Q0AACNCN": (100, 500), "0407020AGBBAEAE": (56, 56),
    "0408010G0AAAJAJ": (84, 100), "0408010AEAAAGAG": (56, 56), "0212000B0AAADAD": (28, 56),
    "0212000Y0AAABAB": (28, 56), "0208020Z0BBABAB": (56, 56), "0208020Y0BBACAC": (28, 28),
    "0301011R0BIAFAP": (1, 2), "0301011R0BWAABZ": (1, 2), "0301011R0BEAIAP": (1, 3),
    "0302000C0BRAABY": (1, 2), "0302000N0BCAEBF": (1, 2), "0301020Q0BBACAC": (1, 2),
    "0601060D0CUAAA0": (50, 100), "0601060D0BWABA0": (50, 100), "0602010M0AAAAAA": (28, 28),
    "1502010J0AAELEL": (30, 30), "0407020AFBBAAAA": (56, 56),
}  # fmt: skip


def _starts(codes: pd.Series, prefixes) -> pd.Series:
    return codes.str.startswith(tuple(prefixes))


def _high_intensity_statin(codes: pd.Series) -> pd.Series:
    return pd.Series(
        [code[-2:] in STATIN_HIGH_INTENSITY.get(code[:9], ()) for code in codes], index=codes.index
    )


@pytest.fixture(scope="module")
def priorities(small):
    """Numerators and denominators of the current priority measures, by month (rows) and by
    practice (``practice``), computed from the files alone."""
    epd = small["epd"]
    lists = small["lists"]
    code = epd.BNF_CODE
    practices = small["map"].PRACTICE_CODE
    statin = _starts(code, STATIN_HIGH_INTENSITY)
    doac = _starts(code, ("0208020AA", "0208020X0", "0208020Y0", "0208020Z0"))
    amoxicillin = code == "0501013B0AAABAB"
    not_salbutamol = ~code.str.startswith("0301011R0")
    parts = {
        "access": (_starts(code, AWARE_ACCESS), "ITEMS"),
        "aware": (_starts(code, AWARE_ACCESS + AWARE_WATCH), "ITEMS"),
        "amox_long": (amoxicillin & (epd.QUANTITY > 15), "ITEMS"),
        "amox": (amoxicillin, "ITEMS"),
        "mdi": (code.isin(MDI_CODES) & not_salbutamol, "ITEMS"),
        "inhalers": (code.isin(MDI_CODES + LOW_CARBON_INHALER_CODES) & not_salbutamol, "ITEMS"),
        "statin_high": (statin & _high_intensity_statin(code), "ITEMS"),
        "statin": (statin, "ITEMS"),
        "doac_best_value": (_starts(code, BEST_VALUE_DOACS), "ITEMS"),
        "doac": (doac, "ITEMS"),
        "strips_recommended": (code.isin(RECOMMENDED_STRIPS), "ITEMS"),
        "strips": (_starts(code, ("0601060D0", "0601060X0")), "ITEMS"),
        "high_dose_opioid": (code.isin(HIGH_DOSE_OPIOIDS), "ITEMS"),
        "long_acting_opioid": (code.str.match(LONG_ACTING_OPIOIDS), "ITEMS"),
        "opioid_items": (code.str.startswith("040702"), "ITEMS"),
        "saba_inhalers": (_starts(code, ("0301011R0", "0301011V0")), "inhalers"),
        "low_priority_cost": (code.str.match(LOW_PRIORITY), "ACTUAL_COST"),
    }
    # Inhalers: a quantity per item above 9 is in doses; the doses per inhaler are in the name.
    doses = epd.BNF_DESCRIPTION.str.extract(r"\((\d+) ?D\)", expand=False).astype(float)
    epd = epd.assign(inhalers=epd.TOTAL_QUANTITY.where(epd.QUANTITY <= 9, epd.TOTAL_QUANTITY / doses))
    frame = epd[["YEAR_MONTH", "PRACTICE_CODE"]].copy()
    for name, (mask, column) in parts.items():
        frame[name] = epd[column].where(mask, 0.0)
    frame["ome"] = epd.TOTAL_QUANTITY * code.map(OME_PER_UNIT).fillna(0.0)
    frame["ddd"] = epd.TOTAL_QUANTITY * code.map(DDD_PER_UNIT).fillna(0.0)
    by_month = frame.drop(columns="PRACTICE_CODE").groupby("YEAR_MONTH").sum()
    patients = lists[lists.SEX == "ALL"]
    months = patients.file.str.extract(r"_(\d{6})\.csv$")[0].astype(int)
    by_month["patients"] = patients.groupby(months).NUMBER_OF_PATIENTS.sum()
    by_practice = frame[frame.PRACTICE_CODE.isin(practices)].drop(columns="YEAR_MONTH")
    return {"month": by_month, "practice": by_practice.groupby("PRACTICE_CODE").sum()}


def test_priority_presentations_are_prescribed_with_plausible_quantities(small):
    epd = small["epd"]
    n_months = epd.YEAR_MONTH.nunique()
    for code, (low, high) in PRIORITY_QUANTITIES.items():
        rows = epd[epd.BNF_CODE == code]
        assert rows.YEAR_MONTH.nunique() == n_months, code
        assert rows.QUANTITY.between(low, high).all(), (code, sorted(rows.QUANTITY.unique()))
    # Course lengths: amoxicillin 500 mg capsules as 5-day (15) and 7-day (21) courses,
    # doxycycline 100 mg as 5-day (6) and longer, morphine solution above 300 ml at times.
    amoxicillin = epd[epd.BNF_CODE == "0501013B0AAABAB"]
    assert {15, 21} <= set(amoxicillin.QUANTITY)
    long_share = amoxicillin.ITEMS[amoxicillin.QUANTITY > 15].sum() / amoxicillin.ITEMS.sum()
    assert 0.3 <= long_share <= 0.7
    doxycycline = epd[epd.BNF_CODE == "0501030I0AAABAB"]
    long_share = doxycycline.ITEMS[doxycycline.QUANTITY > 6].sum() / doxycycline.ITEMS.sum()
    assert 0.5 <= long_share <= 0.9
    morphine = epd[epd.BNF_CODE.str.match(r"^0407020Q0.*CN$")]
    large = morphine.TOTAL_QUANTITY[morphine.QUANTITY > 300].sum() / morphine.TOTAL_QUANTITY.sum()
    assert 0.05 <= large <= 0.4
    # A few salbutamol inhaler items are recorded in doses (200 a row), priced per dose.
    in_doses = epd[(epd.BNF_CODE == "0301011R0BWABCA") & (epd.QUANTITY > 9)]
    inhalers = epd[(epd.BNF_CODE == "0301011R0BWABCA") & (epd.QUANTITY <= 9)]
    assert set(in_doses.QUANTITY) == {200} and 0.02 < in_doses.ITEMS.sum() / (
        in_doses.ITEMS.sum() + inhalers.ITEMS.sum()) < 0.2
    price_per_inhaler = inhalers.NIC.sum() / inhalers.TOTAL_QUANTITY.sum()
    assert 150 < price_per_inhaler / (in_doses.NIC.sum() / in_doses.TOTAL_QUANTITY.sum()) < 250
    # Every 4.7.2 opioid presentation has an OME factor in this test, so OME sums are whole.
    opioids = set(epd.BNF_CODE[epd.BNF_CODE.str.startswith("040702")])
    assert opioids <= set(OME_PER_UNIT), sorted(opioids - set(OME_PER_UNIT))


def test_priority_presentations_are_in_the_packaged_lookups(small):
    """Every presentation the generator prescribes for the lookup-based measures is in its lookup,
    so a synthetic build reports no codes a lookup lacks for them."""
    from moopt.indicators.lookups import load_lookups

    codes = pd.Series(sorted(set(small["epd"].BNF_CODE)))
    lookups = load_lookups()
    for name, prefixes, exclude in [
        ("opioid_ome", ("0407010F0", "0407010N0", "040702"), ()),
        ("saba_inhaler_doses", ("0301011R0", "0301011V0"), ()),
        ("inhaler_device", ("0301", "0302", "0303"), ("0301011R0",)),
    ]:  # fmt: skip
        wanted = codes[_starts(codes, prefixes) & ~_starts(codes, exclude or ("-",))]
        missing = sorted(set(wanted) - {c for c in wanted if lookups[name].key_of(c) in
                                        set(lookups[name].frame.bnf_code.map(lookups[name].key_of))})
        assert len(wanted) and not missing, (name, missing)


def test_priority_measures_have_plausible_levels_every_month(priorities):
    m = priorities["month"]
    shares = {
        "access": ("aware", 0.70, 0.90),
        "amox_long": ("amox", 0.30, 0.70),
        "mdi": ("inhalers", 0.30, 0.70),  # excluding salbutamol, as OpenPrescribing does
        "statin_high": ("statin", 0.60, 0.90),
        "doac_best_value": ("doac", 0.60, 0.95),
        "strips_recommended": ("strips", 0.50, 0.95),
        "high_dose_opioid": ("long_acting_opioid", 0.05, 0.30),
    }
    for numerator, (denominator, low, high) in shares.items():
        assert (m[numerator] > 0).all(), numerator
        share = m[numerator] / m[denominator]
        assert share.between(low, high).all(), (numerator, share.round(3).tolist())
    per_1000 = m.div(m.patients / 1000.0, axis=0)
    assert per_1000.ome.between(5_000, 40_000).all()  # mg OME per 1,000 patients a month
    assert per_1000.ddd.between(200, 1_500).all()  # gabapentinoid DDDs per 1,000 a month
    assert per_1000.high_dose_opioid.between(0.3, 3.0).all()
    assert (per_1000.saba_inhalers * 12 / 1000).between(0.2, 1.0).all()  # per patient a year
    assert per_1000.low_priority_cost.between(10, 300).all()  # £ per 1,000 a month


def test_priority_trends_go_the_stated_way(priorities):
    """Access share and high-intensity statin share rise, MDI share and opioid volumes fall.
    Whole years are compared so that seasonal patterns cancel; the first and last three
    months are compared too."""
    m = priorities["month"]
    first_year, last_year = m.iloc[:12].sum(), m.iloc[-12:].sum()
    first_3, last_3 = m.iloc[:3].sum(), m.iloc[-3:].sum()

    def share(totals, numerator, denominator):
        return totals[numerator] / totals[denominator]

    for numerator, denominator, change in [
        ("access", "aware", 0.003), ("statin_high", "statin", 0.01), ("mdi", "inhalers", -0.01),
    ]:  # fmt: skip
        yearly = share(last_year, numerator, denominator) - share(
            first_year, numerator, denominator
        )
        quarterly = share(last_3, numerator, denominator) - share(first_3, numerator, denominator)
        assert yearly * np.sign(change) > abs(change), (numerator, yearly)
        assert quarterly * np.sign(change) > 0, (numerator, quarterly)
    for volume in ("ome", "opioid_items", "high_dose_opioid"):
        rate_first = first_year[volume] / first_year.patients
        rate_last = last_year[volume] / last_year.patients
        assert 0.85 < rate_last / rate_first < 0.99, (volume, rate_last / rate_first)


def test_practices_differ_in_priority_shares(priorities):
    """Each share varies between practices far more than chance would make it vary if every
    practice prescribed alike (binomial dispersion about 1)."""
    p = priorities["practice"]
    for numerator, denominator in [
        ("access", "aware"), ("amox_long", "amox"), ("mdi", "inhalers"),
        ("statin_high", "statin"), ("doac_best_value", "doac"),
        ("strips_recommended", "strips"), ("high_dose_opioid", "long_acting_opioid"),
    ]:  # fmt: skip
        n = p[denominator]
        n = n[n > 0]
        x = p.loc[n.index, numerator]
        overall = x.sum() / n.sum()
        dispersion = (((x - n * overall) ** 2) / (n * overall * (1 - overall))).sum() / (len(n) - 1)
        assert dispersion > 3, (numerator, dispersion)
        shares = x / n
        assert shares.quantile(0.75) - shares.quantile(0.25) > 0.01, numerator


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, seed in [(a, 3), (b, 3), (c, 4)]:
        generate_synthetic(folder, scale="small", seed=seed, end_month="2025-02", n_months=2)
    files_a, files_b, files_c = _file_bytes(a), _file_bytes(b), _file_bytes(c)
    assert files_a == files_b
    assert files_a.keys() == files_c.keys()
    assert files_a["epd/EPD_202502.csv"] != files_c["epd/EPD_202502.csv"]


# ---------------------------------------------------------------------------------------------
# Packaged facts against the real published data (skipped where ../shared is absent)
# ---------------------------------------------------------------------------------------------

needs_realdata = pytest.mark.skipif(
    not REALDATA.is_dir(), reason="../shared/realdata is not available next to the repository"
)


@needs_realdata
@pytest.mark.realdata
def test_packaged_starpu_weights_match_the_published_ones():
    published = json.loads((REALDATA / "openprescribing" / "star_pu_weights.json").read_text())
    packaged = synthetic._age_weights()
    starpu_groups = [g for g in packaged if g in published]
    assert len(starpu_groups) >= 10
    for group in starpu_groups:
        expected = np.array([published[group][band] for band in synthetic.STARPU_BANDS]).T
        assert np.allclose(packaged[group], expected, atol=1e-6), group


@needs_realdata
@pytest.mark.realdata
def test_formulary_codes_and_names_are_real_bnf_presentations():
    adq = pd.read_csv(REALDATA / "openprescribing" / "adqs_april_16.csv", dtype=str)
    names = dict(zip(adq["BNF Code"], adq["BNF Name"]))
    formulary = synthetic._formulary()
    known = formulary[formulary.bnf_code.isin(names)]
    assert len(known) >= 0.9 * len(formulary)
    assert (known.bnf_description == known.bnf_code.map(names)).all()


@needs_realdata
@pytest.mark.realdata
def test_synthetic_organisations_do_not_reuse_real_codes_or_names():
    real_map = pd.read_csv(
        REALDATA / "gp-reg-pat-prac-map_2025-10" / "gp-reg-pat-prac-map_01Oct2025.csv", dtype=str
    )
    orgs = build_organisations("national", seed=42)
    p = orgs.practices
    assert not p.practice_code.isin(real_map.PRACTICE_CODE).any()
    assert not orgs.sub_icbs.sub_icb_code.isin(real_map.SUB_ICB_LOCATION_CODE).any()
    assert not orgs.sub_icbs.icb_code.isin(real_map.ICB_CODE).any()
    assert not orgs.sub_icbs.region_code.isin(real_map.COMM_REGION_CODE).any()
    assert not p.practice_name.isin(real_map.PRACTICE_NAME.str.upper()).any()
    assert not orgs.pcns.pcn_name.isin(real_map.PCN_NAME.str.upper()).any()


# ---------------------------------------------------------------------------------------------
# Month-to-month variation (issue 9)
# ---------------------------------------------------------------------------------------------

# England and Wales bank holidays as published on gov.uk, written out so the rule-based
# calendar is checked against the real dates. 2023 also had 8 May (the coronation), a one-off
# holiday no rule gives, so it is left out here.
PUBLISHED_BANK_HOLIDAYS = {
    2021: ["01-01", "04-02", "04-05", "05-03", "05-31", "08-30", "12-27", "12-28"],
    2022: ["01-03", "04-15", "04-18", "05-02", "08-29", "12-26", "12-27"],  # + 2 Jun, 3 Jun, 19 Sep
    2023: ["01-02", "04-07", "04-10", "05-01", "05-29", "08-28", "12-25", "12-26"],
    2024: ["01-01", "03-29", "04-01", "05-06", "05-27", "08-26", "12-25", "12-26"],
    2025: ["01-01", "04-18", "04-21", "05-05", "05-26", "08-25", "12-25", "12-26"],
    2026: ["01-01", "04-03", "04-06", "05-04", "05-25", "08-31", "12-25", "12-28"],
    2027: ["01-01", "03-26", "03-29", "05-03", "05-31", "08-30", "12-27", "12-28"],
}


def _published_working_days(year: int, month: int) -> int:
    """Weekdays of a month less the published bank holidays in it (independent of the module)."""
    days = pd.date_range(f"{year}-{month:02d}-01", periods=31, freq="D")
    days = days[days.month == month]
    holidays = {f"{year}-{d}" for d in PUBLISHED_BANK_HOLIDAYS[year]}
    return int(sum(d.weekday() < 5 and d.strftime("%Y-%m-%d") not in holidays for d in days))


def test_easter_dates_including_the_extremes():
    cases = {1818: "03-22", 2008: "03-23", 2019: "04-21", 2024: "03-31", 2025: "04-20",
             2026: "04-05", 2038: "04-25", 2285: "03-22"}  # fmt: skip
    assert {y: synthetic.easter_sunday(y).strftime("%m-%d") for y in cases} == cases


@pytest.mark.parametrize("year", sorted(PUBLISHED_BANK_HOLIDAYS))
def test_bank_holidays_by_rule_match_the_published_ones(year):
    by_rule = [d.strftime("%m-%d") for d in synthetic.english_bank_holidays(year)]
    assert len(by_rule) == 8
    if year == 2022:  # the spring holiday moved to 2 June for the jubilee
        by_rule.remove("05-30")
    assert by_rule == PUBLISHED_BANK_HOLIDAYS[year]


def test_working_days_leave_out_weekends_and_bank_holidays():
    for year in (2024, 2025, 2026):
        for month in range(1, 13):
            assert synthetic.working_days(year, month) == _published_working_days(year, month)


def test_monthly_items_follow_working_days_not_weekdays(small):
    """Bank holidays lower a month's items: April 2025 and 2026 lose Good Friday and Easter
    Monday, December loses Christmas. Items of presentations without a seasonal pattern, per
    working day, are steadier than per weekday (0.7 is the model's working-day elasticity)."""
    formulary = synthetic._formulary()
    steady = formulary.bnf_code[formulary.season == "none"]
    epd = small["epd"]
    items = epd[epd.BNF_CODE.isin(steady)].groupby("YEAR_MONTH").ITEMS.sum()
    year, month = items.index // 100, items.index % 100
    working = np.array([_published_working_days(y, m) for y, m in zip(year, month)])
    weekdays = np.array(
        [int((pd.bdate_range(f"{y}-{m:02d}-01", periods=23).month == m).sum())
         for y, m in zip(year, month)]
    )  # Monday to Friday, holidays included
    assert (working < weekdays).sum() >= 8  # months with a bank holiday are in the window

    def cv(values):
        return float(np.std(values) / np.mean(values))

    per_working_day = items.to_numpy() / working**0.7
    per_weekday = items.to_numpy() / weekdays**0.7
    assert cv(per_working_day) < 0.8 * cv(per_weekday)


@pytest.fixture(scope="module")
def four_years(tmp_path_factory):
    """A 48-month small set: monthly items and patients per practice and per sub-ICB."""
    out = tmp_path_factory.mktemp("synthetic_four_years")
    generate_synthetic(out, scale="small", seed=11, end_month="2026-09", n_months=48)
    keys = ["PRACTICE_CODE", "SUB_ICB_LOCATION_CODE"]
    mapping = _read(out / "organisations" / "gp-reg-pat-prac-map.csv", tuple(keys))[keys]
    epd_columns = ["YEAR_MONTH", "PRACTICE_CODE", "BNF_CODE", "ITEMS"]
    epd = pd.concat(
        [_read(p, ("PRACTICE_CODE", "BNF_CODE"))[epd_columns]
         for p in sorted((out / "epd").glob("EPD_*.csv"))],
        ignore_index=True,
    ).merge(mapping, on="PRACTICE_CODE")  # out-of-hours services have no list: left out
    lists = pd.concat(
        [_read(p, ("ORG_CODE",)).assign(YEAR_MONTH=int(p.stem[-6:]))
         for p in sorted((out / "list_sizes").glob("*.csv"))],
        ignore_index=True,
    )
    lists = lists[(lists.SEX == "ALL") & (lists.AGE_GROUP_5 == "ALL")]
    lists = lists.rename(columns={"ORG_CODE": "PRACTICE_CODE"}).merge(mapping, on="PRACTICE_CODE")
    return {"epd": epd, "lists": lists}


def _per_1000(epd: pd.DataFrame, lists: pd.DataFrame, level: str, by: list[str] | None = None):
    """Monthly items per 1,000 patients, indexed by (level code, [by...], YEAR_MONTH)."""
    keys = [level, *(by or []), "YEAR_MONTH"]
    items = epd.groupby(keys).ITEMS.sum().rename("items").reset_index()
    patients = lists.groupby([level, "YEAR_MONTH"]).NUMBER_OF_PATIENTS.sum().rename("patients")
    rate = items.merge(patients.reset_index(), on=[level, "YEAR_MONTH"])
    rate["value"] = 1000 * rate["items"] / rate["patients"]
    return rate.sort_values(keys).reset_index(drop=True)


_CENTRED_2X12 = np.r_[0.5, np.ones(11), 0.5] / 12


def _seasonal_decomposition(values: np.ndarray, calendar_months: np.ndarray):
    """Classical (ratio-to-moving-average) decomposition of a monthly series.

    The ratio of each interior month to a centred 2x12-month moving average takes out level
    and trend; the seasonal index of a calendar month is the mean of its ratios. Returns the
    seasonal index (a Series by calendar month), the irregular ratios (interior months) and
    how many years each index rests on.
    """
    centred = np.convolve(values, _CENTRED_2X12, mode="valid")
    ratio = values[6 : 6 + len(centred)] / centred
    months = calendar_months[6 : 6 + len(centred)]
    index = pd.Series(ratio).groupby(months).mean()
    return index, ratio / index.reindex(months).to_numpy(), len(ratio) // 12


def _irregular_cv(rate: pd.DataFrame, level: str) -> pd.Series:
    """CV of each organisation's seasonally adjusted monthly rate.

    With k years per seasonal index, the index absorbs 1/k of each month's irregular variance;
    the sqrt(k / (k - 1)) factor puts it back, so the figure estimates the series' own CV.
    """
    out = {}
    for code, series in rate.groupby(level):
        _, irregular, years = _seasonal_decomposition(
            series.value.to_numpy(float), series.YEAR_MONTH.to_numpy() % 100
        )
        out[code] = irregular.std(ddof=1) / irregular.mean() * np.sqrt(years / (years - 1))
    return pd.Series(out)


def test_seasonally_adjusted_monthly_series_vary_by_a_few_percent(four_years):
    """The module notes aim at a CV of about 4% (3-5%) for a sub-ICB location's seasonally
    adjusted items per 1,000 patients and about 7-8% for a practice's."""
    epd, lists = four_years["epd"], four_years["lists"]
    sub_icb = _irregular_cv(_per_1000(epd, lists, "SUB_ICB_LOCATION_CODE"), "SUB_ICB_LOCATION_CODE")
    assert len(sub_icb) == 6
    assert sub_icb.between(0.03, 0.08).sum() >= 5, sub_icb.round(4).to_dict()
    assert sub_icb.between(0.02, 0.10).all(), sub_icb.round(4).to_dict()
    practice = _irregular_cv(_per_1000(epd, lists, "PRACTICE_CODE"), "PRACTICE_CODE")
    assert 0.04 <= practice.median() <= 0.10


def test_no_sub_icb_series_is_a_straight_line(four_years):
    """Every sub-ICB location's monthly items per 1,000 patients, in total and for each BNF
    chapter, bends from month to month (second differences are not all about zero)."""
    epd = four_years["epd"].assign(chapter=lambda d: d.BNF_CODE.str[:2])
    rate = _per_1000(epd, four_years["lists"], "SUB_ICB_LOCATION_CODE", ["chapter"])
    straight = []
    for key, series in rate.groupby(["SUB_ICB_LOCATION_CODE", "chapter"]):
        y = series.value.to_numpy(float)
        if len(y) == 48 and np.abs(np.diff(y, 2)).max() <= 1e-3 * np.abs(y).mean():
            straight.append(key)
    assert rate.groupby(["SUB_ICB_LOCATION_CODE", "chapter"]).ngroups >= 60
    assert straight == []


def test_spc_of_sub_icb_series_is_mostly_common_cause(four_years):
    """XmR charts of each sub-ICB location's seasonally adjusted monthly items per 1,000
    patients, in total and for each BNF chapter with at least 50 items a month, flag special
    causes in few places: fewer than 10% of series flag half or more of their points.

    Seasonal adjustment divides each month by its calendar month's seasonal index (classical
    decomposition), so trends stay in: noise too small for the trends, or noise that is
    correlated from month to month, would make most points special causes (runs and trends)."""
    from moopt.stats import calculate_spc

    epd = four_years["epd"].assign(chapter=lambda d: d.BNF_CODE.str[:2])
    lists = four_years["lists"]
    total = _per_1000(epd.assign(chapter="all"), lists, "SUB_ICB_LOCATION_CODE", ["chapter"])
    by_chapter = _per_1000(epd, lists, "SUB_ICB_LOCATION_CODE", ["chapter"])
    rate = pd.concat([total, by_chapter], ignore_index=True)
    big = rate.groupby(["SUB_ICB_LOCATION_CODE", "chapter"]).items.transform("min") >= 50
    rate = rate[big]
    adjusted = []
    for (code, chapter), series in rate.groupby(["SUB_ICB_LOCATION_CODE", "chapter"]):
        values = series.value.to_numpy(float)
        months = series.YEAR_MONTH.to_numpy() % 100
        index, _, _ = _seasonal_decomposition(values, months)
        adjusted.append(pd.DataFrame({
            "series": f"{code}/{chapter}",
            "period": series.YEAR_MONTH.to_numpy(),
            "value": values / index.reindex(months).to_numpy(),
        }))  # fmt: skip
    charts = calculate_spc(
        pd.concat(adjusted, ignore_index=True),
        series_columns=["series"],
        improvement_direction="neutral",
        period_type=None,
    )
    flagged = (charts.spc_point_type.astype(str) != "common_cause").groupby(charts.series).mean()
    assert len(flagged) >= 40
    assert (flagged >= 0.5).mean() < 0.10, flagged[flagged >= 0.5].round(2).to_dict()
