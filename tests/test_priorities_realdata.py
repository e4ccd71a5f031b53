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
IDS = ["AMR07", "AMR08", "RES06", "CVD04", "PAIN05", "PAIN01", "PAIN02", "PAIN03", "RES04", "RES05"]

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


# --- opioids (PAIN01-03), SABA inhalers (RES04), inhaler devices (RES05) --------------------------------
# OME factors (mg oral morphine per mg) by BNF chemical and route, indicators-current.md 3.3.
OME_FACTOR = {("0407010F0", "oral"): 0.1, ("0407010N0", "oral"): 0.1, ("0407010Q0", "oral"): 0.1, ("040702040", "oral"): 0.1,
              ("0407020C0", "oral"): 0.1, ("0407020G0", "oral"): 0.1, ("0407020A0", "transdermal"): 100,
              ("0407020A0", "buccal"): 130, ("0407020B0", "transdermal"): 100, ("0407020AD", "oral"): 1.5,
              ("0407020AD", "injection"): 3, ("0407020AF", "oral"): 1.5, ("0407020AG", "oral"): 0.4,
              ("0407020K0", "injection"): 3.3, ("0407020Q0", "oral"): 1}
# Brands whose description gives no strength: Remedeine Forte is paracetamol 500 mg / dihydrocodeine 30 mg.
OPIOID_MG = {"0407010N0BGABAI": 30.0}
# Long-acting forms of the high-dose measures whose description does not say M/R (12-hourly brands).
LONG_ACTING_BRANDS = ("Zomorph", "MST Continus")


def _opioid(code: str, description: str) -> tuple[str, float]:
    """(route, mg of opioid per unit of quantity) parsed from an EPD description."""
    form = description.split("_", 1)[1]
    if "Patch" in description:
        rate = float(re.search(r"(\d+(?:\.\d+)?)mcg", form).group(1))
        hours = 72 if code.startswith("0407020A0") else (168 if rate <= 20 else 96)
        return "transdermal", rate * hours / 1000
    if code in OPIOID_MG:
        return "oral", OPIOID_MG[code]
    if "Inj" in form:
        per_ml = re.search(r"(\d+(?:\.\d+)?)mg/ml (\d+(?:\.\d+)?)ml Amp", form)
        if per_ml:
            return "injection", float(per_ml.group(1)) * float(per_ml.group(2))
        return "injection", float(re.search(r"Inj (\d+(?:\.\d+)?)mg Amp", form).group(1))
    route = "buccal" if "Loz" in form else "oral"
    liquid = re.search(r"(\d+(?:\.\d+)?)mg/(\d*)ml", form)
    if liquid:
        return route, float(liquid.group(1)) / float(liquid.group(2) or 1)
    strengths = [(float(v), unit) for v, unit in re.findall(r"(\d+(?:\.\d+)?)(mcg|mg)?", form) if v]
    value, unit = strengths[1] if description.startswith("Paracet/Dihydrocodeine") else strengths[0]
    return route, value / 1000 if unit == "mcg" else value


def _opioid_rows(rows: pd.DataFrame) -> pd.DataFrame:
    codes = ("0407010F0", "0407010M0", "0407010N0", "0407010Q0", "0407010W0", "040702")
    # Left out of the OME lookup (so not counted): meptazinol, sublingual fentanyl and buprenorphine, nasal sprays
    # and Migraleve Yellow (its name gives no strength).
    left_out = rows.BNF_CODE.str.startswith("0407020L0") | rows.BNF_DESCRIPTION.str.contains("Subling|Nsl Spy|Migraleve")
    opioids = rows[rows.BNF_CODE.str.startswith(codes) & ~left_out].copy()
    parsed = [_opioid(c, d) for c, d in zip(opioids.BNF_CODE, opioids.BNF_DESCRIPTION)]
    opioids["route"] = [r for r, _ in parsed]
    opioids["mg"] = [m for _, m in parsed]
    return opioids


@pytest.mark.parametrize("practice", PRACTICES)
def test_pain01_ome_from_the_descriptions(real, practice):
    values, raw, lists = real
    rows = at(raw, practice)
    opioids = _opioid_rows(rows)
    factor = [OME_FACTOR[(c[:9], r)] for c, r in zip(opioids.BNF_CODE, opioids.route)]
    expected = (opioids.TOTAL_QUANTITY * opioids.mg * factor).sum()
    row = computed(values, "PAIN01", practice)
    assert expected > 0
    assert row.numerator == pytest.approx(expected, rel=1e-9)
    assert row.value == pytest.approx(expected / lists[practice] * 1000, rel=1e-9)


def _long_acting_high_dose(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    opioids = _opioid_rows(rows)
    chemical = opioids.BNF_CODE.str[:9]
    patch = opioids.route == "transdermal"
    oral_mr = (opioids.route == "oral") & chemical.isin(["0407020AD", "0407020AF", "0407020Q0", "0407020AG", "040702050"]) \
        & (opioids.BNF_DESCRIPTION.str.contains("M/R") | opioids.BNF_DESCRIPTION.str.startswith(LONG_ACTING_BRANDS))
    long_acting = opioids[patch | oral_mr]
    # Patches by mcg/h; 12-hourly oral forms by mg (Opioids Aware thresholds as OpenPrescribing uses them).
    rate = long_acting.BNF_DESCRIPTION.str.extract(r"(\d+(?:\.\d+)?)mcg", expand=False).astype(float)
    mg = long_acting.mg
    threshold = long_acting.BNF_CODE.str[:9].map({"0407020AD": 30, "0407020AF": 30, "0407020Q0": 45,
                                                  "0407020AG": 112.5, "040702050": 9})
    high = ((long_acting.BNF_CODE.str.startswith("0407020A0") & (rate >= 37.5))
            | (long_acting.BNF_CODE.str.startswith("0407020B0") & (rate > 39.375))
            | (long_acting.route == "oral") & (mg >= threshold))
    assert not long_acting.BNF_DESCRIPTION.str.startswith("MXL").any()  # no once-daily morphine here
    return long_acting, high


@pytest.mark.parametrize("practice", PRACTICES)
def test_pain02_and_pain03_high_dose_long_acting_opioids(real, practice):
    values, raw, lists = real
    long_acting, high = _long_acting_high_dose(at(raw, practice))
    high_items = long_acting.loc[high, "ITEMS"].sum()
    pain02, pain03 = computed(values, "PAIN02", practice), computed(values, "PAIN03", practice)
    assert pain02.numerator == high_items and pain02.denominator == lists[practice]
    assert (pain03.numerator, pain03.denominator) == (high_items, long_acting.ITEMS.sum())


@pytest.mark.parametrize("practice", PRACTICES)
def test_res04_saba_inhalers_from_the_descriptions(real, practice):
    values, raw, lists = real
    rows = at(raw, practice)
    saba = rows[rows.BNF_CODE.str[:9].isin(["0301011R0", "0301011V0"])]
    doses = saba.BNF_DESCRIPTION.str.extract(r"\((\d+) ?D\)", expand=False).astype(float)
    inhalers = saba[doses.notna()]  # metered-dose and powder inhalers name their doses; nebules, tablets do not
    per_inhaler = doses[doses.notna()]
    count = (inhalers.TOTAL_QUANTITY.where(inhalers.QUANTITY <= 9, inhalers.TOTAL_QUANTITY / per_inhaler)).sum()
    row = computed(values, "RES04", practice)
    assert count > 0
    assert row.numerator == pytest.approx(count, rel=1e-12)
    assert row.value == pytest.approx(count / lists[practice] * 1000, rel=1e-9)


# Device of the non-salbutamol inhalers at these practices whose description names no device (their brands do).
DEVICE_BY_CODE = {
    "0302000N0AAAXAX": "DPI", "0302000N0AAAYAY": "DPI", "0302000N0AAAZAZ": "DPI",  # Seretide Accuhaler generics (60D)
    "0302000N0AABEBE": "MDI", "0302000N0AABFBF": "MDI", "0302000N0AABGBG": "MDI",  # Seretide Evohaler generics (120D)
    "0302000N0AABKBK": "MDI",  # Flutiform generic
    "0302000V0AAAAAA": "DPI", "0302000V0AAABAB": "DPI",  # Relvar Ellipta generics
    "0301040W0AAAAAA": "DPI", "0301020T0AAAAAA": "DPI",  # Anoro and Incruse Ellipta generics
    "0301011V0AAALAL": "DPI",  # terbutaline 'B/A Inha' = Bricanyl Turbohaler
    "0301020Q0AAACAC": "soft_mist",  # tiotropium 'Inha CFF + Dev' = Spiriva Respimat
    "0302000K0AAALAL": "DPI", "0302000K0AAAMAM": "DPI",  # budesonide/formoterol 'Inh B/A' = Symbicort Turbohaler
}


def _device(code: str, description: str) -> str | None:
    if code in DEVICE_BY_CODE:
        return DEVICE_BY_CODE[code]
    if "Respimat" in description:
        return "soft_mist"
    if re.search(r"Evohaler|Modulite|Qvar|Fostair_Inh|Flutiform|Sirdupla|Autohaler|E-Breathe|CFF", description):
        return "MDI"
    if re.search(r"Pdr|Turbohaler|Accuhaler|Easyhaler|Ellipta|Spiromax|NEXThaler|Genuair|Breezhaler|Novolizer|Inh Cap",
                 description):
        return "DPI"
    return None  # tablets, nebules, liquids


@pytest.mark.parametrize("practice", PRACTICES)
def test_res05_mdi_share_of_other_inhalers_from_the_descriptions(real, practice):
    values, raw, _ = real
    rows = at(raw, practice)
    rows = rows[rows.BNF_CODE.str.startswith(("0301", "0302", "0303")) & ~rows.BNF_CODE.str.startswith("0301011R0")]
    device = pd.Series([_device(c, d) for c, d in zip(rows.BNF_CODE, rows.BNF_DESCRIPTION)], index=rows.index)
    row = computed(values, "RES05", practice)
    assert (row.numerator, row.denominator) == (rows.loc[device == "MDI", "ITEMS"].sum(),
                                                rows.loc[device.notna(), "ITEMS"].sum())
    assert 0 < row.value < 100
