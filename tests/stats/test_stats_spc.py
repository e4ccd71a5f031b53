"""SPC (Making Data Count XmR): hand-built rule cases, precedence and a literal oracle."""

import numpy as np
import pandas as pd
import pytest

from moopt.stats import calculate_spc, calculate_spc_summary

# Baseline of 12 points alternating 11, 9: mean 10, every moving range 2, so
# process limits 10 +/- 5.32 = [4.68, 15.32] and near-limit lines
# 10 +/- 3.5467 = [6.4533, 13.5467]. Points after the baseline are judged
# against these fixed limits.
BASELINE = [11, 9] * 6


def run_spc(tail, direction="increase", **kwargs):
    y = BASELINE + list(tail)
    df = pd.DataFrame({"period": np.arange(len(y)), "value": np.array(y, dtype=float)})
    return calculate_spc(df, series_columns=None, improvement_direction=direction,
                         baseline_points=12, **kwargs)


def rules(out):
    return out["spc_rule"].astype(object).where(out["spc_rule"].notna(), None).tolist()


def flagged(out, rule):
    return [i for i, r in enumerate(rules(out)) if r == rule]


def test_constants_match_making_data_count():
    from moopt.stats.spc import LIMIT_FACTOR, NEAR_LIMIT_FACTOR, SCREENING_FACTOR

    assert (LIMIT_FACTOR, SCREENING_FACTOR) == (2.66, 3.267)
    assert round(NEAR_LIMIT_FACTOR, 4) == 1.7733


def test_baseline_limits_are_as_designed():
    out = run_spc([10.5])
    row = out.iloc[0]
    assert row["spc_mean"] == 10
    assert row["spc_average_moving_range"] == 2
    assert row["spc_upper_limit"] == pytest.approx(15.32)
    assert row["spc_lower_near_limit"] == pytest.approx(10 - 2 * 2.66 / 3 * 2)
    assert flagged(out, "outside_limits") == [] and set(rules(out)) == {None}


def test_outside_limits_fires_only_strictly_beyond():
    out = run_spc([15.32, 15.33, 4.6])
    assert flagged(out, "outside_limits") == [13, 14]
    types = out["spc_point_type"].tolist()
    assert types[13] == "special_cause_improvement" and types[14] == "special_cause_concern"
    assert types[12] == "common_cause"


def test_run_of_seven_on_one_side():
    out = run_spc([11, 10.5, 11, 10.5, 11, 10.5, 11, 9])
    assert flagged(out, "run") == list(range(12, 19))
    assert set(out["spc_point_type"].iloc[12:19]) == {"special_cause_improvement"}
    six = run_spc([11, 10.5, 11, 10.5, 11, 10.5, 9])
    assert flagged(six, "run") == []


def test_point_on_the_mean_breaks_a_run():
    out = run_spc([11, 10.5, 11, 10, 11, 10.5, 11, 10.5])
    assert flagged(out, "run") == []


def test_trend_of_seven_rising_points_crossing_the_mean():
    out = run_spc([8.0, 8.5, 9.0, 9.5, 10.5, 11.0, 11.5])
    assert flagged(out, "trend") == list(range(12, 19))
    assert set(out["spc_signal_side"].iloc[12:19]) == {"high"}
    # Falling trend with lower-is-better is an improvement.
    down = run_spc([11.5, 11.0, 10.5, 9.5, 9.0, 8.5, 8.0], direction="decrease")
    assert flagged(down, "trend") == list(range(12, 19))
    assert set(down["spc_point_type"].iloc[12:19]) == {"special_cause_improvement"}


def test_a_tie_breaks_a_trend():
    out = run_spc([8.0, 8.5, 9.0, 9.0, 9.5, 10.5, 11.0, 11.5])
    assert flagged(out, "trend") == []


def test_two_of_three_beyond_near_line_flags_only_the_near_points():
    out = run_spc([14, 12, 14, 9])
    assert flagged(out, "two_of_three") == [12, 14]
    assert out["spc_point_type"].iloc[13] == "common_cause"
    assert out["spc_point_type"].iloc[12] == "special_cause_improvement"


def test_two_of_three_needs_all_three_on_the_same_side():
    assert flagged(run_spc([14, 9, 14, 9]), "two_of_three") == []


def test_points_outside_limits_do_not_count_as_near():
    out = run_spc([16, 14, 12, 9])
    assert flagged(out, "outside_limits") == [12]
    assert flagged(out, "two_of_three") == []


def test_precedence_outside_then_trend_then_two_of_three_then_run():
    # A run above the mean with one point outside the limits.
    out = run_spc([11, 10.5, 16, 10.5, 11, 10.5, 11, 9])
    assert rules(out)[12:19] == ["run", "run", "outside_limits", "run", "run", "run", "run"]
    # Seven rising points all above the mean: trend beats run.
    out = run_spc([10.5, 11, 11.5, 12, 12.5, 13, 13.4, 9])
    assert rules(out)[12:19] == ["trend"] * 7
    # Rising points ending beyond the near line: trend beats two-of-three.
    out = run_spc([10.5, 11, 11.5, 12, 12.5, 13.6, 14, 9])
    assert rules(out)[12:19] == ["trend"] * 7
    # Two-of-three inside a run: two-of-three beats run.
    out = run_spc([11, 10.5, 14, 11, 14, 10.5, 11, 9])
    assert rules(out)[12:19] == ["run", "run", "two_of_three", "run", "two_of_three", "run", "run"]


def test_neutral_direction_gives_neutral_types():
    out = run_spc([16, 4], direction="neutral")
    assert out["spc_point_type"].iloc[12:].tolist() == [
        "special_cause_neutral_high", "special_cause_neutral_low"]


def test_moving_range_screening_matches_hand_calculation():
    y = [10, 11, 9] * 5 + [30]
    df = pd.DataFrame({"period": range(16), "value": y})
    out = calculate_spc(df, series_columns=None, improvement_direction="decrease")
    # 14 moving ranges sum to 19 plus one of 21: mean 40/15 = 2.667; 21 >= 3.267 x 2.667 is
    # screened out, leaving 19/14.
    amr = 19 / 14
    assert out["spc_average_moving_range"].iloc[0] == pytest.approx(amr)
    assert out["spc_upper_limit"].iloc[0] == pytest.approx(180 / 16 + 2.66 * amr)
    unscreened = calculate_spc(df, series_columns=None, improvement_direction="decrease",
                               screen_outliers=False)
    assert unscreened["spc_average_moving_range"].iloc[0] == pytest.approx(40 / 15)


def test_all_equal_series_is_common_cause():
    df = pd.DataFrame({"period": range(20), "value": 5.0})
    out = calculate_spc(df, series_columns=None, improvement_direction="increase")
    assert (out["spc_point_type"] == "common_cause").all()
    assert (out["spc_upper_limit"] == 5.0).all()


def test_trial_limits_below_thirteen_points_and_tiny_series():
    for n, trial in [(1, True), (2, True), (12, True), (13, False)]:
        df = pd.DataFrame({"period": range(n), "value": np.arange(n) % 3})
        out = calculate_spc(df, series_columns=None, improvement_direction="increase")
        assert out["spc_trial_limits"].all() == trial
        assert out["spc_points"].iloc[0] == n
    single = calculate_spc(pd.DataFrame({"period": [0], "value": [1.0]}), series_columns=None,
                           improvement_direction="increase")
    assert single["spc_point_type"].iloc[0] == "common_cause"
    assert np.isnan(single["spc_upper_limit"].iloc[0])


def test_missing_values_are_skipped():
    y = BASELINE + [11, 10.5, np.nan, 11, 10.5, 11, 10.5, 11, 9]
    df = pd.DataFrame({"period": range(len(y)), "value": y})
    out = calculate_spc(df, series_columns=None, improvement_direction="increase",
                        baseline_points=12)
    assert pd.isna(out["spc_point_type"].iloc[14])
    assert flagged(out, "run") == [12, 13, 15, 16, 17, 18, 19]
    assert out["spc_upper_limit"].iloc[14] == pytest.approx(15.32)


def _literal_oracle(y, direction):
    """NHSRplotthedots 0.2 logic, transcribed point by point for one series."""
    y = np.asarray(y, float)
    n = len(y)
    mean = y.mean()
    mr = np.abs(np.diff(y))
    amr = mr.mean() if n > 1 else np.nan
    if n > 1:
        keep = mr < 3.267 * amr if amr > 0 else np.ones_like(mr, bool)
        amr = mr[keep].mean()
    upl, lpl = mean + 2.66 * amr, mean - 2.66 * amr
    nupl, nlpl = mean + 2 * 2.66 / 3 * amr, mean - 2 * 2.66 / 3 * amr
    outside = [(v > upl) or (v < lpl) for v in y]
    rtm = [int(np.sign(v - mean)) for v in y]
    close = [(not o) and (v < nlpl or v > nupl) for v, o in zip(y, outside)]
    seven_side = [i >= 6 and rtm[i] != 0 and all(rtm[j] == rtm[i] for j in range(i - 6, i))
                  for i in range(n)]
    part_side = [any(seven_side[j] for j in range(i, min(i + 7, n))) for i in range(n)]
    trend = [0] * n
    for i in range(6, n):
        d = np.sign(np.diff(y[i - 6:i + 1]))
        trend[i] = 1 if (d == 1).all() else (-1 if (d == -1).all() else 0)
    part_trend = [any(trend[j] != 0 for j in range(i, min(i + 7, n))) for i in range(n)]
    vp = [0, 0] + [int(c) for c in close] + [0, 0]
    rp = [0, 0] + rtm + [0, 0]
    two = []
    for i in range(n):
        two.append(any(sum(vp[i + a:i + a + 3]) >= 2 and abs(sum(rp[i + a:i + a + 3])) == 3
                       for a in range(3)))
    part_two = [t and c for t, c in zip(two, close)]
    out_rules, out_types = [], []
    for i in range(n):
        if outside[i]:
            rule, side = "outside_limits", rtm[i]
        elif part_trend[i]:
            nxt = part_trend[i + 1] if i + 1 < n else False
            step = (y[i + 1] - y[i]) if nxt else (y[i] - y[i - 1] if i > 0 else 0)
            rule, side = "trend", int(np.sign(step))
        elif part_two[i]:
            rule, side = "two_of_three", rtm[i]
        elif part_side[i]:
            rule, side = "run", rtm[i]
        else:
            rule, side = None, 0
        out_rules.append(rule)
        if rule is None:
            out_types.append("common_cause")
        elif direction == 0:
            out_types.append("special_cause_neutral_" + ("high" if side > 0 else "low"))
        else:
            out_types.append("special_cause_improvement" if side * direction > 0
                             else "special_cause_concern")
    return out_rules, out_types


def test_many_series_at_once_match_literal_oracle():
    rng = np.random.default_rng(12)
    frames = []
    directions = {"increase": 1, "decrease": -1, "neutral": 0}
    for s in range(150):
        n = int(rng.integers(5, 40))
        shift = np.where(np.arange(n) > n // 2, rng.normal(0, 2), 0)
        drift = np.cumsum(rng.normal(0, 0.3, n)) * rng.integers(0, 2)
        y = np.round(10 + shift + drift + rng.normal(0, 1, n), 1)
        direction = ["increase", "decrease", "neutral"][s % 3]
        frames.append(pd.DataFrame({"indicator_id": "A", "org_level": "sub_icb",
                                    "org_code": f"S{s:03d}", "period_type": "month",
                                    "period": pd.date_range("2022-01-01", periods=n, freq="MS"),
                                    "value": y, "improvement_direction": direction}))
    df = pd.concat(frames, ignore_index=True).sample(frac=1, random_state=1)  # shuffled rows
    out = calculate_spc(df)
    checked_special = 0
    for code, part in out.groupby("org_code"):
        part = part.sort_values("period")
        direction = directions[part["improvement_direction"].iloc[0]]
        expected_rules, expected_types = _literal_oracle(part["value"].to_numpy(), direction)
        assert rules(part) == expected_rules, code
        assert part["spc_point_type"].tolist() == expected_types, code
        checked_special += sum(r is not None for r in expected_rules)
    assert checked_special > 100  # the comparison exercised the rules


def test_summary_variation_and_assurance_icons():
    out = run_spc([16])
    s = calculate_spc_summary(out, series_columns=None, improvement_direction="increase",
                              target=3.0)
    assert s["variation_icon"].iloc[0] == "improvement_high"
    assert s["assurance_icon"].iloc[0] == "consistent_pass"  # lower limit 4.68 > target 3
    s = calculate_spc_summary(out, series_columns=None, improvement_direction="increase",
                              target=10.0)
    assert s["assurance_icon"].iloc[0] == "inconsistent"
    s = calculate_spc_summary(out, series_columns=None, improvement_direction="increase",
                              target=20.0)
    assert s["assurance_icon"].iloc[0] == "consistent_fail"
    none = calculate_spc_summary(out, series_columns=None, improvement_direction="increase")
    assert none["assurance_icon"].isna().all()
    assert none["last_value"].iloc[0] == 16 and bool(none["spc_trial_limits"].iloc[0])
    low = calculate_spc_summary(run_spc([4], direction="increase"), series_columns=None,
                                improvement_direction="increase")
    assert low["variation_icon"].iloc[0] == "concern_low"
    common = calculate_spc_summary(run_spc([10.5]), series_columns=None,
                                   improvement_direction="increase")
    assert common["variation_icon"].iloc[0] == "common_cause"


def test_validation():
    df = pd.DataFrame({"period": [1, 1], "value": [1.0, 2.0]})
    with pytest.raises(ValueError, match="same period twice"):
        calculate_spc(df, series_columns=None, improvement_direction="increase")
    with pytest.raises(ValueError, match="baseline_points"):
        calculate_spc(df, series_columns=None, improvement_direction="increase",
                      baseline_points=1)
    with pytest.raises(ValueError, match="not found"):
        calculate_spc(df, improvement_direction="increase")
    rolling = pd.DataFrame({"period": [1, 2], "value": [1.0, 2.0],
                            "period_type": ["month", "rolling_12m"]})
    with pytest.raises(ValueError, match="overlapping rolling sums"):
        calculate_spc(rolling, series_columns="period_type", improvement_direction="increase")
    out = calculate_spc(rolling, series_columns="period_type", improvement_direction="increase",
                        period_type=None)
    assert len(out) == 2
