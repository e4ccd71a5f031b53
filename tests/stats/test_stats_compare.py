"""Comparison with a benchmark: categories, direction mapping, self-exclusion."""

import numpy as np
import pandas as pd
import pytest

from moopt.stats import calculate_comparison, calculate_intervals


def frame(lower, upper, benchmark=0.2, level="sub_icb", direction="decrease"):
    n = len(lower)
    return pd.DataFrame(
        {
            "org_level": [level] * n if isinstance(level, str) else level,
            "lower_95": lower,
            "upper_95": upper,
            "lower_99_8": np.array(lower) - 0.01,
            "upper_99_8": np.array(upper) + 0.01,
            "england_value": [benchmark] * n,
            "improvement_direction": [direction] * n if isinstance(direction, str) else direction,
        }
    )


def test_higher_similar_lower_at_both_levels():
    df = frame([0.25, 0.15, 0.10, 0.205], [0.30, 0.25, 0.195, 0.215])
    out = calculate_comparison(df)
    assert out["england_comparison_95"].tolist() == ["higher", "similar", "lower", "higher"]
    # At 99.8% the widened limits make the borderline rows similar.
    assert out["england_comparison_99_8"].tolist() == ["higher", "similar", "similar", "similar"]


def test_bound_equal_to_benchmark_is_similar():
    df = frame([0.2, 0.1], [0.3, 0.2])
    out = calculate_comparison(df, confidence=0.95)
    assert out["england_comparison_95"].tolist() == ["similar", "similar"]


@pytest.mark.parametrize(
    "direction, expected",
    [
        ("decrease", ["worse", "similar", "better"]),
        ("increase", ["better", "similar", "worse"]),
        ("neutral", ["higher", "similar", "lower"]),
    ],
)
def test_direction_maps_to_assessment(direction, expected):
    df = frame([0.25, 0.15, 0.10], [0.30, 0.25, 0.15], direction=direction)
    out = calculate_comparison(df, confidence=0.95)
    assert out["england_assessment_95"].tolist() == expected
    assert out["england_comparison_95"].tolist() == ["higher", "similar", "lower"]


def test_direction_per_row_from_column():
    df = frame([0.25, 0.25, 0.25], [0.3, 0.3, 0.3], direction=["increase", "decrease", "neutral"])
    out = calculate_comparison(df, confidence=0.95)
    assert out["england_assessment_95"].tolist() == ["better", "worse", "higher"]


def test_england_is_never_compared_with_itself_and_missing_stays_missing():
    df = frame([0.25, 0.25, np.nan], [0.3, 0.3, 0.3], level=["england", "icb", "icb"])
    df.loc[1, "england_value"] = np.nan
    out = calculate_comparison(df, confidence=0.95)
    assert out["england_comparison_95"].isna().tolist() == [True, True, True]
    assert out["england_assessment_95"].isna().all()


def test_peer_prefix_and_no_level_column():
    df = frame([0.25], [0.3]).drop(columns="org_level").rename(columns={"england_value": "peer"})
    out = calculate_comparison(df, benchmark="peer", prefix="peer", org_level=None)
    assert out["peer_comparison_95"].tolist() == ["higher"]
    assert out["peer_assessment_99_8"].tolist() == ["worse"]


def test_end_to_end_with_intervals():
    df = pd.DataFrame(
        {
            "org_level": ["sub_icb", "sub_icb"],
            "numerator": [300, 20],
            "denominator": [1000, 100],
            "multiplier": [100, 100],
            "england_value": [20.0, 20.0],
        }
    )
    out = calculate_comparison(
        calculate_intervals(df, kind="proportion"), improvement_direction="decrease"
    )
    assert out["england_comparison_95"].tolist() == ["higher", "similar"]
    assert out["england_assessment_99_8"].tolist() == ["worse", "similar"]


def test_validation_messages():
    df = frame([0.25], [0.3])
    with pytest.raises(ValueError, match="not found"):
        calculate_comparison(df.drop(columns="upper_99_8"))
    with pytest.raises(ValueError, match="allowed are"):
        calculate_comparison(df.assign(improvement_direction="up"))
    with pytest.raises(ValueError, match="is neither one of"):
        calculate_comparison(df, improvement_direction="lower_is_better")
    with pytest.raises(ValueError, match="between 0 and 1"):
        calculate_comparison(df, confidence=95)
