"""Every prescribing indicator definition, one test each, on hand-made practice data.

A second, independent check of the definitions (tests/test_engine.py checks the
engine's method with different data). One month of prescribing for two practices
is written in the published EPD and list-size layouts, ingested into a store and
run through the engine with the real definitions. Each test works out its
indicator's numerator, denominator and value by hand from the rows below: rows
that should count (generic and branded presentations), and rows that should not
(exclusions, neighbouring BNF codes, quantities at a threshold, patients just
under 65).

Cost rows carry a NIC £1 higher than their actual cost, so an indicator that
summed NIC instead of ACTUAL_COST would fail.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest

import factories as f
from moopt.indicators import load_indicators

MONTH = "2025-03"
PRACTICE = "A00001"  # every indicator is checked at this practice
OTHER_PRACTICE = "A00002"  # same sub-ICB (S1A); used for the MH02 aggregation check
WEIGHTS_FILE = Path(__file__).resolve().parents[1] / "src" / "moopt" / "indicators" / "star_pu_weights_2013.csv"

# Quinary list sizes. A00001: 2,600 patients, 400 of them aged 65 or over (the 300 men
# aged 60-64 are just under the MH02 age limit). A00002: 1,000 patients, 150 aged 65+
# (including the open-ended 95+ band).
LISTS = {
    PRACTICE: {("MALE", "25_29"): 1000, ("FEMALE", "30_34"): 900, ("MALE", "60_64"): 300,
               ("MALE", "65_69"): 200, ("FEMALE", "70_74"): 150, ("FEMALE", "85_89"): 50},
    OTHER_PRACTICE: {("FEMALE", "40_44"): 850, ("MALE", "65_69"): 100, ("FEMALE", "95+"): 50},
}


def rx(code: str, items: int, quantity: float = 28.0, adq: float | None = None,
       actual_cost: float | None = None) -> dict:
    return {"code": code, "items": items, "quantity": quantity, "adq": adq, "actual_cost": actual_cost}


# One month of prescribing at A00001. Comments say which indicators each row feeds.
ROWS = [
    # --- antibacterials (BNF 5.1): AMR01 counts every row in 0501 ---
    rx("0501013B0AAAAAA", 20),  # amoxicillin (050101)
    rx("0501013K0AAAJAJ", 6),  # co-amoxiclav: AMR02 numerator
    rx("0501013K0BCAJAJ", 2),  # branded co-amoxiclav: AMR02 numerator
    rx("0501021A0AAAAAA", 3),  # cefalexin (cephalosporin): AMR02 numerator
    rx("0501120L0AAAAAA", 4),  # ciprofloxacin (quinolone): AMR02 numerator, AMR06
    rx("0501120X0BBAAAA", 1),  # branded levofloxacin (quinolone): AMR02 numerator, AMR06
    rx("0501030I0AAABAB", 5),  # doxycycline (050103)
    rx("0501050B0AAAAAA", 7),  # clarithromycin (050105)
    rx("0501110C0AAAAAA", 2),  # metronidazole (050111)
    rx("0501080W0AAAEAE", 8, quantity=6),  # trimethoprim 200 mg, 6 tablets: exactly 3 days
    rx("0501080W0AAAEAE", 3, quantity=14),  # trimethoprim 200 mg, 14 tablets: longer
    rx("0501080W0BCAAAE", 1, quantity=7),  # branded trimethoprim 200 mg, 7: just longer
    rx("0501080W0AAADAD", 2, quantity=28),  # trimethoprim 100 mg: not an AMR05 presentation
    rx("0501130R0AAAAAA", 2, quantity=12),  # nitrofurantoin 50 mg caps, 12: exactly 3 days
    rx("0501130R0AAAAAA", 1, quantity=13),  # nitrofurantoin 50 mg caps, 13: longer
    rx("0501130R0AAADAD", 1, quantity=12),  # nitrofurantoin 50 mg tabs, 12: exactly 3 days
    rx("0501130R0AAAGAG", 4, quantity=6),  # nitrofurantoin 100 mg m/r, 6: exactly 3 days
    rx("0501130R0AAAGAG", 2, quantity=7),  # nitrofurantoin 100 mg m/r, 7: longer
    rx("0501130R0AAABAB", 1, quantity=28),  # nitrofurantoin, a strength AMR05 does not list
    rx("0501015P0AAABAB", 2, quantity=10),  # pivmecillinam 200 mg, 10: exactly 3 days
    rx("0501015P0AAABAB", 1, quantity=15),  # pivmecillinam 200 mg, 15: longer
    rx("0501130H0AAAAAA", 3),  # methenamine: excluded from AMR03
    rx("0501090K0AAAAAA", 2),  # isoniazid (antituberculosis): excluded from AMR03
    rx("0501100H0AAAAAA", 1),  # dapsone (antileprotic): excluded from AMR03
    rx("0502010A0AAAAAA", 9),  # an antifungal (0502): no AMR indicator
    # --- safety ---
    rx("1001010J0AAAAAA", 10),  # ibuprofen: SAF01 numerator
    rx("1001010P0BBAAAA", 4),  # branded naproxen: SAF01 numerator
    rx("1001010C0AAAAAA", 6),  # diclofenac: SAF01 denominator only
    rx("1003020M0AAAAAA", 5),  # topical ibuprofen (1003): not an oral NSAID
    rx("0401010Z0AAAAAA", 2, adq=60),  # zopiclone: SAF02
    rx("0401020K0AAAAAA", 3, adq=45),  # diazepam: SAF02
    rx("0401010ADAAAAAA", 1, adq=30),  # melatonin: excluded
    rx("0401010S0AAAAAA", 1, adq=10),  # melatonin code: excluded
    rx("0401010ACAAAAAA", 1, adq=5),  # melatonin code: excluded
    rx("0401040A0AAAAAA", 1, adq=8),  # barbiturate (0401040): excluded
    rx("0408010G0AAAAAA", 7),  # gabapentin: SAF03
    rx("0408010AEAAAAAA", 5),  # pregabalin: SAF03
    rx("0408010AEBBAAAA", 2),  # branded pregabalin: SAF03
    rx("0408010AHAAAAAA", 3),  # another antiepileptic next to pregabalin: not SAF03
    rx("040702040AAAAAA", 9),  # tramadol (040702): SAF04
    rx("0407020Q0AAAAAA", 3),  # morphine (040702): SAF04
    rx("0407010H0AAAAAA", 30),  # paracetamol (040701): not an opioid analgesic
    # --- mental health ---
    rx("0403030Q0AAAAAA", 3, adq=84),  # sertraline: MH01
    rx("0403040X0AAAAAA", 1, adq=28),  # mirtazapine: MH01
    rx("0403010B0AAAAAA", 1, adq=14),  # amitriptyline: MH01
    rx("0403040ABAAAAAA", 2, adq=0),  # vortioxetine, no ADQ: MH01 adds 0
    rx("0402030K0AAAAAA", 5, adq=56),  # lithium (040203): neither MH01 nor MH02
    rx("0402010ABAAAAAA", 6, adq=0),  # quetiapine (040201): MH02
    rx("040201030AAAAAA", 4, adq=0),  # risperidone (040201): MH02
    rx("0402020T0AAAAAA", 1, adq=0),  # haloperidol decanoate depot (040202): MH02
    # --- cardiovascular ---
    rx("0208020Z0AAAAAA", 10),  # apixaban: CVD01 numerator
    rx("0208020Y0BBAAAA", 6),  # branded rivaroxaban: CVD01 numerator
    rx("0208020X0AAABAB", 3),  # dabigatran: CVD01 numerator
    rx("0208020AAAAABAB", 2),  # edoxaban: CVD01 numerator
    rx("0208020V0AAAAAA", 5),  # warfarin 1 mg: CVD01 denominator
    rx("0208020V0AAABAB", 4),  # warfarin 3 mg: CVD01 denominator
    rx("0208020H0AAAAAA", 2),  # acenocoumarol: in neither
    rx("0208020W0BBABA0", 1),  # INR test strips (0208020W0): in neither
    rx("0208010AEAAAAAA", 3),  # a parenteral anticoagulant (020801): in neither
    rx("0212000B0AAAAAA", 2, actual_cost=45.50),  # atorvastatin: CVD02
    rx("0212000L0AAAAAA", 1, actual_cost=30.25),  # ezetimibe: CVD02
    rx("0212000AABBAAAA", 1, actual_cost=12.00),  # branded rosuvastatin: CVD02
    rx("0211000P0AAAAAA", 1, actual_cost=99.00),  # tranexamic acid (0211): not CVD02
    rx("0209000A0AAAAAA", 1, actual_cost=7.00),  # aspirin (0209): not CVD02
    # --- respiratory ---
    rx("0301011R0AAAAAA", 12),  # salbutamol: RES01 numerator
    rx("0301011R0BEAAAA", 5),  # branded salbutamol: RES01 numerator
    rx("0301011V0BBABAB", 2),  # branded terbutaline: RES01 numerator
    rx("0301011U0AAAAAA", 4),  # salmeterol (a long-acting beta2 agonist): in neither
    rx("0301020I0AAAAAA", 3),  # ipratropium: in neither
    rx("0302000C0AAAAAA", 6, actual_cost=18.60),  # beclometasone: RES01 denominator, RES02
    rx("0302000C0BQAABX", 7, actual_cost=204.96),  # beclometasone/formoterol brand: RES01 den, RES02
    rx("0302000K0AAAAAA", 2, actual_cost=31.00),  # budesonide: RES01 denominator, RES02
    rx("1202010C0AAAAAA", 2, actual_cost=9.00),  # nasal beclometasone (1202): not RES01/RES02
    rx("0303020G0AAAAAA", 3),  # montelukast: in neither
    # --- diabetes ---
    rx("0601012V0AAAAAA", 8),  # insulin glargine: DIA01 numerator
    rx("0601012V0BDAAAA", 2),  # branded glargine: DIA01 numerator
    rx("0601012X0AAAAAA", 3),  # insulin detemir: DIA01 numerator
    rx("0601012Z0AAAAAA", 1),  # insulin degludec: DIA01 numerator
    rx("0601012S0AAAEAE", 5),  # isophane insulin: DIA01 denominator
    rx("0601012U0AAAAAA", 1),  # protamine zinc insulin: DIA01 denominator
    rx("0601012G0BCAAAH", 1),  # bovine lente insulin: DIA01 denominator
    rx("0601012W0AAAAAA", 4),  # biphasic insulin: in neither
    rx("0601012AAAAAAAA", 1),  # degludec/liraglutide: in neither
    rx("0601011A0AAAAAA", 6),  # short-acting insulin (0601011): in neither
    rx("0601023AGAAABAB", 6),  # dapagliflozin: DIA02
    rx("0601023ALAAAAAA", 1),  # dapagliflozin/metformin: DIA02
    rx("0601023AMAAAAAA", 2),  # canagliflozin: DIA02
    rx("0601023ANBBAAAA", 3),  # branded empagliflozin: DIA02
    rx("0601023APAAAAAA", 1),  # canagliflozin/metformin: DIA02
    rx("0601023ARAAAAAA", 2),  # empagliflozin/metformin: DIA02
    rx("0601023AEAAAAAA", 4),  # linagliptin (DPP-4 inhibitor): not DIA02
    rx("0601023AQAAABAB", 2),  # dulaglutide (GLP-1): not DIA02
    rx("0601022B0AAABAB", 20),  # metformin: not DIA02
    rx("0601060D0BWABA0", 3, actual_cost=120.00),  # blood glucose strips: DIA03
    rx("0601060D0CCAAA0", 2, actual_cost=75.50),  # blood glucose strips: DIA03
    rx("0601060X0BBAAA0", 1, actual_cost=40.25),  # glucose and ketone strips: DIA03
    rx("0601060W0BBAAA0", 1, actual_cost=30.00),  # ketone-only strips: not DIA03
    rx("0601060U0AAAAA0", 1, actual_cost=5.00),  # urine testing strips: not DIA03
]
# A00002 has only antipsychotics (plus the list size above).
OTHER_ROWS = [rx("0402010ABAAAAAA", 3, adq=0)]


def epd(practice: str, row: dict) -> list:
    """An EPD row; with an actual cost, NIC is set £1 higher so the two cannot be confused."""
    cost = 10.0 if row["actual_cost"] is None else row["actual_cost"] + 1.0
    out = f.epd_row(MONTH, practice, row["code"], row["items"], quantity=row["quantity"],
                    adq=row["adq"], cost=cost)
    if row["actual_cost"] is not None:
        out[f.EPD_COLUMNS.index("ACTUAL_COST")] = row["actual_cost"]
    return out


@lru_cache(maxsize=1)
def _weights() -> pd.DataFrame:
    return pd.read_csv(WEIGHTS_FILE)


def weight(group: str, band: str, sex: str) -> float:
    """The 2013 STAR-PU weight read straight from the package's CSV (not through the engine)."""
    table = _weights()
    row = table[(table.star_pu_group == group) & (table.age_band == band)]
    assert len(row) == 1, f"no single weight row for {group} {band}"
    return float(row[sex].iloc[0])


def practice_star_pu(group: str) -> float:
    """A00001's STAR-PU, its quinary bands placed in the STAR-PU bands by hand."""
    return (1000 * weight(group, "25-34", "male")  # men 25-29
            + 900 * weight(group, "25-34", "female")  # women 30-34
            + 300 * weight(group, "55-64", "male")  # men 60-64
            + 200 * weight(group, "65-74", "male")  # men 65-69
            + 150 * weight(group, "65-74", "female")  # women 70-74
            + 50 * weight(group, "75+", "female"))  # women 85-89


@pytest.fixture(scope="module")
def values(tmp_path_factory) -> pd.DataFrame:
    d = tmp_path_factory.mktemp("by_theme")
    f.write_map(d / "map.csv")
    f.write_epd(d / "epd.csv", [epd(PRACTICE, r) for r in ROWS] + [epd(OTHER_PRACTICE, r) for r in OTHER_ROWS])
    ls = []
    for practice, bands in LISTS.items():
        ls += f.list_size_rows(MONTH, practice, bands)
    f.write_list_sizes(d / "ls.csv", ls)
    table, reports, _ = f.run_engine(d)
    assert all(r.rows_rejected == 0 for r in reports), [r.line() for r in reports]
    return table


def pick(values: pd.DataFrame, indicator_id: str, code: str = PRACTICE, level: str = "practice") -> pd.Series:
    rows = values[(values.indicator_id == indicator_id) & (values.org_level == level)
                  & (values.org_code == code) & (values.period == pd.Timestamp(MONTH + "-01"))
                  & (values.period_type == "month")]
    assert len(rows) == 1, f"expected one {indicator_id} row for {level} {code}, got {len(rows)}"
    return rows.iloc[0]


def check(row: pd.Series, numerator: float, denominator: float, value: float) -> None:
    assert row.numerator == pytest.approx(numerator, rel=1e-12)
    assert row.denominator == pytest.approx(denominator, rel=1e-12)
    assert row.value == pytest.approx(value, rel=1e-12)


# --- antimicrobials -------------------------------------------------------------------------------

def test_amr01_all_antibacterial_items_per_star_pu(values):
    # Every 0501 row, including methenamine, antituberculosis and antileprotic drugs; not 0502.
    items = (20 + 6 + 2 + 3 + 4 + 1 + 5 + 7 + 2 + 8 + 3 + 1 + 2 + 2 + 1 + 1 + 4 + 2 + 1 + 2 + 1
             + 3 + 2 + 1)
    assert items == 84
    star_pu = practice_star_pu("oral_antibacterials_item")
    check(pick(values, "AMR01"), items, star_pu, items / star_pu)


def test_amr02_broad_spectrum_share_of_selected_groups(values):
    numerator = 6 + 2 + 3 + 4 + 1  # co-amoxiclav (generic + brand), cefalexin, two quinolones
    denominator = (
        (20 + 6 + 2 + 2 + 1)  # 050101: amoxicillin, co-amoxiclav x2, pivmecillinam x2
        + 3  # 0501021 cefalexin
        + 5  # 050103 doxycycline
        + 7  # 050105 clarithromycin
        + (8 + 3 + 1 + 2)  # 050108 trimethoprim
        + 2  # 050111 metronidazole
        + (4 + 1)  # 050112 quinolones
        + (2 + 1 + 1 + 4 + 2 + 1 + 3)  # 050113 nitrofurantoin and methenamine
    )  # antituberculosis (050109), antileprotic (050110) and the antifungal are left out
    assert (numerator, denominator) == (16, 81)
    check(pick(values, "AMR02"), numerator, denominator, 100 * 16 / 81)


def test_amr03_excludes_tb_leprosy_and_methenamine(values):
    items = 84 - 3 - 2 - 1  # all 0501 less methenamine, isoniazid, dapsone
    check(pick(values, "AMR03"), items, 2600, items / 2600 * 1000)
    assert pick(values, "AMR03").value == pytest.approx(30.0)


def test_amr04_trimethoprim_share(values):
    trimethoprim = 8 + 3 + 1 + 2  # every 0501080W0 strength and brand
    nitrofurantoin = 2 + 1 + 1 + 4 + 2 + 1
    check(pick(values, "AMR04"), trimethoprim, trimethoprim + nitrofurantoin, 100 * 14 / 25)


def test_amr05_longer_than_three_days_by_strength_suffix(values):
    # Only strictly above the threshold counts; the brand (BCAAAE) matches on its AE suffix;
    # trimethoprim 100 mg (AD suffix) is not caught by the nitrofurantoin *AD pattern.
    longer = 1 + 3 + 1 + 1 + 2  # pivmecillinam 15, trimethoprim 14 and brand 7, nitro AA 13, AG 7
    presentations = (2 + 1) + (8 + 3 + 1) + (2 + 1) + 1 + (4 + 2)  # AB, AE, AA, AD, AG
    assert (longer, presentations) == (8, 25)
    check(pick(values, "AMR05"), longer, presentations, 32.0)


def test_amr06_quinolones_per_1000(values):
    check(pick(values, "AMR06"), 4 + 1, 2600, 5 / 2600 * 1000)


# --- safety ---------------------------------------------------------------------------------------

def test_saf01_ibuprofen_naproxen_share_of_oral_nsaids(values):
    # Topical ibuprofen (1003) is in neither part.
    check(pick(values, "SAF01"), 10 + 4, 10 + 4 + 6, 70.0)


def test_saf02_hypnotic_adqs_without_melatonin_or_barbiturates(values):
    adqs = 60 + 45  # zopiclone, diazepam; melatonin 30 + 10 + 5 and barbiturate 8 left out
    star_pu = practice_star_pu("hypnotics_adq")
    check(pick(values, "SAF02"), adqs, star_pu, adqs / star_pu)


def test_saf03_gabapentinoids_per_1000(values):
    items = 7 + 5 + 2  # gabapentin, pregabalin generic and brand; not the neighbouring 0408010AH
    check(pick(values, "SAF03"), items, 2600, items / 2600 * 1000)


def test_saf04_opioid_analgesics_per_1000(values):
    items = 9 + 3  # tramadol, morphine; paracetamol (040701) is not an opioid analgesic
    check(pick(values, "SAF04"), items, 2600, items / 2600 * 1000)


# --- mental health --------------------------------------------------------------------------------

def test_mh01_antidepressant_adqs_per_star_pu(values):
    adqs = 84 + 28 + 14 + 0  # sertraline, mirtazapine, amitriptyline, vortioxetine (no ADQ); not lithium
    star_pu = practice_star_pu("antidepressants_adq")
    check(pick(values, "MH01"), adqs, star_pu, adqs / star_pu)


def test_mh02_antipsychotics_per_1000_aged_65_and_over(values):
    items = 6 + 4 + 1  # quetiapine, risperidone, depot haloperidol; not lithium (040203)
    aged_65_plus = 200 + 150 + 50  # the 300 men aged 60-64 and the younger bands do not count
    check(pick(values, "MH02"), items, aged_65_plus, 11 / 400 * 1000)
    # Sub-ICB S1A = A00001 + A00002 (150 aged 65+ including the 95+ band; 3 quetiapine items):
    # a ratio of sums.
    check(pick(values, "MH02", "S1A", "sub_icb"), 11 + 3, 400 + 150, 14 / 550 * 1000)
    assert pick(values, "MH02", OTHER_PRACTICE).denominator == 100 + 50


# --- cardiovascular -------------------------------------------------------------------------------

def test_cvd01_doac_share_of_oral_anticoagulants(values):
    doacs = 10 + 6 + 3 + 2  # apixaban, rivaroxaban brand, dabigatran, edoxaban
    warfarin = 5 + 4
    # acenocoumarol, INR strips and the parenteral anticoagulant are in neither part
    check(pick(values, "CVD01"), doacs, doacs + warfarin, 100 * 21 / 30)


def test_cvd02_lipid_regulating_actual_cost_per_star_pu(values):
    cost = 45.50 + 30.25 + 12.00  # actual cost, not NIC; not tranexamic acid or aspirin
    star_pu = practice_star_pu("lipid-regulating_drugs_cost")
    check(pick(values, "CVD02"), cost, star_pu, cost / star_pu)


# --- respiratory ----------------------------------------------------------------------------------

def test_res01_saba_share_of_saba_and_ics(values):
    saba = 12 + 5 + 2  # salbutamol generic and brand, terbutaline brand
    ics = 6 + 7 + 2  # beclometasone, beclometasone/formoterol, budesonide
    # salmeterol, ipratropium, montelukast and the nasal corticosteroid are in neither part
    check(pick(values, "RES01"), saba, saba + ics, 100 * 19 / 34)


def test_res02_inhaled_corticosteroid_actual_cost_per_star_pu(values):
    cost = 18.60 + 204.96 + 31.00  # not the nasal beclometasone (1202)
    star_pu = practice_star_pu("inhaled_corticosteroids_cost")
    check(pick(values, "RES02"), cost, star_pu, cost / star_pu)


# --- diabetes -------------------------------------------------------------------------------------

def test_dia01_long_acting_analogue_share(values):
    analogues = 8 + 2 + 3 + 1  # glargine generic and brand, detemir, degludec
    others = 5 + 1 + 1  # isophane, protamine zinc, bovine lente
    # biphasic, degludec/liraglutide and short-acting insulins are in neither part
    check(pick(values, "DIA01"), analogues, analogues + others, 100 * 14 / 21)


def test_dia02_sglt2_inhibitors_per_1000(values):
    items = 6 + 1 + 2 + 3 + 1 + 2  # dapagliflozin (+metformin), canagliflozin (+metformin), empagliflozin (+metformin)
    # linagliptin, dulaglutide and metformin alone are not SGLT2 inhibitors
    check(pick(values, "DIA02"), items, 2600, 15 / 2600 * 1000)


def test_dia03_glucose_strip_actual_cost_per_1000(values):
    cost = 120.00 + 75.50 + 40.25  # not ketone-only or urine strips
    check(pick(values, "DIA03"), cost, 2600, cost / 2600 * 1000)


# --- the library as a whole -----------------------------------------------------------------------

TESTED_HERE = {m.group(1).upper() for name in list(globals())
               if (m := re.match(r"test_([a-z]{2,4}\d{2})_", name))}


def test_every_prescribing_indicator_has_a_test_here_or_in_test_priorities():
    from test_priorities import NEW_IDS  # the current national priority indicators, with their own data

    defined = {i.id for i in load_indicators() if i.numerator.type == "prescribing"}
    assert TESTED_HERE.isdisjoint(NEW_IDS)
    assert defined == TESTED_HERE | set(NEW_IDS)
    assert len(TESTED_HERE) == 19


# The national priority proportions have their rows in tests/test_priorities.py, not here.
PROPORTIONS = [i for i in load_indicators() if i.value_kind == "proportion" and not i.is_supplied
               and i.id in TESTED_HERE]
ALL_PROPORTIONS = [i for i in load_indicators() if i.value_kind == "proportion" and not i.is_supplied]


@pytest.mark.parametrize("indicator", PROPORTIONS, ids=lambda i: i.id)
def test_proportion_numerator_codes_lie_inside_the_denominator(indicator):
    num, den = indicator.numerator.code_set, indicator.denominator.code_set
    used = {(r["code"], r["quantity"]) for r in ROWS + OTHER_ROWS}
    in_numerator = sorted((code, q) for code, q in used if num.matches(code, q))
    assert in_numerator, f"{indicator.id}: no test row reaches the numerator, so this check would be empty"
    outside = [code for code, q in in_numerator if not den.matches(code, q)]
    assert not outside, f"{indicator.id}: numerator codes {outside} are not in the denominator"
    # Rows left out of the numerator must still be able to fall in the denominator alone.
    assert any(den.matches(code, q) and not num.matches(code, q) for code, q in used)


@pytest.mark.parametrize("indicator", ALL_PROPORTIONS, ids=lambda i: i.id)
def test_proportion_numerator_inside_denominator_on_real_bnf_list(indicator, realdata):
    codes = pd.read_csv(realdata / "openprescribing" / "adqs_april_16.csv", usecols=["BNF Code"],
                        dtype=str)["BNF Code"].str.strip()
    num, den = indicator.numerator.code_set, indicator.denominator.code_set
    # A very large quantity passes every quantity-per-item threshold.
    in_numerator = [c for c in codes if num.matches(c, 1e9)]
    assert in_numerator
    outside = [c for c in in_numerator if not den.matches(c, 1e9)]
    assert not outside, f"{indicator.id}: {outside[:5]} count in the numerator but not the denominator"


# Numerator chemical codes added to the BNF after the April 2016 list (checked elsewhere).
LATER_CODES = {"0601060X0"}  # glucose and ketone blood testing strips


def test_numerator_patterns_match_real_bnf_codes(realdata):
    codes = pd.read_csv(realdata / "openprescribing" / "adqs_april_16.csv", usecols=["BNF Code"],
                        dtype=str)["BNF Code"].str.strip()
    unmatched = []
    for ind in load_indicators():
        if ind.is_supplied:
            continue
        for pattern in ind.numerator.code_set.codes:
            prefix, suffix = pattern.partition("*")[::2]
            hit = codes.str.startswith(prefix) & codes.str.endswith(suffix)
            if not hit.any() and pattern not in LATER_CODES:
                unmatched.append(f"{ind.id} {pattern}")
    assert not unmatched, f"numerator patterns that match no April 2016 BNF code: {unmatched}"
