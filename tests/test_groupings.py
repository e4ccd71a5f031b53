"""A run's own groups of practices (organisations.groupings): checked, computed, compared, paged."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from factories import copy_project

from moopt.config import ParameterError, load_config
from moopt.groupings import read_groupings

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_bad_groupings_file_is_refused_naming_each_line(tmp_path):
    path = _write(tmp_path / "groups.csv", "practice_code,group_code,group_name\n"
                  "A1,G1,North\n"      # line 2: fine
                  "Z9,G1,North\n"      # line 3: no such practice
                  "B2,G2,South\n"      # line 4: B2 twice
                  "b2,G1,North\n"      # line 5: the same practice in lower case
                  ",G2,South\n"        # line 6: blank practice
                  "C3,G 3,East\n")     # line 7: unusable group code
    with pytest.raises(ParameterError) as caught:
        read_groupings(path, {"A1", "B2", "C3"})
    message = str(caught.value)
    assert str(path) in message
    assert "6 rows read = 1 accepted + 5 rejected" in message
    assert "line 3: practice Z9 is not in the organisations data" in message
    assert "line 4: practice B2 is listed more than once (lines 4, 5)" in message
    assert "line 6: blank practice_code" in message
    assert "line 7: group code 'G 3' is not 1 to 12 letters or digits" in message


def test_a_good_groupings_file_is_read_whole(tmp_path):
    path = _write(tmp_path / "groups.csv", "Group_Name,Practice_Code,Group_Code,notes\n"
                  "North,a1,G1,x\nNorth,B2,G1,\nSouth,C3,G2,\n")
    frame, report = read_groupings(path, {"A1", "B2", "C3"})
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (3, 3, 0)
    assert frame.to_dict("records") == [
        {"practice_code": "A1", "group_code": "G1", "group_name": "North"},
        {"practice_code": "B2", "group_code": "G1", "group_name": "North"},
        {"practice_code": "C3", "group_code": "G2", "group_name": "South"}]
    with pytest.raises(ParameterError, match="lacks the column.*group_name"):
        read_groupings(_write(tmp_path / "short.csv", "practice_code,group_code\nA1,G1\n"), {"A1"})


def test_level_group_needs_a_groupings_file(tmp_path):
    with pytest.raises(ParameterError, match="level is group, but organisations.groupings names no"):
        load_config(None, project_dir=tmp_path, overrides={"organisations": {"level": "group"}})
    config = load_config(None, project_dir=tmp_path,
                         overrides={"organisations": {"level": "group", "groupings": "g.csv"}})
    assert config.groupings_file == str(tmp_path / "g.csv") and config.org_level == "group"


@pytest.mark.slow
def test_groups_are_a_level_with_values_statistics_and_pages(tmp_path):
    import moopt
    from moopt.pipeline import make_synthetic

    project = copy_project(tmp_path)
    make_synthetic(project / "outputs/data/synthetic", "small", 42, "2026-09", 24)
    mapping = pd.read_csv(project / "outputs/data/synthetic/organisations/gp-reg-pat-prac-map.csv", dtype=str)
    practices = sorted(mapping["PRACTICE_CODE"].unique())[:30]  # 3 groups of 10, across sub-ICB locations
    groups = pd.DataFrame({"practice_code": practices,
                           "group_code": [f"LOC{i % 3 + 1}" for i in range(len(practices))],
                           "group_name": [f"Locality {i % 3 + 1}" for i in range(len(practices))]})
    groups.to_csv(project / "localities.csv", index=False)
    run = {"organisations": {"level": "group", "groupings": "localities.csv"}, "renderer": "builtin"}
    built = moopt.build(run, project_dir=project, themes="antimicrobials", progress=False)
    assert built.ok, [f.error for f in built.failures]

    con = duckdb.connect(str(built.store_path), read_only=True)
    values = con.execute("SELECT * FROM indicator_values WHERE org_level IN ('practice', 'group')").fetchdf()
    results = con.execute("SELECT * FROM indicator_results WHERE org_level = 'group'").fetchdf()
    con.close()
    practice = values[values["org_level"] == "practice"].merge(groups, left_on="org_code", right_on="practice_code",
                                                                suffixes=("", "_file"))
    assert (practice["group_code"] == practice["group_code_file"]).all()  # practice rows name their group
    # Above practice level a practice counts only in periods it has the denominator (as for every level).
    practice = practice[practice["denominator"].notna()]
    direct = practice.groupby(["indicator_id", "group_code_file", "period", "period_type"]).agg(
        numerator=("numerator", "sum"), denominator=("denominator", "sum")).reset_index()
    group = values[values["org_level"] == "group"].merge(
        direct, left_on=["indicator_id", "org_code", "period", "period_type"],
        right_on=["indicator_id", "group_code_file", "period", "period_type"], suffixes=("", "_direct"))
    assert set(group["org_code"]) == {"LOC1", "LOC2", "LOC3"}
    assert group["indicator_id"].nunique() >= 20 and len(group) > 1000
    np.testing.assert_allclose(group["numerator"], group["numerator_direct"], rtol=1e-9)
    np.testing.assert_allclose(group["denominator"], group["denominator_direct"], rtol=1e-9)
    ratio = group["numerator_direct"] / group["denominator_direct"] * group["multiplier"]
    np.testing.assert_allclose(group["value"], ratio.where(group["denominator_direct"] > 0), rtol=1e-9)
    assert set(group["org_name"]) == {"Locality 1", "Locality 2", "Locality 3"}

    # Statistics: intervals and a funnel verdict against England; no peers for groups.
    latest = results[results["period_type"] == "rolling_12m"]
    assert latest["england_value"].notna().all() and latest["lower_95"].notna().any()
    assert latest["comparison_99_8"].notna().any()
    assert latest["peer_value"].isna().all()

    # Pages and downloads for each group.
    assert {o["code"] for o in built.manifest["organisations"]} == {"LOC1", "LOC2", "LOC3"}
    site = built.outputs_dir / "site"
    for code in ("LOC1", "LOC2", "LOC3"):
        page = site / "orgs" / "group" / code / "antimicrobials.html"
        assert page.is_file() and "Group of practices" in page.read_text()
        assert any((built.outputs_dir / "csv" / "group" / code / "antimicrobials").glob("*.csv"))
