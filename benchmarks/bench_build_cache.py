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


PEAK_MEMORY: dict[str, float] = {}


def _tree_rss(root: int) -> int:
    """Resident memory (bytes) of a process and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)
            rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def moopt(project: Path, *args: str) -> tuple[float, str]:
    """Run ``moopt *args`` in ``project``; a build whose notebooks partly failed (exit 1) is timed too.

    The peak memory of the command's whole process tree (build, workers, kernels), sampled
    every half second, is kept in ``PEAK_MEMORY`` under the command line.
    """
    env = {**os.environ, "PYTHONPATH": str(project / "package")}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "moopt.cli", *args], cwd=project, env=env,
                                   stdout=out, stderr=err, text=True)
        peak = 0
        while process.poll() is None:
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(0.5)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read())
    seconds = time.perf_counter() - started
    PEAK_MEMORY[" ".join(args)] = peak / 1e9
    if done.returncode not in ((0, 1) if args[0] == "build" else (0,)):
        sys.exit(f"moopt {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds, done.stdout


def notebook_counts(project: Path) -> tuple[int, int, int]:
    """(run, reused, failed) in the last build's manifest; a failed notebook is run again next time."""
    notebooks = json.loads((project / "outputs" / "run_manifest.json").read_text())["notebooks"]
    reused = sum(1 for nb in notebooks if nb.get("reused"))
    failed = sum(1 for nb in notebooks if nb.get("status") != "ok")
    return len(notebooks) - reused, reused, failed


def site_figures(outputs: Path) -> str:
    """Site size, theme page sizes and notebook times of the last build, as printable lines."""
    site = outputs / "site"
    files = [p for p in site.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    shared = sum(p.stat().st_size for p in (site / "csv" / "shared").rglob("*") if p.is_file()) \
        if (site / "csv" / "shared").is_dir() else 0
    assets = sum(p.stat().st_size for p in (site / "assets").rglob("*") if p.is_file())
    themes = [p for p in (site / "orgs").rglob("*.html") if p.name != "index.html"]
    sizes = sorted(p.stat().st_size for p in themes) or [0]
    notebooks = json.loads((outputs / "run_manifest.json").read_text())["notebooks"]
    seconds = sorted(nb["seconds"] for nb in notebooks if not nb.get("reused") and nb.get("seconds"))
    median = seconds[len(seconds) // 2] if seconds else float("nan")
    return "\n".join([
        f"site: {total / 1e6:.1f} MB in {len(files):,} files (shared chart data {shared / 1e6:.1f} MB, "
        f"scripts and styles {assets / 1e6:.2f} MB)",
        f"organisation pages: {len(themes):,}; HTML median {sizes[len(sizes) // 2] / 1e3:.0f} KB, "
        f"largest {sizes[-1] / 1e3:.0f} KB",
        f"notebook seconds in the first build (warm kernels): median {median:.2f}, "
        f"slowest {seconds[-1] if seconds else float('nan'):.2f}",
    ])


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
        first_build = site_figures(project / "outputs")
        first_peak = PEAK_MEMORY[" ".join(build)]
        seconds, out = moopt(project, *build)
        rows.append(("nothing changed", seconds, *notebook_counts(project), stage_times(out)))
        definition = project / "package" / "moopt" / "indicators" / "definitions" / f"{EDITED}.yml"
        text = definition.read_text()
        definition.write_text(text.replace("description: >\n", "description: >\n  Reworded. ", 1))
        seconds, out = moopt(project, *build)
        rows.append((f"one definition edited ({EDITED})", seconds, *notebook_counts(project), stage_times(out)))

        full = rows[0][1]
        print(first_build)
        print(f"peak memory of the first build's process tree: {first_peak:.2f} GB")
        print(f"\nbuild cache, {args.scale} synthetic set ({sys.executable})")
        print(f"{'build':34} {'seconds':>8} {'ratio':>6} {'run':>5} {'reused':>6} {'failed':>6}  stages")
        for name, seconds, run, reused, failed, stages in rows:
            print(f"{name:34} {seconds:8.1f} {seconds / full:6.3f} {run:5d} {reused:6d} {failed:6d}  {stages}")
    finally:
        if not args.keep:
            shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
