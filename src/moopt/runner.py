"""Notebook fan-out: run each theme notebook for each organisation with papermill.

Jobs run in parallel worker processes. A failing notebook does not stop the
others: its error is recorded and reported at the end, and the caller turns
any failure into a non-zero exit code. Executed notebooks are written to a
temporary name and renamed when complete, so a crash never leaves a
half-written notebook that looks finished.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from moopt.orgs import check_safe_code

log = logging.getLogger(__name__)


@dataclass
class NotebookJob:
    """One notebook to execute for one organisation."""

    org_level: str
    org_code: str
    theme: str
    template: str  # path of the notebook under notebooks/
    output: str  # path of the executed notebook
    parameters: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_safe_code(self.org_code)


@dataclass
class NotebookResult:
    org_level: str
    org_code: str
    theme: str
    path: str
    status: str  # "ok" or "failed"
    error: str | None
    seconds: float
    csv: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _short_error(exc: BaseException) -> str:
    """The useful line of a papermill error (the exception the cell raised)."""
    name = getattr(exc, "ename", None)
    value = getattr(exc, "evalue", None)
    if name:
        return f"{name}: {value}"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def execute_job(job: NotebookJob, outputs_dir: str, cwd: str | None = None) -> NotebookResult:
    """Execute one notebook job (runs in a worker process)."""
    import papermill

    started = time.perf_counter()
    output = Path(job.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp-{os.getpid()}.ipynb")
    failed_copy = output.with_name(output.stem + ".failed.ipynb")
    csv_dir = Path(outputs_dir) / "csv" / job.org_level / job.org_code / job.theme
    try:
        papermill.execute_notebook(
            job.template, str(tmp), parameters=job.parameters, progress_bar=False,
            kernel_name="python3", cwd=cwd, log_output=False)
        os.replace(tmp, output)
        failed_copy.unlink(missing_ok=True)
        status, error = "ok", None
    except BaseException as exc:  # noqa: BLE001 - any failure is reported, never fatal to the run
        status, error = "failed", _short_error(exc)
        if tmp.exists():
            os.replace(tmp, failed_copy)  # keep the evidence, under a name that says so
        output.unlink(missing_ok=True)
    csv = sorted(str(p.relative_to(outputs_dir)) for p in csv_dir.glob("*.csv")) if csv_dir.exists() else []
    rel = str(output.relative_to(outputs_dir)) if output.is_relative_to(outputs_dir) else str(output)
    return NotebookResult(job.org_level, job.org_code, job.theme, rel, status, error,
                          round(time.perf_counter() - started, 2), csv)


def run_notebooks(jobs: list[NotebookJob], outputs_dir: Path, workers: int = 2, cwd: Path | None = None,
                  progress=None) -> list[NotebookResult]:
    """Execute every job, ``workers`` at a time, reporting progress as each finishes."""
    say = progress or (lambda msg: None)
    results: list[NotebookResult] = []
    if not jobs:
        return results
    started = time.perf_counter()
    total = len(jobs)
    out = str(Path(outputs_dir).resolve())
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(execute_job, job, out, str(cwd) if cwd else None): job for job in jobs}
        for done, future in enumerate(as_completed(futures), 1):
            job = futures[future]
            try:
                result = future.result()
            except BaseException as exc:  # noqa: BLE001 - a dead worker is a failed job
                result = NotebookResult(job.org_level, job.org_code, job.theme, job.output, "failed",
                                        _short_error(exc), 0.0)
            results.append(result)
            elapsed = time.perf_counter() - started
            remaining = elapsed / done * (total - done)
            flag = "ok" if result.status == "ok" else f"FAILED ({result.error})"
            say(f"[{done}/{total}] {result.org_level} {result.org_code} {result.theme}: {flag} "
                f"{result.seconds:.1f}s (about {remaining / 60:.1f} min left)")
    order = {(j.org_level, j.org_code, j.theme): i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order[(r.org_level, r.org_code, r.theme)])
    return results
