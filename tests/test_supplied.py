"""Supplied indicators: tidy files and QOF achievement files, validated, rolled up as ratios of sums."""

from __future__ import annotations

import copy

import ibis
import pandas as pd
import pytest
import yaml

import factories as f
from moopt.indicators.definitions import DEFINITIONS_DIR, DefinitionError, load_indicators, parse_definition
from moopt.indicators.engine import IndicatorEngine
from moopt.store import Store, ingest_files

TIDY = ["INDICATOR_ID", "ORG_LEVEL", "ORG_CODE", "PERIOD_START", "PERIOD_END", "BREAKDOWN", "NUMERATOR",
        "DENOMINATOR"]


def supplied_definition(ident: str, theme: str, **supplied) -> dict:
    base = yaml.safe_load((DEFINITIONS_DIR / "AMR02.yml").read_text())
    base.update(id=ident, theme=theme, seasonal=False)
    base.pop("national_expectation", None)
    base["numerator"] = {"type": "supplied", "description": "Referred patients readmitted within 30 days"}
    base["denominator"] = {"type": "supplied", "description": "Referred patients discharged"}
    base["supplied"] = {"value_kind": "proportion", "period_type": "quarter", "source_layout": "tidy", **supplied}
    return base


@pytest.fixture(scope="module")
def defs():
    toc = parse_definition(supplied_definition("TST03", "transfer_of_care",
                                               breakdowns=["completed", "not_completed"]))
    qof = parse_definition(supplied_definition("TST10", "cardiovascular", period_type="rolling_12m",
                                               source_layout="qof_achievement", qof_indicator_codes=["AF007"]))
    return [toc, qof]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory, defs):
    d = tmp_path_factory.mktemp("supplied")
    f.write_map(d / "map.csv")
    rx = [f.epd_row(m, p, "0501013B0AAABAB", 3) for m in f.months_between("2025-01", 3) for p in f.PRACTICES]
    f.write_epd(d / "epd.csv", rx)
    ls = [r for m in f.months_between("2025-01", 3) for p in f.PRACTICES
          for r in f.list_size_rows(m, p, {("MALE", "25_29"): 100})]
    f.write_list_sizes(d / "ls.csv", ls)
    q = ("2025-01-01", "2025-03-31")
    tidy = [
        ["TST03", "sub_icb", "S1A", *q, "all", 30, 200], ["TST03", "sub_icb", "S1A", *q, "completed", 10, 120],
        ["TST03", "sub_icb", "S1A", *q, "not_completed", 20, 80],
        ["TST03", "sub_icb", "S2B", *q, "all", 5, 100], ["TST03", "sub_icb", "S3C", *q, "all", 12, 60],
        ["TST03", "sub_icb", "NOPE", *q, "all", 1, 10],  # unknown sub-ICB: rejected
        ["TST03", "sub_icb", "S2B", "2025-01-01", "2025-02-28", "all", 1, 10],  # two months: rejected
        ["TST03", "sub_icb", "S2B", "2025-01-01", "2025-01-31", "all", 1, 10],  # a month, not a quarter
        ["TST03", "sub_icb", "S3C", *q, "all", 70, 60],  # duplicate key and numerator > denominator
    ]
    f.write_csv(d / "toc.csv", TIDY, tidy)
    qof = [["A00001", "AF007", "NUMERATOR", 90], ["A00001", "AF007", "DENOMINATOR", 100],
           ["A00001", "AF007", "ACHIEVED_POINTS", 12], ["A00002", "AF007", "NUMERATOR", 45],
           ["A00002", "AF007", "DENOMINATOR", 50], ["A00001", "HYP008", "NUMERATOR", 5],  # not used
           ["A00003", "AF007", "NUMERATOR", 70]]  # no denominator: rejected
    f.write_csv(d / "ACHIEVEMENT_2425.csv", ["PRACTICE_CODE", "INDICATOR_CODE", "MEASURE", "VALUE"], qof)
    path = d / "store.duckdb"
    with Store(path) as store:
        reports = ingest_files(store, d / "map.csv", [d / "epd.csv"], [d / "ls.csv"], max_reject_share=1.0,
                               supplied=[d / "toc.csv", d / "ACHIEVEMENT_2425.csv"], indicators=defs)
    toc_report, qof_report = reports[-2:]
    assert (toc_report.rows_read, toc_report.rows_accepted, toc_report.rows_rejected) == (9, 5, 4)
    assert qof_report.rows_read == 7 == qof_report.rows_accepted + qof_report.rows_rejected
    assert qof_report.rows_rejected == 1
    backend = ibis.duckdb.connect(str(path))
    IndicatorEngine(backend, load_indicators(ids=["AMR02"]) + defs).run()
    backend.disconnect()
    return path


def values(path, table="indicator_values"):
    backend = ibis.duckdb.connect(str(path))
    frame = backend.table(table).to_pandas()
    backend.disconnect()
    return frame


def test_tidy_rows_rejected_with_reasons(store_path):
    backend = ibis.duckdb.connect(str(store_path))
    reasons = set(backend.table("rejects").to_pandas()["reason"])
    backend.disconnect()
    assert "ORG_CODE is not an organisation at that level in the organisation map" in reasons
    assert "the period length differs from the definition's period_type" in reasons
    assert "the period is not 1, 3 or 12 whole months" in reasons
    assert any("NUMERATOR exceeds DENOMINATOR" in r or "duplicate" in r for r in reasons)


def test_supplied_rolled_up_as_ratio_of_sums(store_path):
    v = values(store_path)
    toc = v[v.indicator_id == "TST03"].set_index(["org_level", "org_code"])
    assert toc.loc[("sub_icb", "S1A"), "value"] == pytest.approx(15.0)
    assert (toc.loc[("sub_icb", "S1A"), "period_type"], str(toc.loc[("sub_icb", "S1A"), "period"])[:10]) == \
        ("quarter", "2025-03-01")
    # ICB QA1 = S1A + S2B: (30 + 5) / (200 + 100)
    assert toc.loc[("icb", "QA1"), "value"] == pytest.approx(100 * 35 / 300)
    assert toc.loc[("england", "ENG"), "value"] == pytest.approx(100 * 47 / 360)
    assert toc.loc[("sub_icb", "S1A"), "england_value"] == pytest.approx(100 * 47 / 360)
    assert not (toc.reset_index()["org_level"] == "practice").any()  # never pushed below its level


def test_breakdowns_kept_for_the_comparison(store_path):
    b = values(store_path, "supplied_breakdowns")
    s1a = b[(b.org_code == "S1A") & (b.org_level == "sub_icb")].set_index("breakdown")
    assert s1a.loc["completed", "value"] == pytest.approx(100 * 10 / 120)
    assert s1a.loc["not_completed", "value"] == pytest.approx(100 * 20 / 80)


def test_qof_achievement_by_financial_year(store_path):
    v = values(store_path)
    qof = v[v.indicator_id == "TST10"].set_index(["org_level", "org_code"])
    assert str(qof.loc[("practice", "A00001"), "period"])[:10] == "2025-03-01"
    assert qof.loc[("practice", "A00001"), "value"] == pytest.approx(90.0)
    assert qof.loc[("sub_icb", "S1A"), "value"] == pytest.approx(100 * 135 / 150)


def test_supplied_definition_rules():
    bad = supplied_definition("TST04", "transfer_of_care", source_layout="qof_achievement")
    with pytest.raises(DefinitionError, match="TST04: qof_indicator_codes"):
        parse_definition(bad)
    mixed = copy.deepcopy(supplied_definition("TST05", "transfer_of_care"))
    mixed["denominator"] = {"type": "list_size", "description": "Registered patients"}
    with pytest.raises(DefinitionError, match="TST05: a supplied indicator needs"):
        parse_definition(mixed)


def test_breakdowns_must_add_up_and_one_qof_code_per_indicator(tmp_path, defs):
    f.write_map(tmp_path / "map.csv")
    q = ("2025-01-01", "2025-03-31")
    f.write_csv(tmp_path / "toc.csv", TIDY, [
        ["TST03", "sub_icb", "S1A", *q, "all", 30, 200], ["TST03", "sub_icb", "S1A", *q, "completed", 10, 120],
        ["TST03", "sub_icb", "S1A", *q, "not_completed", 25, 80]])  # 10 + 25 is not 30
    f.write_csv(tmp_path / "ACHIEVEMENT_2425.csv", ["PRACTICE_CODE", "INDICATOR_CODE", "MEASURE", "VALUE"], [
        ["A00001", "AF007", "NUMERATOR", 9], ["A00001", "AF007", "DENOMINATOR", 10]])
    twice = [d for d in defs if d.id == "TST10"][0]
    twice = parse_definition({**twice.raw, "supplied": {**twice.supplied, "qof_indicator_codes": ["AF007", "AF008"]}})
    f.write_csv(tmp_path / "ACHIEVEMENT_2526.csv", ["PRACTICE_CODE", "INDICATOR_CODE", "MEASURE", "VALUE"], [
        ["A00001", "AF007", "NUMERATOR", 9], ["A00001", "AF007", "DENOMINATOR", 10],
        ["A00001", "AF008", "NUMERATOR", 9], ["A00001", "AF008", "DENOMINATOR", 10]])
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest_organisations(tmp_path / "map.csv")
        toc = store.ingest_supplied(tmp_path / "toc.csv", defs, max_reject_share=1.0)
        assert toc.rows_rejected == 3 and "breakdown rows do not add up" in next(iter(toc.reasons))
        qof = store.ingest_supplied(tmp_path / "ACHIEVEMENT_2526.csv", [twice], max_reject_share=1.0)
        assert qof.rows_rejected == 4
        assert "more than one QOF code" in next(iter(qof.reasons))


SUPPLIED_IDS = sorted(i.id for i in load_indicators() if i.is_supplied)


@pytest.fixture(scope="module")
def every_supplied(tmp_path_factory):
    """One hand-made file per layout holding every supplied indicator of the library."""
    d = tmp_path_factory.mktemp("every_supplied")
    f.write_map(d / "map.csv")
    f.write_epd(d / "epd.csv", [f.epd_row("2025-03", "A00001", "0501013B0AAABAB", 1)])
    library = [i for i in load_indicators() if i.is_supplied]
    tidy, qof = [], []
    for n, ind in enumerate(library, 1):
        num, den = 3 * n, 10 * n + 7  # a different, hand-checkable ratio for each indicator
        if ind.supplied["source_layout"] == "qof_achievement":
            code = ind.supplied["qof_indicator_codes"][0]
            qof += [["A00001", code, "NUMERATOR", num], ["A00001", code, "DENOMINATOR", den],
                    ["A00002", code, "NUMERATOR", n], ["A00002", code, "DENOMINATOR", 2 * n]]
            continue
        start, end = {"quarter": ("2025-01-01", "2025-03-31"), "month": ("2025-03-01", "2025-03-31"),
                      "rolling_12m": ("2024-04-01", "2025-03-31")}[ind.supplied["period_type"]]
        tidy.append([ind.id, "sub_icb", "S1A", start, end, "all", num, den])
        tidy.append([ind.id, "sub_icb", "S2B", start, end, "all", n, 2 * n])
        if ind.supplied.get("breakdowns"):
            first, second = ind.supplied["breakdowns"][:2]
            tidy.append([ind.id, "sub_icb", "S1A", start, end, first, num - 1, den - 2])
            tidy.append([ind.id, "sub_icb", "S1A", start, end, second, 1, 2])
            tidy.append([ind.id, "sub_icb", "S2B", start, end, first, n, 2 * n])
    f.write_csv(d / "tidy.csv", TIDY, tidy)
    f.write_csv(d / "ACHIEVEMENT_2425.csv", ["PRACTICE_CODE", "INDICATOR_CODE", "MEASURE", "VALUE"], qof)
    with Store(d / "s.duckdb") as store:
        reports = ingest_files(store, d / "map.csv", [d / "epd.csv"], [], supplied=[d / "tidy.csv",
                               d / "ACHIEVEMENT_2425.csv"], indicators=library)
        assert all(r.rows_rejected == 0 for r in reports), [r.line() for r in reports]
    backend = ibis.duckdb.connect(str(d / "s.duckdb"))
    IndicatorEngine(backend, library).run()
    table = backend.table("indicator_values").to_pandas()
    backend.disconnect()
    return {ind.id: (n, ind) for n, ind in enumerate(library, 1)}, table


@pytest.mark.parametrize("indicator_id", SUPPLIED_IDS)
def test_each_supplied_indicator_by_hand(every_supplied, indicator_id):
    numbers, table = every_supplied
    n, ind = numbers[indicator_id]
    rows = table[table.indicator_id == indicator_id].set_index(["org_level", "org_code"])
    if ind.supplied["source_layout"] == "qof_achievement":
        own, other, area = ("practice", "A00001"), ("practice", "A00002"), ("sub_icb", "S1A")
    else:
        own, other, area = ("sub_icb", "S1A"), ("sub_icb", "S2B"), ("icb", "QA1")
    assert rows.loc[own, "numerator"] == 3 * n and rows.loc[own, "denominator"] == 10 * n + 7
    assert rows.loc[own, "value"] == pytest.approx(3 * n / (10 * n + 7) * ind.multiplier)
    # The level above holds both: a ratio of sums, not a mean of the two values.
    assert rows.loc[area, "value"] == pytest.approx((3 * n + n) / (10 * n + 7 + 2 * n) * ind.multiplier)
    assert rows.loc[other, "value"] == pytest.approx(0.5 * ind.multiplier)
    assert rows.loc[own, "period_type"] == ind.supplied["period_type"]
