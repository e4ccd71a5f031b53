"""Indicator definitions: all valid, and invalid ones refused with the indicator named."""

import copy

import pytest
import yaml

from moopt.indicators.definitions import (DEFINITIONS_DIR, DefinitionError, CodeSet, load_indicators,
                                          load_themes, parse_definition)


def amr01() -> dict:
    return yaml.safe_load((DEFINITIONS_DIR / "AMR01.yml").read_text())


def test_every_definition_loads_and_is_consistent():
    indicators = load_indicators()
    assert len(indicators) >= 10
    themes = {t.id for t in load_themes()}
    assert {"antimicrobials", "safety"} <= {i.theme for i in indicators} <= themes
    for ind in indicators:
        assert ind.date_reviewed <= ind.next_review
        if ind.value_kind == "proportion":
            assert ind.multiplier == 100


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("improvement_direction"), "improvement_direction"),
    (lambda d: d.update(improvement_direction="lower"), "improvement_direction"),
    (lambda d: d["numerator"].update(codes=["05.01"]), "numerator.codes"),
    (lambda d: d["denominator"].update(star_pu_group="nonsense_item"), "STAR-PU group 'nonsense_item'"),
    (lambda d: d["numerator"].update(quantity_per_item_above={"0502": 3}), "not numerator codes"),
    (lambda d: d.update(next_review="2020-01-01"), "next_review is before"),
    (lambda d: d.update(extra_field=1), "extra_field"),
])
def test_invalid_definitions_name_the_indicator(change, message):
    data = copy.deepcopy(amr01())
    change(data)
    with pytest.raises(DefinitionError) as err:
        parse_definition(data, "AMR01.yml")
    assert "AMR01" in str(err.value) and message in str(err.value)


def test_proportion_must_be_a_percentage():
    data = yaml.safe_load((DEFINITIONS_DIR / "AMR02.yml").read_text())
    data["multiplier"] = 1000
    with pytest.raises(DefinitionError, match="AMR02: a proportion must use multiplier 100"):
        parse_definition(data)


def test_code_patterns_prefix_suffix_exclusion_threshold():
    codes = CodeSet(codes=("0501", "0501080W0*AE"), exclude=("050109",),
                    quantity_per_item_above=(("0501080W0*AE", 6.0),))
    assert codes.matches("0501013B0AAABAB")
    assert not codes.matches("0501090K0AAACAC")  # excluded
    assert not codes.matches("0502000A0AAAAAA")
    # The thresholded pattern is checked first only for its own codes; a plain prefix still matches.
    only_uti = CodeSet(codes=("0501080W0*AE",), quantity_per_item_above=(("0501080W0*AE", 6.0),))
    assert only_uti.matches("0501080W0BBAAAE", 14) and not only_uti.matches("0501080W0AAAEAE", 6)
    assert not only_uti.matches("0501080W0AAADAD", 28)
