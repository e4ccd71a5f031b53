"""The build cache: a notebook is re-run only when something its page shows or is made from changed.

The end-to-end tests build one sub-ICB location and two themes of the small synthetic set
(four notebooks: two theme pages, the summary and the England overview) in a project folder
of their own, with a copy of the moopt package, so that an indicator definition can be
edited as a user would edit it. Each build is a ``moopt build`` in a child process whose
kernels import that copy. Every test first brings the outputs up to date, so the tests do
not depend on each other's order.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from factories import write_notebook

from moopt.pipeline import PageCacheInputs, assign_cache_keys
from moopt.runner import NotebookJob, cache_record_path, run_notebooks
from moopt.site import check_links

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "moopt"
THEMES = "safety,antimicrobials"


# -- the runner on its own: tiny notebooks ---------------------------------------------------------------

def _job(out: Path, template: str, code: str, key: str | None) -> NotebookJob:
    return NotebookJob("sub_icb", code, "t", template, str(out / f"notebooks/sub_icb/{code}/t.ipynb"),
                       {"value": 2}, cache_key=key)


def test_runner_reuses_only_ok_notebooks_with_the_same_key(tmp_path):
    good = write_notebook(tmp_path / "good.ipynb", "print(value)")
    bad = write_notebook(tmp_path / "bad.ipynb", "raise RuntimeError('broken')")
    out = tmp_path / "outputs"
    jobs = [_job(out, good, "A1", "k1"), _job(out, bad, "B2", "k1"), _job(out, good, "C3", None)]
    first = run_notebooks(jobs, out, workers=1, mode="papermill")
    assert [(r.status, r.reused) for r in first] == [("ok", False), ("failed", False), ("ok", False)]
    assert not cache_record_path(jobs[1]).exists()  # a failure leaves no record to reuse

    messages: list[str] = []
    second = run_notebooks(jobs, out, workers=1, mode="papermill", progress=messages.append)
    # Only the successful notebook with a key is reused; the failed one and the keyless one run.
    assert [(r.status, r.reused) for r in second] == [("ok", True), ("failed", False), ("ok", False)]
    assert "1 of 3 notebooks reused (unchanged)" in messages

    changed = [_job(out, good, "A1", "k2")]
    assert not run_notebooks(changed, out, workers=1, mode="papermill")[0].reused
    assert run_notebooks(changed, out, workers=1, mode="papermill")[0].reused
    assert not run_notebooks(changed, out, workers=1, mode="papermill", force=True)[0].reused


def test_runner_does_not_reuse_a_notebook_replaced_since_it_ran(tmp_path):
    template = write_notebook(tmp_path / "page.ipynb", "print(value)")
    out = tmp_path / "outputs"
    job = _job(out, template, "A1", "k1")
    run_notebooks([job], out, workers=1, mode="papermill")
    executed = Path(job.output)
    executed.write_text(executed.read_text() + "\n")  # edited by hand, or left by another build
    assert not run_notebooks([job], out, workers=1, mode="papermill")[0].reused


# -- the keys: what each page depends on ----------------------------------------------------------------

def _keyed_jobs(inputs: PageCacheInputs, themes=("safety", "antimicrobials"), org_name="Somewhere",
                period_end="latest") -> dict[str, str]:
    template = str(ROOT / "notebooks" / "summary.ipynb")
    common = {"period_end": period_end}
    jobs = [NotebookJob("england", "ENG", "overview", template, "overview.ipynb", common)]
    jobs.append(NotebookJob("sub_icb", "A1", "summary", template, "summary.ipynb",
                            {**common, "themes": list(themes)}))
    jobs += [NotebookJob("sub_icb", "A1", theme, template, f"{theme}.ipynb", {**common, "theme": theme})
             for theme in themes]
    assign_cache_keys(jobs, inputs, [{"code": "A1", "name": org_name, "level": "sub_icb"}])
    return {job.theme: job.cache_key for job in jobs}


def _inputs(shared="facts-1", **changed) -> PageCacheInputs:
    from moopt.indicators.definitions import load_indicators

    indicators = {i.id: f"digest-{i.id}" for i in load_indicators()}
    return PageCacheInputs(shared, {**indicators, **changed})


def test_keys_change_only_for_pages_that_show_what_changed():
    before = _keyed_jobs(_inputs())
    one_result = _keyed_jobs(_inputs(SAF02="digest-SAF02-changed"))
    assert {t for t in before if before[t] != one_result[t]} == {"overview", "summary", "safety"}
    assert {t for t in before if before[t] != _keyed_jobs(_inputs(), org_name="Renamed")[t]} \
        == {"summary", "safety", "antimicrobials"}  # the England overview shows no organisation's name
    # Run facts (period, coverage) and the source are shared by every page.
    assert all(before[t] != k for t, k in _keyed_jobs(_inputs(shared="facts-2")).items())
    assert all(before[t] != k for t, k in _keyed_jobs(_inputs(), period_end="2026-01").items())
    fewer_themes = _keyed_jobs(_inputs(), themes=("safety",))
    assert fewer_themes["safety"] == before["safety"] and fewer_themes["summary"] != before["summary"]


# -- end to end on the small synthetic set --------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project folder with the notebooks, parameters, a copy of the moopt package and small synthetic data."""
    folder = tmp_path_factory.mktemp("cache_project")
    for name in ("notebooks", "parameters"):
        shutil.copytree(ROOT / name, folder / name)
    shutil.copy(ROOT / "_quarto.yml", folder / "_quarto.yml")
    shutil.copytree(PACKAGE, folder / "package" / "moopt", ignore=shutil.ignore_patterns("__pycache__"))
    _moopt(folder, "synth", "--scale", "small")
    return folder


def _moopt(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project / "package")}
    done = subprocess.run([sys.executable, "-m", "moopt.cli", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=900)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _org(project: Path) -> str:
    mapping = pd.read_csv(project / "outputs/data/synthetic/organisations/gp-reg-pat-prac-map.csv")
    return sorted(mapping["SUB_ICB_LOCATION_CODE"].unique())[0]


def _build(project: Path, *extra: str, themes: str = THEMES, check: bool = True):
    """``moopt build`` of the project's first sub-ICB location; the notebooks by theme, and the run."""
    # --no-levels-above: one organisation's pages (its ICB's and region's would double the run).
    done = _moopt(project, "build", "--orgs", _org(project), "--themes", themes, "--no-levels-above", *extra,
                  check=check)
    manifest = json.loads((project / "outputs" / "run_manifest.json").read_text())
    return {nb["theme"]: nb for nb in manifest["notebooks"]}, done


def _rerun(notebooks: dict) -> set[str]:
    return {theme for theme, nb in notebooks.items() if not nb["reused"]}


@pytest.mark.slow
def test_nothing_changed_reuses_every_notebook_and_the_site_is_complete(project):
    _build(project)
    notebooks, done = _build(project)
    assert _rerun(notebooks) == set()
    assert all(nb["status"] == "ok" for nb in notebooks.values())
    assert "4 of 4 notebooks reused (unchanged)" in done.stdout
    site = project / "outputs" / "site"
    code = _org(project)
    for theme in ("summary", "safety", "antimicrobials"):
        assert 'class="moopt-vega"' in (site / "orgs" / "sub_icb" / code / f"{theme}.html").read_text()
    assert check_links(site) == []
    # The site's notebook pages were rendered by the first build with a site and reused now.
    assert re.search(r"site: \d+ notebook page\(s\) reused unchanged, 0 rendered", done.stdout), done.stdout[-2000:]


@pytest.mark.slow
def test_force_reruns_every_notebook(project):
    _build(project, "--no-site")
    notebooks, done = _build(project, "--no-site", "--force")
    assert _rerun(notebooks) == {"overview", "summary", "safety", "antimicrobials"}
    assert "0 of 4 notebooks reused" in done.stdout


@pytest.mark.slow
def test_editing_one_definition_reruns_only_the_pages_that_show_it(project):
    _build(project, "--no-site")
    definition = project / "package" / "moopt" / "indicators" / "definitions" / "SAF02.yml"
    original = definition.read_text()
    try:
        definition.write_text(original.replace("description: >\n", "description: >\n  Reworded. ", 1))
        assert definition.read_text() != original
        notebooks, _ = _build(project, "--no-site")
    finally:
        definition.write_text(original)
    assert _rerun(notebooks) == {"overview", "summary", "safety"}  # not antimicrobials
    executed = (project / "outputs" / notebooks["safety"]["path"]).read_text()
    assert "Reworded." in executed


@pytest.mark.slow
def test_changing_the_themes_reruns_the_summary_that_links_them(project):
    _build(project, "--no-site")
    notebooks, _ = _build(project, "--no-site", themes="safety")
    assert set(notebooks) == {"overview", "summary", "safety"}
    assert _rerun(notebooks) == {"summary"}


@pytest.mark.slow
def test_a_failed_notebook_is_run_again_next_time(project):
    _build(project, "--no-site")
    code = _org(project)
    csv_folder = project / "outputs" / "csv" / "sub_icb" / code / "safety"
    shutil.rmtree(csv_folder)
    csv_folder.write_text("a file where the page's CSV folder should be")  # the page cannot save its charts
    try:
        notebooks, done = _build(project, "--no-site", check=False)
    finally:
        csv_folder.unlink()
    assert done.returncode == 1
    assert notebooks["safety"]["status"] == "failed" and not notebooks["safety"]["reused"]
    notebooks, _ = _build(project, "--no-site")
    assert _rerun(notebooks) == {"safety"}
    assert notebooks["safety"]["status"] == "ok"


@pytest.mark.slow
def test_a_deleted_csv_download_reruns_its_page(project):
    _build(project, "--no-site")
    code = _org(project)
    downloads = sorted((project / "outputs" / "csv" / "sub_icb" / code / "antimicrobials").glob("*.csv"))
    assert downloads
    downloads[0].unlink()
    notebooks, _ = _build(project, "--no-site")
    assert _rerun(notebooks) == {"antimicrobials"}
    assert downloads[0].exists()
