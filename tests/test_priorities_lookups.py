"""Lookup files are validated when loaded; reference lines reach the page text, the trend chart and its CSV."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from moopt.charts.trend import plot_trend_with_deciles
from moopt.indicators.definitions import DefinitionError, get_indicator, parse_definition
from moopt.indicators.lookups import LookupFileError, load_lookups, read_lookup
from moopt.methodology import lookups_page, write_methodology
from moopt.report import describe_reference_line

HEADER = "bnf_code,factor,source,date\n"


def lookup(tmp_path, body: str, key: str = "presentation", header: str = HEADER):
    path = tmp_path / "test_lookup.csv"
    path.write_text(header + body)
    return read_lookup(path, "test_lookup", "A test lookup", "For tests.", key)


@pytest.mark.parametrize("body, key, message", [
    ("0301011R0BEAIAP,2,src,2025-01-01\n0301011R0BEAIAP,3,src,2025-01-01\n", "presentation",
     "test_lookup.csv, row 3: bnf_code 0301011R0BEAIAP is already given in row 2"),
    ("0301011R0BEAIA,2,src,2025-01-01\n", "presentation",
     "test_lookup.csv, row 2: bnf_code '0301011R0BEAIA' is not a 15-character BNF presentation code"),
    ("0501013B0AAABAB,2,src,2025-01-01\n", "chemical", "row 2: bnf_code '0501013B0AAABAB' is not a 9-character"),
    ("0212000B0BBABAB,2,src,2025-01-01\n", "generic", "row 2: bnf_code 0212000B0BBABAB is not a generic"),
    # A generic key matches brands through the last two characters: these two rows collide.
    ("0212000B0AAABAB,2,src,2025-01-01\n0212000B0AAAXAB,2,src,2025-01-01\n", "generic",
     "row 3: bnf_code 0212000B0AAAXAB is already given in row 2"),
    ("0301011R0BEAIAP,2,,2025-01-01\n", "presentation", "row 2: source is empty"),
    ("0301011R0BEAIAP,2,src,1 Jan 2025\n", "presentation", "row 2: date '1 Jan 2025' is not a date"),
    ("0301011R0BEAIAP,2,src\n", "presentation", "row 2: 3 fields, the header has 4"),
])
def test_invalid_lookup_rows_are_named(tmp_path, body, key, message):
    with pytest.raises(LookupFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        lookup(tmp_path, body, key)


def test_lookup_header_needs_source_and_date(tmp_path):
    with pytest.raises(LookupFileError, match="row 1: the header has no 'source' column"):
        lookup(tmp_path, "0301011R0BEAIAP,2,2025-01-01\n", header="bnf_code,factor,date\n")


def test_dated_lookup_months_must_not_overlap(tmp_path):
    header = "bnf_code,product,valid_from,valid_to,source,date\n"
    ok = lookup(tmp_path, "0601060D0EKAAA0,A,2023-04-11,2025-06-30,src,2025-01-01\n"
                          "0601060D0EKAAA0,A,2025-07-01,,src,2025-01-01\n", header=header)
    assert ok.dated and len(ok.frame) == 2
    with pytest.raises(LookupFileError, match="row 3: bnf_code 0601060D0EKAAA0 is already given in row 2 for "
                                              "overlapping months"):
        lookup(tmp_path, "0601060D0EKAAA0,A,2023-04-11,2025-06-10,src,2025-01-01\n"
                         "0601060D0EKAAA0,A,2025-06-20,,src,2025-01-01\n", header=header)


def test_a_factor_that_is_not_a_positive_number_is_named_with_its_row(tmp_path):
    table = lookup(tmp_path, "0301011R0BEAIAP,2,src,2025-01-01\n0301011R0AAAPAP,n/a,src,2025-01-01\n")
    with pytest.raises(LookupFileError, match=r"test_lookup.csv, row 3: column factor is 'n/a', not a positive"):
        table.numeric("factor")


def test_definition_using_a_missing_lookup_column_or_class_is_rejected():
    raw = copy.deepcopy(get_indicator("PAIN05").raw)
    raw["numerator"]["lookup"]["divide_by"] = ["ddd_grams"]
    with pytest.raises(DefinitionError, match="PAIN05: the numerator lookup 'gabapentinoid_ddd'.*ddd_grams"):
        parse_definition(raw, "PAIN05.yml")
    raw = copy.deepcopy(get_indicator("AMR07").raw)
    raw["numerator"]["lookup"]["where"] = {"aware_class": ["Acess"]}
    with pytest.raises(DefinitionError, match=r"never has the value\(s\) \['Acess'\]"):
        parse_definition(raw, "AMR07.yml")


def test_packaged_lookups_hold_the_reference_facts():
    lookups = load_lookups()
    aware = lookups["uk_aware_2024"].frame.set_index("bnf_code")["aware_class"]
    # UK-AWaRe 2024: co-amoxiclav stays Watch; first-generation cephalosporins move to Access.
    assert aware["0501013K0"] == "Watch" and aware["0501021L0"] == "Access"
    carbon = lookups["salbutamol_inhaler_carbon"]
    factors = dict(zip(carbon.frame["bnf_code"], carbon.numeric("kg_co2e_per_inhaler")))
    assert factors["0301011R0BEAIAP"] == 28.26 and factors["0301011R0BWAABZ"] == 0.62
    ddd = lookups["gabapentinoid_ddd"]
    assert set(ddd.numeric("ddd_mg")) == {1800.0, 300.0}


def test_methodology_lists_every_lookup_with_its_source_and_date(tmp_path):
    page = lookups_page()
    for name, table in load_lookups().items():
        assert table.title in page and table.path.name in page
        for source, when in table.sources():
            assert f"Source ({when}):" in page
    entries = write_methodology(tmp_path)
    assert any(e["path"] == "methodology/lookups.md" for e in entries)
    pain05 = (tmp_path / "pages" / "methodology" / "PAIN05.md").read_text()
    assert "quantity x strength_mg_per_unit / ddd_mg" in pain05 and "gabapentinoid_ddd.csv" in pain05


def test_reference_line_sentence_names_value_source_and_side():
    dia04 = get_indicator("DIA04")
    text = describe_reference_line(dia04, pd.Series({"value": 72.5}))
    assert "80.0 % of testing strip items" in text and "NHS England 2024/25" in text
    assert "The latest value is below it" in text
    assert describe_reference_line(get_indicator("AMR02"), pd.Series({"value": 5.0})) == ""


def _trend_table() -> pd.DataFrame:
    periods = pd.date_range("2025-01-01", periods=4, freq="MS")
    rows = []
    for i, period in enumerate(periods):
        rows.append({"indicator_id": "DIA04", "org_level": "sub_icb", "org_code": "S1A", "org_name": "Sub S1A",
                     "period": period, "period_type": "month", "value": 60 + i, "england_value": 70.0,
                     **{f"decile_{d}": 50 + d / 5 for d in range(10, 100, 10)}})
    return pd.DataFrame(rows)


def test_trend_chart_draws_and_exports_the_reference_line(tmp_path):
    chart = plot_trend_with_deciles(_trend_table(), "S1A", "sub_icb", "Recommended strips", "%", "increase",
                                    period_type="month", reference_line=(80.0, "National expectation: 80%"))
    ref = chart.data[chart.data.series == "reference"]
    assert len(ref) == 4 and (ref.value == 80.0).all() and (ref.series_label == "National expectation: 80%").all()
    drawn = [layer for layer in chart.spec["layer"] if "'reference'" in str(layer.get("transform"))]
    assert sorted(layer["mark"]["type"] for layer in drawn) == ["rule", "text"]  # line and its label
    assert "national reference" in chart.caption and "80" in chart.alt_text
    chart.to_csv(tmp_path / "trend.csv")
    assert "reference" in set(pd.read_csv(tmp_path / "trend.csv")["series"])
    plain = plot_trend_with_deciles(_trend_table(), "S1A", "sub_icb", "Recommended strips", "%", "increase",
                                    period_type="month")
    assert "reference" not in set(plain.data.series)
