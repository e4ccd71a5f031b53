"""The theme notebooks as an analyst opens them: stripped, and runnable as they are against the last build."""

from __future__ import annotations

import html
import json
from pathlib import Path

import nbformat
import pytest
from factories import small_build

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    """nbstripout (pre-commit) keeps outputs and execution counts out of the repository."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    assert [i for i, c in enumerate(cells) if c.get("outputs")] == [], f"{path.name} has outputs"
    assert [i for i, c in enumerate(cells) if c.get("execution_count") is not None] == [], (
        f"{path.name} has execution counts"
    )


@pytest.fixture(scope="module")
def built_project(tmp_path_factory) -> Path:
    """A project whose outputs hold a small build (one sub-ICB location, the safety theme)."""
    project = small_build(tmp_path_factory.mktemp("notebook_project"), "--themes", "safety", "--no-site",
                          orgs=1)
    return project


@pytest.mark.slow
def test_theme_notebook_runs_as_it_is_against_the_last_build(built_project):
    """What `make lab` offers: the notebook from notebooks/, its default parameters, no runner.

    nbclient executes it unchanged (no parameters injected) from the notebooks folder, so
    its defaults (``store_path="../outputs/store/moopt.duckdb"``, the first organisation in
    the store) point at the build.
    """
    from nbclient import NotebookClient

    template = built_project / "notebooks" / "safety.ipynb"
    notebook = nbformat.read(template, as_version=4)
    sources_before = [c.source for c in notebook.cells]
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(template.parent)}},
    ).execute()
    assert [c.source for c in notebook.cells] == sources_before  # nothing injected
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert [o for o in outputs if o.get("output_type") == "error"] == []
    shown = "".join(
        str(o.get("data", {}).get("text/html", "")) + str(o.get("text", "")) for o in outputs
    )
    manifest = json.loads((built_project / "outputs" / "run_manifest.json").read_text())
    organisation = next(o for o in manifest["organisations"] if o["level"] == "sub_icb")
    # the page is about the first organisation in the store
    assert organisation["name"] in shown or html.escape(organisation["name"]) in shown
    assert any(
        "image/png" in o.get("data", {})
        or "image/svg+xml" in o.get("data", {})
        or "text/html" in o.get("data", {})
        for o in outputs
    )


@pytest.mark.slow
def test_theme_notebook_runs_under_plain_papermill_without_the_runner(built_project, tmp_path):
    """A researcher's papermill call, with parameters and no moopt runner: interactive charts inline."""
    import papermill

    out = tmp_path / "safety-run.ipynb"
    manifest = json.loads((built_project / "outputs" / "run_manifest.json").read_text())
    organisation = next(o for o in manifest["organisations"] if o["level"] == "sub_icb")
    papermill.execute_notebook(
        str(built_project / "notebooks" / "safety.ipynb"), str(out), kernel_name="python3",
        progress_bar=False, cwd=str(built_project / "notebooks"),
        parameters={"org_level": "sub_icb", "org_code": organisation["code"], "theme": "safety",
                    "store_path": str(built_project / "outputs" / "store" / "moopt.duckdb"),
                    "outputs_dir": str(tmp_path / "outputs")})
    cells = nbformat.read(out, as_version=4).cells
    outputs = [o for c in cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert [o for o in outputs if o.get("output_type") == "error"] == []
    shown = "".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert html.escape(organisation["name"]) in shown or organisation["name"] in shown
    # Outside a build the charts carry their data and the drawing scripts inline (JupyterLab).
    assert "moopt-vega-spec" in shown and "vegaEmbed" in shown
    assert list((tmp_path / "outputs" / "csv").rglob("*.csv"))  # downloads written where asked
