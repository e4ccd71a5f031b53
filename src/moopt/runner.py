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


def _run_job(job: NotebookJob, outputs_dir: str, execute) -> NotebookResult:
    """Shared by both executors: atomic output, a kept failed copy, the CSVs written, timing.

    ``execute(tmp)`` runs the notebook into the temporary path ``tmp``; on failure it may leave
    the partly executed notebook there, which is kept as ``<theme>.failed.ipynb``.
    """
    started = time.perf_counter()
    output = Path(job.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp-{os.getpid()}.ipynb")
    failed_copy = output.with_name(output.stem + ".failed.ipynb")
    try:
        execute(tmp)
        os.replace(tmp, output)
        failed_copy.unlink(missing_ok=True)
        status, error = "ok", None
    except BaseException as exc:  # noqa: BLE001 - any failure is reported, never fatal to the run
        status, error = "failed", _short_error(exc)
        if tmp.exists():
            os.replace(tmp, failed_copy)  # keep the evidence, under a name that says so
        output.unlink(missing_ok=True)
    csv_dir = Path(outputs_dir) / "csv" / job.org_level / job.org_code / job.theme
    csv = sorted(str(p.relative_to(outputs_dir)) for p in csv_dir.glob("*.csv")) if csv_dir.exists() else []
    rel = str(output.relative_to(outputs_dir)) if output.is_relative_to(outputs_dir) else str(output)
    return NotebookResult(job.org_level, job.org_code, job.theme, rel, status, error,
                          round(time.perf_counter() - started, 2), csv)


def execute_job(job: NotebookJob, outputs_dir: str, cwd: str | None = None) -> NotebookResult:
    """Execute one notebook with ``papermill.execute_notebook`` and a fresh kernel."""
    import papermill

    def execute(tmp: Path) -> None:
        papermill.execute_notebook(job.template, str(tmp), parameters=job.parameters, progress_bar=False,
                                   kernel_name="python3", cwd=cwd, log_output=False,
                                   extra_arguments=KERNEL_ARGUMENTS)

    return _run_job(job, outputs_dir, execute)


# -- warm kernels ----------------------------------------------------------------------------------
# Starting a kernel and importing the scientific stack costs seconds per notebook. In "warm" mode
# each worker process keeps one kernel for all its notebooks: papermill still parameterises each
# notebook (the same injected-parameters cell as a papermill run) and nbclient executes it, after
# the kernel's namespace is reset so that no notebook sees another's variables.

_WARM_CLIENT = None
# The kernels talk to this process over local TCP; their start-up and shutdown warnings about it
# are noise in a build log (cell errors still arrive as messages and fail the notebook).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
_RESET_SOURCE = "%reset -f\nimport matplotlib.pyplot as _plt\n_plt.close('all')\ndel _plt"


def _warm_client(cwd: str | None):
    global _WARM_CLIENT
    if _WARM_CLIENT is None:
        import nbformat
        from nbclient import NotebookClient

        _WARM_CLIENT = NotebookClient(nbformat.v4.new_notebook(), kernel_name="python3", timeout=1800,
                                      resources={"metadata": {"path": cwd or os.getcwd()}},
                                      extra_arguments=KERNEL_ARGUMENTS)
    return _WARM_CLIENT


def _drop_warm_client() -> None:
    global _WARM_CLIENT
    if _WARM_CLIENT is not None:
        try:
            _WARM_CLIENT._cleanup_kernel()
        except Exception:  # noqa: BLE001 - a dead kernel cannot be shut down cleanly
            pass
    _WARM_CLIENT = None


def execute_job_warm(job: NotebookJob, outputs_dir: str, cwd: str | None = None) -> NotebookResult:
    """Execute one notebook job in this worker's long-lived kernel."""
    import nbformat
    import papermill

    def execute(tmp: Path) -> None:
        # papermill parameterises exactly as in a papermill run, without executing.
        nb = papermill.execute_notebook(job.template, str(tmp), parameters=job.parameters,
                                        prepare_only=True, kernel_name="python3", progress_bar=False)
        try:
            client = _warm_client(cwd)
            client.nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_RESET_SOURCE)])
            client.execute(cleanup_kc=False)
            client.nb = nb
            client.execute(cleanup_kc=False)
        except BaseException as exc:
            if not getattr(exc, "ename", None):  # not a cell error: the kernel itself may be broken
                _drop_warm_client()
            raise
        finally:
            nbformat.write(nb, tmp)  # as far as it ran (with the error, if any)

    return _run_job(job, outputs_dir, execute)


EXECUTORS = {"warm": execute_job_warm, "papermill": execute_job}


def run_notebooks(jobs: list[NotebookJob], outputs_dir: Path, workers: int = 2, cwd: Path | None = None,
                  progress=None, mode: str = "warm") -> list[NotebookResult]:
    """Execute every job, ``workers`` at a time, reporting progress as each finishes.

    ``mode`` is ``"warm"`` (one kernel per worker, reused; the default) or ``"papermill"``
    (``papermill.execute_notebook`` with a fresh kernel per notebook).
    """
    if mode not in EXECUTORS:
        raise ValueError(f"Unknown notebook runner mode {mode!r}: use warm or papermill.")
    execute = EXECUTORS[mode]
    say = progress or (lambda msg: None)
    results: list[NotebookResult] = []
    if not jobs:
        return results
    started = time.perf_counter()
    total = len(jobs)
    out = str(Path(outputs_dir).resolve())
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(execute, job, out, str(cwd) if cwd else None): job for job in jobs}
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
