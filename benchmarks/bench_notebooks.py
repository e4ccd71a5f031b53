"""Notebook time: a warm kernel against plain papermill with a fresh kernel per notebook.

Usage::

    python benchmarks/bench_notebooks.py [--keep FOLDER]

Builds the small synthetic set without its site in a temporary project (not timed), then
executes the pages of its second sub-ICB location (summary and every theme) twice, one at
a time:

* ``papermill``: ``papermill.execute_notebook`` with a new kernel for every notebook
  (:func:`moopt.runner.execute_job`);
* ``warm``: one kernel kept for every notebook, reset between them
  (:func:`moopt.runner.execute_job_warm`), as ``moopt build`` runs them. Before the timed
  pages the kernel runs the first organisation's pages, as a build's worker has done by
  then (imports, chart templates and national rows cached); that warm-up is timed apart.

Prints the median, mean and slowest seconds of each, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="build in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()

    project = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="moopt-bench-nb-"))
    try:
        project.mkdir(parents=True, exist_ok=True)
        for name in ("notebooks", "parameters"):
            shutil.copytree(ROOT / name, project / name, dirs_exist_ok=True)
        shutil.copy(ROOT / "_quarto.yml", project / "_quarto.yml")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        print(f"building the small synthetic set in {project} (not timed) ...", flush=True)
        for command in (["synth", "--scale", "small"], ["build", "--no-site"]):
            subprocess.run([sys.executable, "-m", "moopt.cli", *command], cwd=project, env=env, check=True,
                           capture_output=True)

        os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # the kernels import this checkout
        os.environ["MOOPT_CHART_MODE"] = "site"
        os.chdir(project)
        from moopt import runner
        from moopt.config import load_config
        from moopt.pipeline import notebook_jobs, themes_for_run
        from moopt.store import Store

        config = load_config(project / "parameters" / "default.yml", project_dir=project)
        with Store(config.store_path) as store:
            codes = [r[0] for r in store.con.execute(
                "SELECT DISTINCT org_code FROM indicator_results WHERE org_level = ? ORDER BY 1",
                [config.org_level]).fetchall()]
        themes = themes_for_run(config)
        every = [j for j in notebook_jobs(config, [{"code": c} for c in codes[:2]], themes)
                 if j.theme != "overview"]
        warm_up = [j for j in every if j.org_code == codes[0]]
        jobs = [j for j in every if j.org_code == codes[1]]
        scratch = project / "outputs" / "bench"
        for job in every:
            job.output = str(scratch / job.org_code / f"{job.theme}.ipynb")
            job.cache_key = None

        timings: dict[str, list[float]] = {"papermill": [], "warm": []}
        for job in jobs:
            started = time.perf_counter()
            result = runner.execute_job(job, str(project / "outputs"), str(project))
            assert result.status == "ok", result.error
            timings["papermill"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for job in warm_up:
            result = runner.execute_job_warm(job, str(project / "outputs"), str(project))
            assert result.status == "ok", result.error
        first_seconds = time.perf_counter() - started
        for job in jobs:
            started = time.perf_counter()
            result = runner.execute_job_warm(job, str(project / "outputs"), str(project))
            assert result.status == "ok", result.error
            timings["warm"].append(time.perf_counter() - started)
        runner._drop_warm_client()

        print(f"\nnotebook seconds, {len(jobs)} notebooks of the small synthetic set ({sys.executable})")
        print(f"{'executor':10} {'median':>7} {'mean':>7} {'slowest':>8}")
        for name, values in timings.items():
            print(f"{name:10} {statistics.median(values):7.2f} {statistics.mean(values):7.2f} {max(values):8.2f}")
        print(f"warm-up, the first organisation's {len(warm_up)} pages in the new kernel: {first_seconds:.2f} s")
        ratio = statistics.median(timings["papermill"]) / statistics.median(timings["warm"])
        print(f"median papermill / median warm: {ratio:.1f}x")
    finally:
        if not args.keep:
            shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
