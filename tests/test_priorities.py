"""The current national priority indicators and lookup-based measures, on hand-made data.

Two months of prescribing for one practice (2,000 patients) are written in the published
EPD and list-size layouts, ingested into a store and run through the engine with the real
definitions and the packaged lookups. Every expected value is worked out by hand below from
the rows and from the lookup facts quoted in the comments (not read from the lookup files),
so a wrong factor, key or class in a lookup fails here as well as a wrong engine.

June and August 2025 straddle version 4 of NHS England's glucose strip list (July 2025),
which exercises the dated lookup.
"""

from __future__ import annotations

import copy
import math

import ibis
import numpy as np
import pandas as pd
import pytest

import factories as f
from moopt.indicators import load_indicators
from moopt.indicators.check import coverage
from moopt.indicators.definitions import DefinitionError, parse_definition
from moopt.indicators.engine import IndicatorEngine
from moopt.store import Store, ingest_files

JUNE, AUGUST = "2025-06", "2025-08"
PRACTICE = "A00001"
PATIENTS = 2000  # 1,000 men aged 25-29 and 1,000 women aged 30-34
NEW_IDS = ["AMR07", "AMR08", "AMR09", "PAIN01", "PAIN02", "PAIN03", "PAIN05", "RES04", "RES05", "RES06", "RES08",
           "CVD03", "CVD04", "DIA04", "VAL01"]


def rx(code: str, items: int, quantity: float = 28.0, cost: float = 10.0) -> dict:
    return {"code": code, "items": items, "quantity": quantity, "cost": cost}


ROWS = [
    # --- antibacterials: UK-AWaRe class, course length ---
    rx("0501013B0AAABAB", 10, quantity=15),  # amoxicillin 500 mg, 5 days: Access; AMR08 den
    rx("0501013B0AAABAB", 4, quantity=21),  # amoxicillin 500 mg, 7 days: Access; AMR08 num
    rx("0501013B0BBABAB", 1, quantity=30),  # branded amoxicillin 500 mg (suffix AB), 10 days: AMR08 num
    rx("0501013B0AAAAAA", 3, quantity=21),  # amoxicillin 250 mg: Access; not an AMR08 presentation
    rx("0501013K0AAAJAJ", 5),  # co-amoxiclav: Watch (UK keeps it Watch)
    rx("0501021L0AAAAAA", 2),  # cefalexin: Access since UK-AWaRe 2024 (first-generation cephalosporin)
    rx("0501050B0AAAAAA", 3),  # clarithromycin: Watch
    rx("0501030I0AAABAB", 2, quantity=6),  # doxycycline 100 mg, 6 units: Access; AMR09 den only
    rx("0501030I0AAABAB", 1, quantity=7),  # doxycycline 100 mg, 7 units: AMR09 num
    rx("0501030Z0AAAAAA", 2, quantity=14),  # doxycycline 40 mg m/r (Efracea): Access; not AMR09
    rx("0501030I0AAAAAA", 1, quantity=56),  # doxycycline 50 mg: Access; not an AMR09 presentation
    rx("0501070W0AAAAAA", 1),  # linezolid: Reserve
    rx("0501130H0AAAAAA", 4),  # methenamine: Other, in neither part of AMR07
    rx("0501070X0AAAAAA", 2),  # rifaximin: not classed by UK-AWaRe -> reported as missing
    rx("0501090K0AAAAAA", 3),  # isoniazid (050109): excluded by the code set, so not reported
    rx("0501070I0AAAAAA", 1),  # colistimethate: excluded by the code set
    # --- gabapentinoids (strength x quantity / DDD) ---
    rx("0408010G0AAABAB", 2, quantity=100),  # gabapentin 300 mg caps: 200 caps x 300 / 1800
    rx("0408010AEBCADAC", 1, quantity=56),  # Rewisca 75 mg (brand; generic AC): 56 x 75 / 300
    rx("0408010G0AABGBG", 1, quantity=150),  # gabapentin oral solution 50 mg/ml: 150 ml x 50 / 1800
    rx("0408010AEAAAZAZ", 1, quantity=28),  # a pregabalin code the lookup lacks -> reported
    # --- salbutamol inhalers (quantity = inhalers) ---
    rx("0301011R0BEAIAP", 3, quantity=2),  # Ventolin Evohaler: MDI, 28.26 kg each
    rx("0301011R0AAAPAP", 5, quantity=1),  # generic salbutamol CFC-free MDI: 25.24 kg
    rx("0301011R0BIAGBU", 1, quantity=2),  # Salamol Easi-Breathe: breath-actuated MDI, 12.08 kg
    rx("0301011R0BWAABZ", 2, quantity=1),  # Easyhaler salbutamol 100 mcg: DPI, 0.62 kg
    rx("0301011R0BWABCA", 1, quantity=1),  # Easyhaler 200 mcg: not in the carbon list -> reported
    rx("0301011R0AAAXAX", 1, quantity=20),  # nebuliser solution: not an inhaler -> reported
    # --- DOACs ---
    rx("0208020Z0AAABAB", 6),  # generic apixaban 5 mg tablets: best value
    rx("0208020Y0AAACAC", 4),  # generic rivaroxaban 20 mg tablets: best value
    rx("0208020Y0BBACAC", 3),  # Xarelto 20 mg: not best value
    rx("0208020Z0BBABAB", 2),  # Eliquis 5 mg: not best value
    rx("0208020AAAAABAB", 1),  # edoxaban: not best value
    rx("0208020X0AAABAB", 1),  # dabigatran: not best value
    rx("0208020V0AAAAAA", 5),  # warfarin: not a DOAC
    # --- statins ---
    rx("0212000B0AAABAB", 10),  # atorvastatin 20 mg: high
    rx("0212000B0AAAAAA", 4),  # atorvastatin 10 mg: medium
    rx("0212000B0BBAEAL", 1),  # Lipitor chewable 10 mg (generic AL; chars 12-13 differ): medium
    rx("0212000AAAAAAAA", 2),  # rosuvastatin 10 mg: high
    rx("0212000Y0AAADAD", 6),  # simvastatin 40 mg: medium
    rx("0212000Y0BDACAD", 1),  # Simvador 40 mg (generic AD): medium
    rx("0212000Y0AAAHAH", 1),  # simvastatin 80 mg: high
    rx("0212000X0AAABAB", 2),  # pravastatin 20 mg: low
    rx("0212000Y0AAAKAK", 1),  # simvastatin suspension: a liquid, in neither part
    rx("0212000L0AAAAAA", 3),  # ezetimibe: not a statin
    # --- blood glucose strips (list is dated) ---
    rx("0601060D0EKAAA0", 5),  # 4SURE: recommended throughout
    rx("0601060D0CUABA0", 3),  # GlucoRx Nexus: recommended until June 2025
    rx("0601060D0FGAAA0", 2),  # GlucoRx Smart: recommended from July 2025
    rx("0601060D0BHADA0", 4),  # OneTouch Verio: never on the list
    rx("0601060X0BBAAA0", 1),  # KEYA Smart: recommended throughout
    # --- low-priority products (cost; factories make actual cost = 0.93 x NIC) ---
    rx("0403010J0AAAAAA", 1, cost=10.0),  # dosulepin
    rx("0602010M0AAAAAA", 1, cost=200.0),  # liothyronine
    rx("1502010J0AAELEL", 2, cost=100.0),  # lidocaine 5% plasters (suffix EL)
    rx("1502010J0BSAAEL", 1, cost=50.0),  # Versatis plasters (brand, suffix EL)
    rx("1502010J0AABMBM", 1, cost=5.0),  # lidocaine gel: not low priority
    rx("20200000100", 1, cost=30.0),  # silk garment
    rx("0403010B0AAAAAA", 3, cost=3.0),  # amitriptyline: not low priority
    # --- opioids: mg OME = quantity x opioid mg per unit x factor; long-acting and high-dose classes ---
    rx("0407010F0AAAHAH", 2, quantity=100),  # co-codamol 30/500 tabs: 200 x 30 mg codeine x 0.1 = 600
    rx("0407010F0BGAAAF", 1, quantity=100),  # Solpadol effervescent 30/500 (generic AF): 100 x 30 x 0.1 = 300
    rx("040702040AAAAAA", 1, quantity=60),  # tramadol 50 mg caps: 60 x 50 x 0.1 = 300
    rx("0407020A0BEABAE", 1, quantity=10),  # Matrifen 25 mcg/h patch: 10 x 180 mg = 1,800; long-acting
    rx("0407020A0AAAFAF", 1, quantity=5),  # fentanyl 50 mcg/h patch: 5 x 0.05 x 72 x 100 = 1,800; high-dose
    rx("0407020B0BEAAAH", 2, quantity=4),  # BuTrans 5 mcg/h 7-day patch: 8 x 84 mg = 672; long-acting
    rx("0407020B0BDABAF", 1, quantity=4),  # Transtec 52.5 mcg/h 96-h patch: 4 x 0.0525 x 96 x 100 = 2,016; high
    rx("0407020ADBEADAH", 1, quantity=56),  # Longtec 40 mg m/r: 56 x 40 x 1.5 = 3,360; high-dose
    rx("0407020ADAAAFAF", 2, quantity=56),  # oxycodone 10 mg m/r: 112 x 10 x 1.5 = 1,680; long-acting
    rx("0407020Q0BIABEH", 1, quantity=28),  # MXL 60 mg (once daily): 28 x 60 = 1,680; long-acting, not high
    rx("0407020Q0BKACEH", 1, quantity=56),  # Zomorph 60 mg (twice daily): 56 x 60 = 3,360; high-dose
    rx("0407020Q0BCAGCN", 1, quantity=300),  # Oramorph 10 mg/5 ml: 300 ml x 2 mg = 600; not long-acting
    rx("0407020K0AAABAB", 1, quantity=5),  # diamorphine 10 mg ampoules: 5 x 10 x 3.3 = 165
    rx("0407020L0AAABAB", 1, quantity=112),  # meptazinol: left out of the OME lookup -> reported
    rx("0407020A0BJAAAW", 1, quantity=30),  # Abstral sublingual: left out of the OME lookup -> reported
    rx("0410030C0AAAAAA", 2, quantity=500),  # methadone for dependence (BNF 4.10): outside the code sets
    # --- SABA inhalers (quantity per item above 9 = doses) and devices of other inhalers ---
    rx("0301011V0BBAMAL", 1, quantity=1),  # Bricanyl Turbohaler: 1 inhaler; DPI
    rx("0301011V0BBAMAL", 2, quantity=200),  # Bricanyl Turbohaler in doses: 400 / 100 = 4 inhalers; DPI
    rx("0301011V0AAALAL", 1, quantity=9),  # terbutaline B/A (Turbohaler) generic: 9 is not above 9, 9 inhalers
    rx("0301011V0BBALAD", 1, quantity=120),  # Bricanyl Respules: nebuliser, not an inhaler -> RES04 reports it
    rx("0302000N0BCAEBF", 3, quantity=1),  # Seretide 125 Evohaler: MDI
    rx("0302000C0BQAABX", 2, quantity=1),  # Fostair 100/6: MDI
    rx("0302000C0BJABBF", 1, quantity=1),  # Qvar 100: MDI
    rx("0302000V0BBABAB", 4, quantity=1),  # Relvar Ellipta (2017 code), named 'Inha': DPI
    rx("0301020Q0BBACAC", 1, quantity=1),  # Spiriva Respimat: soft mist
    rx("0302000K0BDABAM", 2, quantity=1),  # Symbicort Turbohaler: DPI
    rx("0302000C0AAATAT", 1, quantity=1),  # beclometasone B/A 100 mcg, device not named: left out -> reported
    rx("0303020G0AAABAB", 5),  # montelukast tablets: not an inhaler, in neither part of RES05
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("priorities")
    f.write_map(d / "map.csv")
    rows, lists = [], []
    for month in (JUNE, AUGUST):
        rows += [f.epd_row(month, PRACTICE, r["code"], r["items"], quantity=r["quantity"], cost=r["cost"])
                 for r in ROWS]
        lists += f.list_size_rows(month, PRACTICE, {("MALE", "25_29"): 1000, ("FEMALE", "30_34"): 1000})
    f.write_epd(d / "epd.csv", rows)
    f.write_list_sizes(d / "ls.csv", lists)
    with Store(d / "store.duckdb") as store:
        reports = ingest_files(store, d / "map.csv", [d / "epd.csv"], [d / "ls.csv"])
    assert all(r.rows_rejected == 0 for r in reports), [r.line() for r in reports]
    backend = ibis.duckdb.connect(str(d / "store.duckdb"))
    report = IndicatorEngine(backend, load_indicators(ids=NEW_IDS)).run()
    values = backend.table("indicator_values").to_pandas()
    yield backend, values, report
    backend.disconnect()


def pick(values: pd.DataFrame, indicator_id: str, month: str = AUGUST, level: str = "practice",
         code: str = PRACTICE) -> pd.Series:
    rows = values[(values.indicator_id == indicator_id) & (values.org_level == level)
                  & (values.org_code == code) & (values.period == pd.Timestamp(month + "-01"))
                  & (values.period_type == "month")]
    assert len(rows) == 1, f"expected one {indicator_id} row, got {len(rows)}"
    return rows.iloc[0]


def check(row: pd.Series, numerator: float, denominator: float, value: float) -> None:
    assert row.numerator == pytest.approx(numerator, rel=1e-12)
    assert row.denominator == pytest.approx(denominator, rel=1e-12)
    assert row.value == pytest.approx(value, rel=1e-12)


def test_amr07_uk_aware_access_share(built):
    _, values, _ = built
    access = 10 + 4 + 1 + 3 + 2 + 2 + 1 + 2 + 1  # amoxicillin x4, cefalexin, doxycycline (I0 x3, Z0)
    watch, reserve = 5 + 3, 1  # co-amoxiclav, clarithromycin; linezolid
    # methenamine (Other), rifaximin (unclassed), isoniazid and colistimethate (excluded) in neither
    assert (access, access + watch + reserve) == (26, 35)
    check(pick(values, "AMR07"), 26, 35, 100 * 26 / 35)


def test_amr08_amoxicillin_500_longer_than_5_days(built):
    _, values, _ = built
    check(pick(values, "AMR08"), 4 + 1, 10 + 4 + 1, 100 * 5 / 15)


def test_amr09_doxycycline_100_longer_than_5_days(built):
    _, values, _ = built
    check(pick(values, "AMR09"), 1, 2 + 1, 100 / 3)


def test_pain05_gabapentinoid_ddds_per_1000(built):
    _, values, _ = built
    ddds = 200 * 300 / 1800 + 56 * 75 / 300 + 150 * 50 / 1800  # 33.33 + 14 + 4.17
    assert ddds == pytest.approx(51.5)
    check(pick(values, "PAIN05"), ddds, PATIENTS, ddds / PATIENTS * 1000)


def test_pain01_opioid_oral_morphine_equivalence_per_1000(built):
    _, values, _ = built
    # Patches: fentanyl 25 mcg/h = 0.025 mg/h x 72 h x 100 = 180 mg OME; buprenorphine 5 mcg/h x 168 h = 84 mg.
    assert 0.025 * 72 * 100 == pytest.approx(180) and 0.005 * 168 * 100 == pytest.approx(84)
    ome = (200 * 30 * 0.1 + 100 * 30 * 0.1 + 60 * 50 * 0.1  # co-codamol, Solpadol, tramadol (codeine, tramadol 0.1)
           + 10 * 180 + 5 * 360 + 8 * 84 + 4 * 0.0525 * 96 * 100  # fentanyl 25 and 50, BuTrans 5, Transtec 52.5
           + 56 * 40 * 1.5 + 112 * 10 * 1.5  # oxycodone m/r 40 and 10 mg (oral oxycodone 1.5)
           + 28 * 60 + 56 * 60 + 300 * 2  # MXL 60, Zomorph 60, Oramorph 300 ml at 2 mg/ml (oral morphine 1)
           + 5 * 10 * 3.3)  # diamorphine 10 mg ampoules (injected diamorphine 3.3)
    # meptazinol and sublingual fentanyl are not in the lookup; methadone for dependence is outside the codes
    assert ome == pytest.approx(18333)
    check(pick(values, "PAIN01"), ome, PATIENTS, ome / PATIENTS * 1000)


def test_pain02_high_dose_opioid_items_per_1000(built):
    _, values, _ = built
    high = 1 + 1 + 1 + 1  # fentanyl 50 mcg/h, Transtec 52.5, Longtec 40 mg, Zomorph 60 mg; not MXL 60 (once daily)
    check(pick(values, "PAIN02"), high, PATIENTS, high / PATIENTS * 1000)


def test_pain03_high_dose_share_of_long_acting_opioids(built):
    _, values, _ = built
    long_acting = 1 + 1 + 2 + 1 + 1 + 2 + 1 + 1  # fentanyl 25 and 50, BuTrans, Transtec, Longtec, oxycodone 10, MXL, Zomorph
    assert long_acting == 10  # co-codamol, tramadol, Oramorph and diamorphine are not long-acting forms
    check(pick(values, "PAIN03"), 4, long_acting, 40.0)


def test_res04_saba_inhalers_per_1000_with_rows_in_doses(built):
    _, values, _ = built
    salbutamol = 6 + 5 + 2 + 2 + 1  # Ventolin, generic MDI, Salamol Easi-Breathe, Easyhaler 100 and 200 (inhalers)
    terbutaline = 1 + 2 * 200 / 100 + 9  # Turbohaler; 400 doses = 4 inhalers; a quantity of 9 is not above 9
    inhalers = salbutamol + terbutaline  # nebuliser solution and Respules are not inhalers
    assert inhalers == 30
    check(pick(values, "RES04"), inhalers, PATIENTS, inhalers / PATIENTS * 1000)


def test_res05_mdi_share_of_non_salbutamol_inhaler_items(built):
    _, values, _ = built
    mdi = 3 + 2 + 1  # Seretide Evohaler, Fostair, Qvar
    inhalers = mdi + 4 + 1 + 2 + (1 + 2 + 1)  # + Relvar (DPI), Respimat (soft mist), Symbicort, terbutaline (DPI)
    # salbutamol is excluded; Respules and montelukast are not inhalers; the unnamed B/A beclometasone is left out
    assert inhalers == 17
    check(pick(values, "RES05"), mdi, inhalers, 100 * 6 / 17)


def test_res06_carbon_per_salbutamol_inhaler(built):
    _, values, _ = built
    kg = 6 * 28.26 + 5 * 25.24 + 2 * 12.08 + 2 * 0.62
    inhalers = 6 + 5 + 2 + 2  # Easyhaler 200 mcg and the nebuliser solution are not in the list
    assert kg == pytest.approx(321.16)
    check(pick(values, "RES06"), kg, inhalers, kg / inhalers)


def test_res08_salbutamol_mdi_share(built):
    _, values, _ = built
    check(pick(values, "RES08"), 6 + 5 + 2, 15, 100 * 13 / 15)


def test_cvd03_doacs_other_than_generic_apixaban_and_rivaroxaban(built):
    _, values, _ = built
    check(pick(values, "CVD03"), 3 + 2 + 1 + 1, 6 + 4 + 3 + 2 + 1 + 1, 100 * 7 / 17)


def test_cvd04_high_intensity_statins_with_brands_matched_on_their_last_two_characters(built):
    _, values, _ = built
    high = 10 + 2 + 1  # atorvastatin 20, rosuvastatin 10, simvastatin 80
    classed = high + (4 + 1 + 6 + 1) + 2  # + medium (incl. Lipitor chewable, Simvador) + low
    assert (high, classed) == (13, 27)
    check(pick(values, "CVD04"), high, classed, 100 * 13 / 27)


def test_dia04_recommended_strips_follow_the_dated_list(built):
    _, values, _ = built
    # June: 4SURE, Nexus (listed until June) and KEYA; Smart only joins in July.
    check(pick(values, "DIA04", JUNE), 5 + 3 + 1, 15, 60.0)
    # August: 4SURE, Smart and KEYA; Nexus has left the list.
    check(pick(values, "DIA04", AUGUST), 5 + 2 + 1, 15, 100 * 8 / 15)


def test_val01_low_priority_actual_cost_per_1000(built):
    _, values, _ = built
    actual = 0.93 * (10 + 200 + 100 + 50 + 30)  # dosulepin, liothyronine, plasters x2, silk garment
    check(pick(values, "VAL01"), actual, PATIENTS, actual / PATIENTS * 1000)


def test_every_new_indicator_is_tested_here():
    tested = {name.split("_")[1].upper() for name in globals() if name.startswith("test_")
              and name.split("_")[1][:-2].isalpha() and name.split("_")[1][-2:].isdigit()}
    assert set(NEW_IDS) <= tested


def test_engine_reports_items_missing_from_lookups_per_month_summed(built):
    _, _, report = built
    gaps = report.lookup_unmatched_items
    assert gaps["AMR07"] == {"numerator": 2 * 2, "denominator": 2 * 2}  # rifaximin, two months
    assert gaps["PAIN05"] == {"numerator": 2 * 1}
    assert gaps["RES06"] == {"numerator": 2 * 2, "denominator": 2 * 2}  # Easyhaler 200 + nebules
    # Strips not listed that month: June Smart 2 + Verio 4; August Nexus 3 + Verio 4.
    assert gaps["DIA04"] == {"numerator": (2 + 4) + (3 + 4)}
    assert gaps["PAIN01"] == {"numerator": 2 * (1 + 1)}  # meptazinol, sublingual fentanyl
    assert gaps["PAIN02"] == {"numerator": 2 * 1}  # sublingual fentanyl (meptazinol is outside the code set)
    assert gaps["PAIN03"] == {"numerator": 2 * 1, "denominator": 2 * 1}
    assert gaps["RES04"] == {"numerator": 2 * (1 + 1)}  # salbutamol nebuliser solution, Bricanyl Respules
    assert gaps["RES05"] == {"numerator": 2 * 1, "denominator": 2 * 1}  # the beclometasone B/A inhaler
    # Liquids are in the statin lookup (not classed), so nothing is missing; no lookup, no entry.
    assert "CVD04" not in gaps and "AMR08" not in gaps
    assert any("AMR07: 4 numerator items" in line for line in report.lookup_lines())


def test_check_lists_the_codes_a_lookup_lacks(built):
    backend, _, _ = built
    rows, errors = coverage(backend, load_indicators(ids=["RES06"])[0])
    gaps = {row.part: row for row in rows if row.is_lookup_gap}
    assert set(gaps) == {"numerator not in lookup salbutamol_inhaler_carbon",
                         "denominator not in lookup salbutamol_inhaler_carbon"}
    assert gaps["numerator not in lookup salbutamol_inhaler_carbon"].codes == ["0301011R0AAAXAX", "0301011R0BWABCA"]
    assert gaps["numerator not in lookup salbutamol_inhaler_carbon"].items == 2 * 2
    counted = next(row for row in rows if row.part == "numerator")
    assert counted.codes == ["0301011R0AAAPAP", "0301011R0BEAIAP", "0301011R0BIAGBU", "0301011R0BWAABZ"]
    assert not errors


def test_check_lists_opioid_presentations_the_ome_lookup_lacks(built):
    backend, _, _ = built
    rows, errors = coverage(backend, load_indicators(ids=["PAIN01"])[0])
    gaps = [row for row in rows if row.is_lookup_gap]
    assert [(g.part, g.codes) for g in gaps] == [("numerator not in lookup opioid_ome",
                                                   ["0407020A0BJAAAW", "0407020L0AAABAB"])]
    assert not errors


def test_a_conditional_divisor_must_be_a_numeric_lookup_column():
    raw = copy.deepcopy(load_indicators(ids=["RES04"])[0].raw)
    raw["numerator"]["lookup"]["divide_if_quantity_per_item_above"]["column"] = "presentation"
    with pytest.raises(DefinitionError, match="RES04: the numerator lookup 'saba_inhaler_doses'.*not a positive number"):
        parse_definition(raw, "RES04 variant")
    raw["numerator"]["lookup"]["divide_if_quantity_per_item_above"] = {"threshold": 0, "column": "doses_per_inhaler"}
    with pytest.raises(DefinitionError, match="not a valid definition"):
        parse_definition(raw, "RES04 variant")


def test_check_applies_lookup_classes_when_testing_numerator_inside_denominator(built):
    backend, _, _ = built
    amr07 = load_indicators(ids=["AMR07"])[0]
    assert not coverage(backend, amr07)[1]
    # The same codes, but a denominator of Watch only: the Access rows now fall outside it.
    raw = copy.deepcopy(amr07.raw)
    raw["denominator"]["lookup"]["where"] = {"aware_class": ["Watch"]}
    _, errors = coverage(backend, parse_definition(raw, "AMR07 variant"))
    assert len(errors) == 1 and "count in the numerator but not the denominator" in errors[0]


def test_lookup_indicators_leave_existing_indicator_values_unchanged(built, tmp_path):
    backend, _, _ = built
    # The same store computed with and without the lookup-based definitions: the older ones match.
    old = [i for i in load_indicators() if i.id in ("AMR02", "AMR03", "SAF03", "CVD01", "RES01")]
    IndicatorEngine(backend, old).run(table_name="old_only")
    IndicatorEngine(backend, old + load_indicators(ids=NEW_IDS)).run(table_name="with_new")
    a = backend.table("old_only").to_pandas()
    b = backend.table("with_new").to_pandas()
    b = b[b.indicator_id.isin([i.id for i in old])]
    keys = ["indicator_id", "org_level", "org_code", "period_type", "period"]
    a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[["numerator", "denominator", "value"]], b[["numerator", "denominator", "value"]])
    assert len(a) and not math.isnan(a.value.dropna().iloc[0])


def test_check_notes_rather_than_fails_a_draft_that_matches_nothing(built):
    backend, _, _ = built
    val01 = load_indicators(ids=["VAL01"])[0]
    assert val01.status == "draft"
    raw = copy.deepcopy(val01.raw)
    raw["numerator"]["codes"] = ["0407010Q0"]  # co-proxamol: not in this data
    rows, errors = coverage(backend, parse_definition(raw, "VAL01 variant"))
    assert not errors and [r.part for r in rows if r.is_draft_gap] == ["numerator (draft) matches no BNF code in the data"]
    raw["status"] = "preview"
    _, errors = coverage(backend, parse_definition(raw, "VAL01 variant"))
    assert len(errors) == 1 and "matches no BNF code in the data" in errors[0]


def test_a_100_percent_value_lies_inside_its_wilson_limits():
    # 70,595 of 70,595 salbutamol inhalers were MDIs in a synthetic sub-ICB: the upper limit is exactly 100%.
    from moopt.stats.intervals import wilson_limits

    lower, upper = wilson_limits(np.array([70595.0, 0.0]), np.array([70595.0, 70595.0]), 0.95)
    assert upper[0] == 1.0 and lower[1] == 0.0
