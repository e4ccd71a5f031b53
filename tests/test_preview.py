"""Draft indicators and preview builds (``moopt build --indicator ID``, ``--theme ID``, ``--drafts``).

The end-to-end test builds one sub-ICB location and two themes of the small synthetic set in a
project folder of its own with a copy of the package (as tests/test_build_cache.py does), so
that a definition can be edited as an analyst would edit it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from factories import write_notebook

from moopt.config import ParameterError, load_config
from moopt.indicators.definitions import load_indicators
from moopt.preview import preview_request, run_indicators, split_preview_jobs
from moopt.runner import NotebookJob, run_notebooks

ROOT = Path(__file__).resolve().parents[1]
DRAFT = "VAL01"  # the library's draft definition (status: draft)


def _config(tmp_path, **overrides):
    return load_config(None, project_dir=tmp_path, overrides=overrides)


def test_drafts_are_computed_only_when_asked_for(tmp_path):
    assert load_indicators(ids=[DRAFT])[0].status == "draft"
    every = {i.id for i in load_indicators()}
    plain = {i.id for i in run_indicators(_config(tmp_path))}
    assert plain == every - {i.id for i in load_indicators() if i.status == "draft"}
    assert DRAFT not in plain
    assert {i.id for i in run_indicators(_config(tmp_path, include_drafts=True))} == every
    named, request = preview_request(_config(tmp_path), DRAFT, None, ["national_mo", "safety"])
    assert {i.id for i in run_indicators(named)} == plain | {DRAFT}
    assert request.themes == ("national_mo",)


def test_include_drafts_must_be_true_or_false(tmp_path):
    with pytest.raises(ParameterError, match="include_drafts must be true or false"):
        _config(tmp_path, include_drafts="yes")


def test_preview_request_names_what_is_wrong(tmp_path):
    config = _config(tmp_path)
    assert preview_request(config, None, None, ["safety"]) == (config, None)
    with pytest.raises(ParameterError, match=r"SAF99 \(did you mean SAF.*\?\)"):
        preview_request(config, "SAF99", None, ["safety"])
    with pytest.raises(ParameterError, match="antimicrobials .* not built by this run"):
        preview_request(config, "AMR01", None, ["safety"])
    _, request = preview_request(config, ["SAF01,AMR01"], ["respiratory"],
                                 ["safety", "antimicrobials", "respiratory"])
    assert request.themes == ("safety", "antimicrobials", "respiratory")


def test_a_preview_keeps_the_last_good_page_of_other_themes_whatever_its_key(tmp_path):
    template = write_notebook(tmp_path / "page.ipynb", "print(value)")
    out = tmp_path / "outputs"

    def job(theme: str, key: str, code: str = "A1") -> NotebookJob:
        return NotebookJob("sub_icb", code, theme, template, str(out / f"notebooks/sub_icb/{code}/{theme}.ipynb"),
                           {"value": 1}, cache_key=key)

    first = [job("safety", "k1"), job("antimicrobials", "k1"), job("summary", "k1")]
    assert all(r.status == "ok" for r in run_notebooks(first, out, workers=1, mode="papermill"))
    _, request = preview_request(_config(tmp_path), "SAF01", None, ["safety", "antimicrobials"])
    # Every key changed, and one page (B2) was never built.
    second = [job("safety", "k2"), job("antimicrobials", "k2"), job("summary", "k2"), job("antimicrobials", "k2", "B2")]
    to_run, kept = split_preview_jobs(second, request, out)
    assert to_run == [0, 2, 3]  # the previewed theme, the summary, and the page with nothing to keep
    assert list(kept) == [1] and kept[1].reused and kept[1].status == "ok"
    assert kept[1].path == "notebooks/sub_icb/A1/antimicrobials.ipynb"


# -- end to end on the small synthetic set --------------------------------------------------------------

def _moopt(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project / "package")}
    done = subprocess.run([sys.executable, "-m", "moopt.cli", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _shown(project: Path, notebook_path: str) -> str:
    """The outputs of an executed notebook (what its page shows), not its code."""
    cells = json.loads((project / "outputs" / notebook_path).read_text())["cells"]
    return "\n".join(json.dumps(cell.get("outputs", [])) for cell in cells)


def _store_ids(project: Path) -> set[str]:
    import duckdb

    con = duckdb.connect(str(project / "outputs/store/moopt.duckdb"), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT indicator_id FROM indicator_results").fetchall()}
    finally:
        con.close()


@pytest.mark.slow
def test_preview_build_reruns_only_the_pages_that_show_the_indicator(tmp_path):
    project = tmp_path / "project"
    for name in ("notebooks", "parameters"):
        shutil.copytree(ROOT / name, project / name)
    shutil.copy(ROOT / "_quarto.yml", project / "_quarto.yml")
    shutil.copytree(ROOT / "src" / "moopt", project / "package" / "moopt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _moopt(project, "synth", "--scale", "small")
    mapping = pd.read_csv(project / "outputs/data/synthetic/organisations/gp-reg-pat-prac-map.csv")
    code = sorted(mapping["SUB_ICB_LOCATION_CODE"].unique())[0]
    run = ("build", "--orgs", code, "--themes", "national_mo,antimicrobials", "--no-site")

    def build(*extra: str) -> tuple[dict, dict]:
        done = _moopt(project, *run, *extra)
        manifest = json.loads((project / "outputs/run_manifest.json").read_text())
        return {nb["theme"]: nb for nb in manifest["notebooks"]}, {"manifest": manifest, "stdout": done.stdout}

    notebooks, first = build()
    assert DRAFT not in _store_ids(project) and first["manifest"]["drafts"] == []
    assert f"draft {DRAFT} left out" in first["stdout"]
    assert DRAFT not in _shown(project, notebooks["national_mo"]["path"])
    assert DRAFT not in _shown(project, notebooks["overview"]["path"])

    # Edit a definition of the other theme: a preview of VAL01 keeps that theme's page as it was.
    definition = project / "package/moopt/indicators/definitions/AMR01.yml"
    definition.write_text(definition.read_text().replace("description: >\n", "description: >\n  Reworded. ", 1))
    antimicrobials_before = (project / "outputs" / notebooks["antimicrobials"]["path"]).read_bytes()
    notebooks, preview = build("--indicator", DRAFT)
    assert {t for t, nb in notebooks.items() if not nb["reused"]} == {"national_mo", "summary", "overview"}
    assert (project / "outputs" / notebooks["antimicrobials"]["path"]).read_bytes() == antimicrobials_before
    assert preview["manifest"]["preview"] == {"indicators": [DRAFT], "themes": ["national_mo"]}
    assert preview["manifest"]["drafts"] == [DRAFT] and DRAFT in _store_ids(project)
    for page in ("national_mo", "overview"):
        shown = _shown(project, notebooks[page]["path"])
        assert f"{DRAFT}: " in shown and 'class=\\"moopt-draft' in shown and ">Draft</span>" in shown
    assert f"{DRAFT} Low-priority prescribing cost (draft)" in _shown(project, notebooks["national_mo"]["path"])

    # A build without the options: the kept page is now out of date, so it runs; the draft is gone.
    notebooks, _ = build()
    assert not notebooks["antimicrobials"]["reused"]
    assert "Reworded." in _shown(project, notebooks["antimicrobials"]["path"])
    assert DRAFT not in _store_ids(project)
    assert DRAFT not in _shown(project, notebooks["national_mo"]["path"])
