"""National priority indicators on the real September 2017 sample, checked against the raw file.

The real EPD rows, list sizes and ODS records of four practices are ingested and run through
the engine with the new definitions. Each expected value is computed here with plain pandas
from the published CSV: course lengths from QUANTITY, strengths parsed from the BNF
description text (not from moopt's lookups), UK-AWaRe classes and carbon factors written out
below from the reference tables for the chemicals and products that occur in the sample.
"""

from __future__ import annotations

import re

import ibis
import pandas as pd
import pytest

from factories import REALDATA
from moopt.indicators import load_indicators
from moopt.indicators.engine import IndicatorEngine
from moopt.store import Store, ingest_files

pytestmark = [pytest.mark.realdata]
SAMPLE = REALDATA / "openprescribing"
MONTH = "2017-09-01"
PRACTICES = ("L84073", "B85010", "B85054", "L84018")
IDS = ["AMR07", "AMR08", "RES06", "CVD04", "PAIN05"]

# UK-AWaRe 2024 classes of the antibacterial chemicals in the September 2017 sample.
ACCESS = {"0501011P0", "0501012G0", "0501013B0", "0501015P0", "0501021L0", "0501021M0", "0501030I0",
          "0501080D0", "0501080W0", "0501110C0", "0501130R0"}
WATCH_OR_RESERVE = {"0501013K0", "0501021A0", "0501021K0", "0501030L0", "0501030P0", "0501030T0", "0501050A0",
                    "0501050B0", "0501050C0", "0501050H0", "0501060D0", "0501120L0", "0501120P0", "0501120X0"}
# kg CO2e per inhaler (OpenPrescribing carbon_salbutamol) of the salbutamol inhalers in the sample.
CARBON = {"0301011R0AAAPAP": 25.24, "0301011R0BEAIAP": 28.26, "0301011R0AABUBU": 11.79,
          "0301011R0BIAFAP": 11.95, "0301011R0BIAGBU": 12.08, "0301011R0BMABBU": 9.72,
          "0301011R0BXABCC": 3.75, "0301011R0BWAABZ": 0.62, "0301011R0BEAHAQ": 0.58, "0301011R0AAAQAQ": 0.58}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    folder = SAMPLE / "e2e-data-1"
    if not folder.is_dir():
        pytest.skip(f"real NHS sample data not found at {REALDATA} (it lives beside the repository)")
    store_path = tmp_path_factory.mktemp("real_priorities") / "moopt.duckdb"
    organisations = {"epraccur": folder / "epraccur.csv", "eccg": folder / "eccg.csv", "eauth": folder / "eauth.csv"}
    with Store(store_path) as store:
        ingest_files(store, organisations, [folder / "epd_201709.csv"], [folder / "gp-reg-pat-prac-quin-age.csv"],
                     max_reject_share=1.0)
    backend = ibis.duckdb.connect(str(store_path))
    IndicatorEngine(backend, load_indicators(ids=IDS)).run()
    values = backend.table("indicator_values").to_pandas()
    backend.disconnect()
    raw = pd.read_csv(folder / "epd_201709.csv", dtype={"BNF_CODE": str})
    raw["BNF_CODE"] = raw["BNF_CODE"].str.strip()
    lists = pd.read_csv(folder / "gp-reg-pat-prac-quin-age.csv")
    lists = lists[(lists.SEX == "ALL") & (lists.AGE_GROUP_5 == "ALL")].set_index("ORG_CODE")["NUMBER_OF_PATIENTS"]
    return values, raw, lists


def computed(values: pd.DataFrame, indicator: str, practice: str) -> pd.Series:
    row = values[(values.indicator_id == indicator) & (values.org_level == "practice")
                 & (values.org_code == practice) & (values.period == pd.Timestamp(MONTH))
                 & (values.period_type == "month")]
    assert len(row) == 1
    return row.iloc[0]


def at(raw: pd.DataFrame, practice: str) -> pd.DataFrame:
    return raw[raw.PRACTICE_CODE == practice]


@pytest.mark.parametrize("practice", PRACTICES)
def test_amr07_access_share_equals_the_raw_rows(real, practice):
    values, raw, _ = real
    rows = at(raw, practice)
    chemical = rows.BNF_CODE.str[:9]
    access = rows.loc[chemical.isin(ACCESS), "ITEMS"].sum()
    classified = access + rows.loc[chemical.isin(WATCH_OR_RESERVE), "ITEMS"].sum()
    row = computed(values, "AMR07", practice)
    assert (row.numerator, row.denominator) == (access, classified)
    assert row.value == pytest.approx(100 * access / classified)


@pytest.mark.parametrize("practice", PRACTICES)
def test_amr08_amoxicillin_courses_equal_the_raw_rows(real, practice):
    values, raw, _ = real
    rows = at(raw, practice)
    amox_500 = rows[rows.BNF_CODE.str.startswith("0501013B0") & rows.BNF_CODE.str.endswith("AB")]
    longer = amox_500.loc[amox_500.QUANTITY > 15, "ITEMS"].sum()
    row = computed(values, "AMR08", practice)
    assert (row.numerator, row.denominator) == (longer, amox_500.ITEMS.sum())
    assert amox_500.ITEMS.sum() > 0 and longer > 0  # every practice has amoxicillin 500 mg, some longer


@pytest.mark.parametrize("practice", PRACTICES)
def test_res06_carbon_per_inhaler_equals_the_raw_rows(real, practice):
    values, raw, _ = real
    rows = at(raw, practice)
    inhalers = rows[rows.BNF_CODE.isin(CARBON)]
    kg = (inhalers.TOTAL_QUANTITY * inhalers.BNF_CODE.map(CARBON)).sum()
    row = computed(values, "RES06", practice)
    assert row.numerator == pytest.approx(kg, rel=1e-9)
    assert row.denominator == inhalers.TOTAL_QUANTITY.sum()


def _strength_mg(description: str) -> float:
    return float(re.search(r"(\d+(?:\.\d+)?)mg", description).group(1))


@pytest.mark.parametrize("practice", PRACTICES)
def test_cvd04_high_intensity_share_from_the_descriptions(real, practice):
    values, raw, _ = real
    rows = at(raw, practice)
    statins = rows[rows.BNF_CODE.str[:9].isin(["0212000B0", "0212000AA", "0212000Y0", "0212000X0", "0212000M0"])]
    solid = statins[statins.BNF_DESCRIPTION.str.contains("_Tab|_Cap")]
    strength = solid.BNF_DESCRIPTION.map(_strength_mg)
    chemical = solid.BNF_CODE.str[:9]
    high = (((chemical == "0212000B0") & (strength >= 20)) | ((chemical == "0212000AA") & (strength >= 10))
            | ((chemical == "0212000Y0") & (strength == 80)))
    row = computed(values, "CVD04", practice)
    assert (row.numerator, row.denominator) == (solid.loc[high, "ITEMS"].sum(), solid.ITEMS.sum())


@pytest.mark.parametrize("practice", PRACTICES)
def test_pain05_ddds_from_the_descriptions(real, practice):
    values, raw, lists = real
    rows = at(raw, practice)
    gaba = rows[rows.BNF_CODE.str[:9].isin(["0408010G0", "0408010AE"])]
    assert gaba.BNF_DESCRIPTION.str.contains("_Cap|_Tab").all()  # no liquids in this sample
    ddd = gaba.BNF_CODE.str[:9].map({"0408010G0": 1800.0, "0408010AE": 300.0})
    expected = (gaba.TOTAL_QUANTITY * gaba.BNF_DESCRIPTION.map(_strength_mg) / ddd).sum()
    row = computed(values, "PAIN05", practice)
    assert row.numerator == pytest.approx(expected, rel=1e-9)
    assert row.denominator == lists[practice]
    assert row.value == pytest.approx(expected / lists[practice] * 1000, rel=1e-9)
