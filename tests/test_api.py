"""The Python API: moopt.build mirrors `moopt build`; moopt.indicators.calculate returns values as a DataFrame."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from factories import copy_project

import moopt
from moopt.config import ParameterError
from moopt.indicators import calculate

ROOT = Path(__file__).resolve().parents[1]


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    ).stdout
    return set(json.loads(out))


def test_import_moopt_loads_no_data_libraries():
    """`import moopt` stays quick: build and calculate import the pipeline only when first used."""
    heavy = {"pandas", "duckdb", "ibis", "moopt.api", "moopt.pipeline"}
    assert heavy & _modules_loaded_by("import moopt") == set()
    assert {"moopt.api", "moopt.pipeline", "duckdb"} & _modules_loaded_by(
        "import moopt.indicators"
    ) == set()
    assert moopt.build.__module__ == "moopt.api" and calculate.__module__ == "moopt.api"


def test_build_refuses_an_option_the_command_line_does_not_have(tmp_path):
    with pytest.raises(TypeError, match="unknown option.*orgz.*the options are orgs, level"):
        moopt.build(project_dir=tmp_path, orgz="A1B")


def test_build_refuses_an_unknown_parameter_section(tmp_path):
    with pytest.raises(ParameterError, match="unknown parameter.*colour"):
        moopt.build({"colour": "blue"}, project_dir=tmp_path)


def test_build_reports_a_bad_value_as_the_command_line_does(tmp_path):
    with pytest.raises(ParameterError, match="workers must be a whole number"):
        moopt.build(project_dir=tmp_path, workers=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"level": "ccg"}, "level must be one of practice, pcn, sub_icb"),
        ({"source": "cache"}, "source must be one of results, engine"),
        ({"period_end": "2026-13"}, "period_end must be a month like 2026-06"),
    ],
)
def test_calculate_names_a_bad_argument(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        calculate("AMR01", store=tmp_path / "store.duckdb", **kwargs)


def test_calculate_without_a_store_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="No store at .*build first"):
        calculate("AMR01", store=tmp_path / "missing.duckdb")


# -- a small build through the API ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("api_project"))
    from moopt.pipeline import make_synthetic

    make_synthetic(project / "outputs" / "data" / "synthetic", "small", 42, "2026-09", 24)
    mapping = pd.read_csv(
        project / "outputs/data/synthetic/organisations/gp-reg-pat-prac-map.csv", dtype=str
    )
    org = sorted(mapping["SUB_ICB_LOCATION_CODE"].unique())[0]
    return moopt.build(
        project_dir=project, orgs=org, themes="antimicrobials", site=False, progress=False
    )


@pytest.mark.slow
def test_build_returns_the_run_and_what_it_did(run):
    assert run.ok and run.failures == []
    assert run.store_path.is_file() and run.outputs_dir == run.config.outputs_dir
    manifest = run.manifest
    # the organisation asked for, and the ICB and region above it (levels_above, the default)
    assert [o["code"] for o in manifest["organisations"] if o["level"] == "sub_icb"] == run.config.org_codes
    assert [o["level"] for o in manifest["organisations"]] == ["region", "icb", "sub_icb"]
    assert {t["id"] for t in manifest["themes"]} == {"summary", "antimicrobials"}
    assert set(run.seconds) >= {"data", "ingest", "indicators", "notebooks"}
    assert run.result.site is None  # site=False is --no-site


@pytest.mark.slow
def test_calculate_reads_the_built_results(run):
    frame = calculate(["AMR01", "AMR02"], level="icb", store=run.store_path)
    con = duckdb.connect(str(run.store_path), read_only=True)
    try:
        stored = con.execute(
            "SELECT * FROM indicator_results WHERE indicator_id IN ('AMR01', 'AMR02') "
            "AND org_level = 'icb' ORDER BY indicator_id, org_code, period_type, period"
        ).fetchdf()
    finally:
        con.close()
    assert len(frame) == len(stored) > 0
    pd.testing.assert_frame_equal(frame, stored)
    assert {"funnel_z", "assessment_99_8", "lower_95"} <= set(
        frame.columns
    )  # the statistics come too

    # Filters: the last month, one period type, some organisations; the run's level by default.
    end = sorted(frame["period"].unique())[-3]
    rolling = calculate(
        "AMR01",
        level="icb",
        store=run,
        period_end=pd.Timestamp(end).strftime("%Y-%m"),
        period_type="rolling_12m",
        org_codes=frame["org_code"].iloc[:1].tolist(),
    )
    assert len(rolling) > 0 and (rolling["period"] <= end).all()
    assert set(rolling["period_type"]) == {"rolling_12m"} and rolling["org_code"].nunique() == 1
    assert set(run.indicators("AMR01")["org_level"]) == {"sub_icb"}
    assert set(calculate("AMR01", level="england", store=run)["org_code"]) == {"ENG"}
    with pytest.raises(ValueError, match="holds no results for XYZ99 .*built with ADH01, AMR01"):
        calculate(["AMR01", "XYZ99"], store=run)


@pytest.mark.slow
def test_calculate_by_the_engine_gives_the_built_values_and_previews_an_edited_definition(
    run, tmp_path
):
    built = calculate("AMR01", level="sub_icb", store=run)
    recomputed = calculate("AMR01", level="sub_icb", store=run, source="engine")
    keys = ["indicator_id", "org_code", "period_type", "period"]
    both = built.merge(recomputed, on=keys, suffixes=("", "_engine"))
    assert len(both) == len(built) > 0
    for column in ("numerator", "denominator", "value", "england_value", "percentile", "decile_50"):
        # The engine sums exactly, so a rerun gives the stored numbers to the last bit.
        assert both[column].equals(both[f"{column}_engine"]), column

    edited = tmp_path / "definitions"
    edited.mkdir()
    text = (ROOT / "src/moopt/indicators/definitions/AMR01.yml").read_text()
    assert "\nmultiplier: 1\n" in text
    (edited / "AMR01.yml").write_text(text.replace("\nmultiplier: 1\n", "\nmultiplier: 1000\n"))
    preview = calculate("AMR01", store=run, source="engine", definitions=edited)
    joined = built.merge(preview, on=keys, suffixes=("", "_edited")).dropna(subset=["value"])
    assert len(joined) > 0
    assert (joined["numerator"] == joined["numerator_edited"]).all()
    assert joined["value_edited"].to_numpy() == pytest.approx(
        1000 * joined["value"].to_numpy(), rel=1e-12
    )
    with pytest.raises(ValueError, match="No definition for XYZ99"):
        calculate("XYZ99", store=run, source="engine")
