"""The build cache: a full build, a rebuild with nothing changed, and a rebuild after one definition edit.

Usage::

    python benchmarks/bench_build_cache.py [--scale small|national] [--orgs A,B] [--themes t1,t2]
                                           [--workers N] [--keep FOLDER]

In a temporary project folder (the repository's notebooks and parameters, and a copy of
the moopt package, so that a definition can be edited without touching the repository)
it generates the synthetic set of ``--scale`` (default small) and times three
``moopt build`` commands, each in a fresh process whose kernels import the copy:

* ``full build``: every stage from an empty outputs folder (ingest, indicators, every
  notebook, the site);
* ``nothing changed``: the same command again; every notebook should be reused;
* ``one definition edited``: the description of one indicator (SAF02) reworded; the
  indicator stage runs again and only the pages that show SAF02 (its theme's pages,
  the summaries and the England overview) should re-run.

Prints each time, the notebooks run, reused and failed (a failed notebook is never reused,
so it runs in every build), and the ratios to the full build. The synthetic data
generation is not timed. The national scale takes hours for the full build.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "moopt"
EDITED = "SAF02"


def moopt(project: Path, *args: str) -> tuple[float, str]:
    """Run ``moopt *args`` in ``project``; a build whose notebooks partly failed (exit 1) is timed too."""
    env = {**os.environ, "PYTHONPATH": str(project / "package")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "moopt.cli", *args], cwd=project, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in ((0, 1) if args[0] == "build" else (0,)):
        sys.exit(f"moopt {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds, done.stdout


def notebook_counts(project: Path) -> tuple[int, int, int]:
    """(run, reused, failed) in the last build's manifest; a failed notebook is run again next time."""
    notebooks = json.loads((project / "outputs" / "run_manifest.json").read_text())["notebooks"]
    reused = sum(1 for nb in notebooks if nb.get("reused"))
    failed = sum(1 for nb in notebooks if nb.get("status") != "ok")
    return len(notebooks) - reused, reused, failed


def stage_times(stdout: str) -> str:
    found = re.findall(r"finished: (.*)", stdout)
    return found[-1] if found else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["small", "national"], default="small")
    parser.add_argument("--orgs", help="comma-separated organisation codes (default: all)")
    parser.add_argument("--themes", help="comma-separated theme ids (default: all built themes)")
    parser.add_argument("--workers", type=int, help="notebook workers (default: the run file's)")
    parser.add_argument("--keep", help="build in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()

    project = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="moopt-bench-cache-"))
    try:
        project.mkdir(parents=True, exist_ok=True)
        for name in ("notebooks", "parameters"):
            shutil.copytree(ROOT / name, project / name, dirs_exist_ok=True)
        shutil.copy(ROOT / "_quarto.yml", project / "_quarto.yml")
        shutil.copytree(PACKAGE, project / "package" / "moopt", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.rmtree(project / "outputs", ignore_errors=True)
        print(f"generating the synthetic {args.scale} set in {project} (not timed) ...", flush=True)
        moopt(project, "synth", "--scale", args.scale)

        build = ["build"]
        for flag, value in (("--orgs", args.orgs), ("--themes", args.themes)):
            if value:
                build += [flag, value]
        if args.workers:
            build += ["--workers", str(args.workers)]

        rows = []
        seconds, out = moopt(project, *build)
        rows.append(("full build", seconds, *notebook_counts(project), stage_times(out)))
        seconds, out = moopt(project, *build)
        rows.append(("nothing changed", seconds, *notebook_counts(project), stage_times(out)))
        definition = project / "package" / "moopt" / "indicators" / "definitions" / f"{EDITED}.yml"
        text = definition.read_text()
        definition.write_text(text.replace("description: >\n", "description: >\n  Reworded. ", 1))
        seconds, out = moopt(project, *build)
        rows.append((f"one definition edited ({EDITED})", seconds, *notebook_counts(project), stage_times(out)))

        full = rows[0][1]
        print(f"\nbuild cache, {args.scale} synthetic set ({sys.executable})")
        print(f"{'build':34} {'seconds':>8} {'ratio':>6} {'run':>5} {'reused':>6} {'failed':>6}  stages")
        for name, seconds, run, reused, failed, stages in rows:
            print(f"{name:34} {seconds:8.1f} {seconds / full:6.3f} {run:5d} {reused:6d} {failed:6d}  {stages}")
    finally:
        if not args.keep:
            shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
