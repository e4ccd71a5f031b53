"""The indicator engine on small hand-made data, with every expected value worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import factories as f
from moopt.indicators.denominators import WEIGHTS_FILE

MONTHS = f.months_between("2025-01", 13)
# Practice list sizes: (male 25-29, female 70-74). A00004 has no list size in the last month.
LISTS = {"A00001": (1000, 500), "A00002": (3000, 0), "A00003": (200, 800), "A00004": (600, 600)}
# Antibacterial items per month by practice: co-amoxiclav, amoxicillin, antituberculosis (excluded
# from AMR03), plus the first month of each practice differs to exercise rolling sums.
AMOX = {"A00001": 10, "A00002": 40, "A00003": 5, "A00004": 12}
COAMOX = {"A00001": 2, "A00002": 2, "A00003": 5, "A00004": 0}
TB = 3


def weight(group: str, band: str, sex: str) -> float:
    """The 2013 STAR-PU weight straight from the package data file (not via the engine)."""
    table = pd.read_csv(WEIGHTS_FILE)
    row = table[(table.star_pu_group == group) & (table.age_band == band)]
    return float(row[sex].iloc[0])


@pytest.fixture(scope="module")
def values(tmp_path_factory) -> pd.DataFrame:
    d = tmp_path_factory.mktemp("engine")
    f.write_map(d / "map.csv")
    rx, ls = [], []
    for i, month in enumerate(MONTHS):
        for p in f.PRACTICES:
            extra = 1 if i == 0 else 0  # one more amoxicillin item in the first month
            rx.append(f.epd_row(month, p, "0501013B0AAABAB", AMOX[p] + extra))  # amoxicillin 050101
            if COAMOX[p]:
                rx.append(f.epd_row(month, p, "0501013K0AAAJAJ", COAMOX[p]))  # co-amoxiclav
            rx.append(f.epd_row(month, p, "0501090K0AAACAC", TB))  # isoniazid, antituberculosis
            # AMR05 presentations: trimethoprim 200mg (AE) 3-day = 6 tablets; 14 tablets is longer.
            rx.append(f.epd_row(month, p, "0501080W0AAAEAE", 4, quantity=6))
            rx.append(f.epd_row(month, p, "0501080W0AAAEAE", 1, quantity=14))
            rx.append(f.epd_row(month, p, "0501080W0BBAAAE", 2, quantity=14))  # a branded equivalent
            rx.append(f.epd_row(month, p, "0501080W0AAADAD", 5, quantity=28))  # 100mg: not an AMR05 code
            rx.append(f.epd_row(month, p, "0501130R0AAAAAA", 3, quantity=12))  # nitrofurantoin 50mg, at limit
            # SAF02: zopiclone ADQs count, melatonin ADQs do not.
            rx.append(f.epd_row(month, p, "0401010Z0AAAAAA", 2, quantity=28, adq=56))
            rx.append(f.epd_row(month, p, "0401010ADAAAAAA", 1, quantity=30, adq=30))
            if not (p == "A00004" and month == MONTHS[-1]):
                male, female = LISTS[p]
                ls += f.list_size_rows(month, p, {("MALE", "25_29"): male, ("FEMALE", "70_74"): female})
    f.write_epd(d / "epd.csv", rx)
    f.write_list_sizes(d / "ls.csv", ls)
    table, _, report = f.run_engine(d)
    assert report.practice_months_without_list_size == 1
    return table


def pick(values, ind, level, code, month, period_type="month") -> pd.Series:
    rows = values[(values.indicator_id == ind) & (values.org_level == level) & (values.org_code == code)
                  & (values.period == pd.Timestamp(month + "-01")) & (values.period_type == period_type)]
    assert len(rows) == 1, f"expected one row for {ind} {level} {code} {month} {period_type}, got {len(rows)}"
    return rows.iloc[0]


def test_amr01_items_per_star_pu_practice(values):
    row = pick(values, "AMR01", "practice", "A00001", "2025-06")
    items = AMOX["A00001"] + COAMOX["A00001"] + TB + 4 + 1 + 2 + 5 + 3  # every 0501 row
    star_pu = 1000 * weight("oral_antibacterials_item", "25-34", "male") + \
        500 * weight("oral_antibacterials_item", "65-74", "female")
    assert row.numerator == items
    assert row.denominator == pytest.approx(star_pu, rel=1e-12)
    assert row.value == pytest.approx(items / star_pu, rel=1e-12)


def test_amr02_broad_spectrum_percentage(values):
    row = pick(values, "AMR02", "practice", "A00003", "2025-06")
    # numerator: co-amoxiclav 5; denominator: 050101 (amoxicillin 5 + co-amoxiclav 5) +
    # 050108 trimethoprim (4 + 1 + 2 + 5) + 050113 nitrofurantoin 3. Antituberculosis is not included.
    assert row.numerator == 5
    assert row.denominator == 5 + 5 + 12 + 3
    assert row.value == pytest.approx(100 * 5 / 25)


def test_amr03_excludes_antituberculosis_and_scales_per_1000(values):
    row = pick(values, "AMR03", "practice", "A00002", "2025-03")
    items = 40 + 2 + 4 + 1 + 2 + 5 + 3  # TB items left out
    assert row.numerator == items
    assert row.denominator == 3000
    assert row.value == pytest.approx(items / 3000 * 1000)


def test_amr05_quantity_threshold_strength_suffix_and_brands(values):
    row = pick(values, "AMR05", "practice", "A00001", "2025-04")
    # AE rows: 4 items of 6 (not > 6), 1 item of 14 and a branded 2 of 14 -> 3 long;
    # nitrofurantoin 50mg caps (AA) 3 items of 12: exactly at the limit, not longer.
    # The 100mg trimethoprim (AD) is not one of the presentations.
    assert row.numerator == 3
    assert row.denominator == 4 + 1 + 2 + 3
    assert row.value == pytest.approx(30.0)


def test_saf02_adq_excludes_melatonin(values):
    row = pick(values, "SAF02", "practice", "A00002", "2025-05")
    star_pu = 3000 * weight("hypnotics_adq", "25-34", "male")
    assert row.numerator == 56
    assert row.denominator == pytest.approx(star_pu)


def test_organisation_value_is_ratio_of_sums_not_mean_of_ratios(values):
    # Sub-ICB S1A holds A00001 and A00002.
    row = pick(values, "AMR03", "sub_icb", "S1A", "2025-03")
    num = {p: AMOX[p] + COAMOX[p] + 4 + 1 + 2 + 5 + 3 for p in ("A00001", "A00002")}
    den = {"A00001": 1500, "A00002": 3000}
    expected = sum(num.values()) / sum(den.values()) * 1000
    mean_of_ratios = np.mean([num[p] / den[p] * 1000 for p in num])
    assert row.value == pytest.approx(expected)
    assert not math.isclose(row.value, mean_of_ratios, rel_tol=1e-6)


def test_england_and_every_level_present(values):
    levels = set(values.org_level)
    assert levels == {"practice", "pcn", "sub_icb", "icb", "region", "england"}
    eng = pick(values, "AMR02", "england", "ENG", "2025-06")
    assert eng.numerator == sum(COAMOX.values())
    practice = pick(values, "AMR02", "practice", "A00003", "2025-06")
    assert practice.england_value == pytest.approx(eng.value)


def test_missing_list_size_leaves_practice_value_empty_and_out_of_higher_levels(values):
    last = MONTHS[-1]
    row = pick(values, "AMR03", "practice", "A00004", last)
    assert math.isnan(row.value) and math.isnan(row.denominator)
    region = pick(values, "AMR03", "region", "Y02", last)  # A00004 is Y02's only practice
    assert math.isnan(region.value) and region.n_practices == 0  # kept, with no value
    eng = pick(values, "AMR03", "england", "ENG", last)
    assert eng.denominator == 1500 + 3000 + 1000  # A00004 left out of both sums
    # Prescribing-based indicators do not need a list size.
    assert not math.isnan(pick(values, "AMR02", "practice", "A00004", last).value)


def test_rolling_12_months_sum_numerators_and_average_population(values):
    row = pick(values, "AMR03", "practice", "A00001", "2025-12", "rolling_12m")
    monthly = AMOX["A00001"] + COAMOX["A00001"] + 4 + 1 + 2 + 5 + 3
    assert row.numerator == 12 * monthly + 1  # includes the first month's extra item
    assert row.denominator == 1500  # mean list over the 12 months, not the sum
    later = pick(values, "AMR03", "practice", "A00001", "2026-01", "rolling_12m")
    assert later.numerator == 12 * monthly  # the first month has rolled out
    prescribing = pick(values, "AMR02", "practice", "A00001", "2025-12", "rolling_12m")
    assert prescribing.denominator == 12 * (10 + 2 + 12 + 3) + 1  # summed for prescribing denominators
    # No rolling value before 12 months of data exist.
    early = values[(values.period_type == "rolling_12m") & (values.period < pd.Timestamp("2025-12-01"))]
    assert early.empty
    # A00004 lacks its last list size, so no complete 12 months ends in 2026-01.
    missing = values[(values.indicator_id == "AMR03") & (values.org_code == "A00004")
                     & (values.period_type == "rolling_12m") & (values.period == pd.Timestamp("2026-01-01"))]
    assert missing.empty


def test_percentiles_and_deciles_follow_openprescribing(values):
    rows = values[(values.indicator_id == "AMR02") & (values.org_level == "practice")
                  & (values.period == pd.Timestamp("2025-06-01")) & (values.period_type == "month")]
    by_code = rows.set_index("org_code")
    v = by_code["value"]
    ranks = v.rank(method="min")
    expected = (ranks - 1) / (len(v) - 1) * 100
    pd.testing.assert_series_equal(by_code["percentile"], expected, check_names=False)
    for d in range(10, 100, 10):
        assert by_code[f"decile_{d}"].iloc[0] == pytest.approx(np.percentile(v.to_numpy(), d))
    # A00004 has no co-amoxiclav: value 0, lowest, percentile 0.
    assert by_code.loc["A00004", "percentile"] == 0
    assert values.loc[values.org_level == "england", "percentile"].isna().all()


def test_zero_denominator_gives_no_value(values):
    # SAF01 (NSAIDs) has no prescribing in this data: 0/0 has no value, not 0 or an error.
    row = pick(values, "SAF01", "practice", "A00001", "2025-02")
    assert row.denominator == 0 and math.isnan(row.value)
