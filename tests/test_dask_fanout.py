"""Notebook fan-out on Dask distributed: a small build on a LocalCluster equals the local-pool build."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from factories import copy_project, write_notebook
from moopt.cli import main
from moopt.runner import NotebookJob, run_notebooks

distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install 'moopt[spark]')")
# One group: both tests share the module's LocalCluster, made once on one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dask")]
THEMES = "antimicrobials,safety"


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="1GiB") as local:
        yield local


def _downloads(outputs: Path) -> dict[str, bytes]:
    return {str(p.relative_to(outputs)): p.read_bytes() for p in sorted((outputs / "csv").rglob("*.csv"))}


def _build(project: Path, *extra: str) -> int:
    mapping = pd.read_csv(project / "outputs/data/synthetic/organisations/gp-reg-pat-prac-map.csv")
    code = sorted(mapping["SUB_ICB_LOCATION_CODE"].unique())[0]
    return main(["build", "--orgs", code, "--themes", THEMES, "--no-site", "--force", "--no-levels-above",
                 *extra])


def test_build_on_a_local_cluster_equals_the_local_pool(tmp_path, cluster):
    project = copy_project(tmp_path / "project")
    cwd = os.getcwd()
    os.chdir(project)
    try:
        assert main(["synth", "--scale", "small"]) == 0
        assert _build(project) == 0
        local = _downloads(project / "outputs")
        notebooks = sorted(p.relative_to(project) for p in (project / "outputs" / "notebooks").rglob("*.ipynb"))
        for path in (project / "outputs" / "csv").rglob("*.csv"):
            path.unlink()  # so every download compared below was written again, on the cluster
        assert _build(project, "--scheduler", cluster.scheduler_address) == 0
    finally:
        os.chdir(cwd)
    on_cluster = _downloads(project / "outputs")
    assert len(local) >= 4 and len(notebooks) == 4  # 2 themes, the summary and the England overview
    assert sorted(on_cluster) == sorted(local)
    for name, content in local.items():
        assert on_cluster[name] == content, f"{name} differs between the local pool and the Dask cluster"
    assert sorted(p.relative_to(project) for p in (project / "outputs" / "notebooks").rglob("*.ipynb")) == notebooks


def test_failures_and_the_cache_are_reported_as_locally(tmp_path, cluster):
    good = write_notebook(tmp_path / "good.ipynb", "from pathlib import Path\nPath('ran.txt').write_text(str(value))")
    bad = write_notebook(tmp_path / "bad.ipynb", "raise ValueError('no data for this organisation')")
    out = tmp_path / "outputs"
    jobs = [NotebookJob("sub_icb", "AAA", "good", good, str(out / "nb" / "good.ipynb"), {"value": 3}, cache_key="k1"),
            NotebookJob("sub_icb", "BBB", "bad", bad, str(out / "nb" / "bad.ipynb"), {}, cache_key="k2")]
    lines = []
    results = run_notebooks(jobs, out, cwd=tmp_path, progress=lines.append, scheduler=cluster.scheduler_address)
    assert [r.status for r in results] == ["ok", "failed"]
    assert results[1].error == "ValueError: no data for this organisation"
    assert (tmp_path / "ran.txt").read_text() == "3"  # run in the kernel, in the build's folder
    assert (out / "nb" / "bad.failed.ipynb").exists() and not (out / "nb" / "bad.ipynb").exists()
    assert any("FAILED (ValueError: no data" in line for line in lines)
    again = run_notebooks(jobs, out, cwd=tmp_path, scheduler=cluster.scheduler_address)
    assert again[0].reused and not again[1].reused and again[1].status == "failed"
