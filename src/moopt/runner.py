"""Notebook fan-out: run each theme notebook for each organisation with papermill.

Jobs run in parallel worker processes. A failing notebook does not stop the
others: its error is recorded and reported at the end, and the caller turns
any failure into a non-zero exit code. Executed notebooks are written to a
temporary name and renamed when complete, so a crash never leaves a
half-written notebook that looks finished.

Workers never outlive the build: each dies (with its kernels) within about a
second of the build's death, however the build died. A worker killed under a
notebook (by the out-of-memory killer, say) is replaced, and that notebook is
retried once on its own; the other notebooks carry on.

A job may carry a cache key (see ``moopt.pipeline.assign_cache_keys``). A notebook that ran
successfully under a key is reused, not run, while its executed notebook and CSV downloads
are still there and the key is unchanged; the key is kept in a small record beside the
notebook (``<theme>.cache.json``), removed before the notebook is re-run and written only
after it succeeded, so a failed or interrupted notebook is never reused.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import multiprocessing.util
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

from moopt.atomic import write_text_atomic
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
    # Everything the page depends on, hashed; None: always run (see assign_cache_keys in moopt.pipeline).
    cache_key: str | None = None

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
    reused: bool = False  # True: the notebook of an earlier build, unchanged inputs, not run again

    def to_dict(self) -> dict:
        return asdict(self)


# -- the build cache ---------------------------------------------------------------------------------

CACHE_RECORD_SUFFIX = ".cache.json"


def cache_record_path(job: NotebookJob) -> Path:
    """The record of the key a job's executed notebook was made under: ``<theme>.cache.json`` beside it."""
    output = Path(job.output)
    return output.with_name(output.stem + CACHE_RECORD_SUFFIX)


def _notebook_stamp(path: Path) -> list[int]:
    """Size and modification time: a notebook replaced since its record was written is not reused."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def write_cache_record(job: NotebookJob, result: NotebookResult) -> None:
    """Record that ``job`` ran successfully under its key (only then: a failure is never reused)."""
    if job.cache_key is None or result.status != "ok":
        return
    output = Path(job.output)
    if not output.is_file():
        return
    record = {"key": job.cache_key, "status": result.status, "notebook": _notebook_stamp(output),
              "csv": list(result.csv), "seconds": result.seconds}
    write_text_atomic(cache_record_path(job), json.dumps(record))


def reusable_result(job: NotebookJob, outputs_dir: Path, same_key: bool = True) -> NotebookResult | None:
    """The result of ``job``'s earlier run when it can be reused as it is, else None.

    Reusable: the job has a key; its record says the notebook ran ok under that same key;
    the executed notebook is the one recorded (size and modification time); and every CSV
    download listed exists. With ``same_key`` False the key may differ: the last good
    notebook is kept although its inputs changed (``moopt build --indicator`` keeps the
    pages that do not show the indicator); its record keeps the old key, so the next full
    build re-runs it.
    """
    if job.cache_key is None and same_key:
        return None
    try:
        record = json.loads(cache_record_path(job).read_text())
        output = Path(job.output)
        if (not isinstance(record, dict) or (same_key and record.get("key") != job.cache_key)
                or record.get("status") != "ok" or record.get("notebook") != _notebook_stamp(output)):
            return None
        csv = [str(c) for c in record.get("csv") or []]
    except (OSError, ValueError, TypeError):  # no record, no notebook, or an unreadable record
        return None
    out = Path(outputs_dir)
    if not all((out / c).is_file() for c in csv):
        return None
    rel = str(output.relative_to(out)) if output.is_relative_to(out) else str(output)
    return NotebookResult(job.org_level, job.org_code, job.theme, rel, "ok", None, 0.0, csv, reused=True)


def reuse_line(reused: int, total: int) -> str:
    """The progress and summary line about the build cache."""
    return f"{reused} of {total} notebooks reused (unchanged)"


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
_RESET_SOURCE = "%reset -f"


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


def _reset_warm_kernel(cwd: str | None):
    """This worker's kernel, started if needed and reset, ready for the next notebook.

    A kernel that fails to start or dies during the reset (seen on a heavily loaded machine:
    "Kernel died before replying to kernel_info") is replaced once: nothing of the notebook
    has run yet, so trying again with a new kernel cannot run any of its cells twice.
    """
    import nbformat

    for attempt in (1, 2):
        try:
            client = _warm_client(cwd)
            client.nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_RESET_SOURCE)])
            client.execute(cleanup_kc=False)
            return client
        except Exception as exc:  # noqa: BLE001 - any start-up failure; a cell error is not retried
            _drop_warm_client()
            if getattr(exc, "ename", None) or attempt == 2:
                raise
            log.warning("the notebook kernel failed to start or reset (%s); starting a new one", exc)
    raise AssertionError("unreachable")


def execute_job_warm(job: NotebookJob, outputs_dir: str, cwd: str | None = None) -> NotebookResult:
    """Execute one notebook job in this worker's long-lived kernel."""
    import nbformat
    import papermill

    def execute(tmp: Path) -> None:
        # papermill parameterises exactly as in a papermill run, without executing.
        nb = papermill.execute_notebook(job.template, str(tmp), parameters=job.parameters,
                                        prepare_only=True, kernel_name="python3", progress_bar=False)
        try:
            client = _reset_warm_kernel(cwd)
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


# -- worker processes that die with the build --------------------------------------------------------
# A worker must never outlive the build that started it: a killed build whose workers go on
# writing notebooks leaves a mix of two runs. Each worker asks Linux to send it SIGTERM when
# its parent dies (prctl PR_SET_PDEATHSIG), and a watchdog thread checks the parent as well
# (other systems, and a parent that died before the request took effect). On SIGTERM a worker
# stops its kernels (each runs in its own session, so its process group is the kernel and
# whatever it started) before exiting.

_PR_SET_PDEATHSIG = 1
_PARENT_POLL_SECONDS = 0.5
_STARTED = None  # the queue a worker reports each job's start on (see run_notebooks)
_NOTEBOOK_THREAD = None  # the worker's one thread that runs notebooks (see _run_reported)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _child_pids() -> list[int]:
    """Processes whose parent is this one (Linux /proc; elsewhere none are found)."""
    me = os.getpid()
    children = []
    for entry in Path("/proc").glob("[0-9]*/stat") if Path("/proc/self").exists() else []:
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(me):
            children.append(int(entry.parent.name))
    return children


def _stop_kernels() -> None:
    """Kill this worker's kernels and whatever they started.

    SIGKILL rather than a polite shutdown: a kernel being stopped has no result worth
    saving (its notebook is discarded), and one killed politely in the middle of starting
    or of a message prints tracebacks into the build's log.
    """
    children = _child_pids()
    for pid in children:
        for kill in (os.killpg, os.kill):  # a kernel leads its own process group
            try:
                kill(pid, signal.SIGKILL)
                break
            except (ProcessLookupError, PermissionError):
                continue
    for pid in children:  # reap them, so they do not linger as zombies
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    if _WARM_CLIENT is not None:
        try:
            _WARM_CLIENT.km.cleanup_connection_file()
        except Exception:  # noqa: BLE001 - only a temporary file would be left
            pass


def _stop_worker(signum=None, frame=None) -> None:
    _stop_kernels()
    os._exit(128 + (signum or signal.SIGTERM))


def _watch_parent(parent: int, build: int) -> None:
    while True:
        time.sleep(_PARENT_POLL_SECONDS)
        if os.getppid() != parent or not _alive(build):
            _stop_worker()


def _ask_for_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the watchdog alone stops the worker
        pass


def _worker_start(build_pid: int, started) -> None:
    """Initializer of every worker: die with the build; report job starts on ``started``."""
    global _STARTED
    _STARTED = started
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the build, which stops the workers
    signal.signal(signal.SIGTERM, _stop_worker)
    _ask_for_parent_death_signal()
    # Worker processes end with os._exit, which skips atexit: stop the kernels on the way out.
    multiprocessing.util.Finalize(None, _stop_kernels, exitpriority=10)
    parent = os.getppid()  # the build itself, or the fork server it started
    if not _alive(build_pid):  # the build died before the death signal was asked for
        _stop_worker()
    threading.Thread(target=_watch_parent, args=(parent, build_pid), daemon=True,
                     name="moopt-watch-build").start()


def _run_reported(execute, index: int, job: NotebookJob, outputs_dir: str, cwd: str | None) -> NotebookResult:
    """Tell the build that job ``index`` started, then run it on this worker's notebook thread.

    nbclient, run in a process's main thread, installs SIGTERM and SIGINT handlers of its own
    (an orderly kernel shutdown that interrupts the kernel and keeps the worker alive) and
    resets them to the defaults afterwards, which would undo the worker's handler. From
    another thread it cannot, so the worker's main thread only waits, and a SIGTERM there
    stops the kernels and the worker at once. One thread is kept for all of a worker's
    notebooks because a warm kernel's client belongs to the event loop of its thread.
    """
    global _NOTEBOOK_THREAD
    if _STARTED is not None:
        _STARTED.put(index)
    if _NOTEBOOK_THREAD is None:
        _NOTEBOOK_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moopt-notebook")
    return _NOTEBOOK_THREAD.submit(execute, job, outputs_dir, cwd).result()


def _stop_pool(pool: ProcessPoolExecutor, grace: float = 10.0) -> None:
    """Stop every worker now (each stops its kernels on SIGTERM); kill any still running after ``grace``."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)


def _drain(queue, into: set[int]) -> None:
    while not queue.empty():
        into.add(queue.get())


WORKER_DIED = ("its worker process died twice while running it (killed by the system, e.g. for lack "
               "of memory?)")


def run_notebooks(jobs: list[NotebookJob], outputs_dir: Path, workers: int = 2, cwd: Path | None = None,
                  progress=None, mode: str = "warm", execute=None, force: bool = False,
                  scheduler=None) -> list[NotebookResult]:
    """Execute every job whose notebook cannot be reused, ``workers`` at a time, reporting progress.

    Parameters
    ----------
    jobs : list of NotebookJob
        The notebooks to run.
    outputs_dir : Path
        The outputs folder (CSV downloads are looked for under ``csv/`` there).
    workers : int
        Worker processes; never more are started than there are jobs.
    cwd : Path, optional
        Working folder of the kernels.
    progress : callable, optional
        Called with one line per finished notebook.
    mode : {"warm", "papermill"}
        ``"warm"``: one kernel per worker, reused (the default); ``"papermill"``:
        ``papermill.execute_notebook`` with a fresh kernel per notebook.
    execute : callable, optional
        Replaces the executor chosen by ``mode`` (a module-level function taking the job,
        the outputs folder and the working folder, returning a :class:`NotebookResult`).
    force : bool
        Run every job, even one whose notebook could be reused.
    scheduler : str or distributed.Client, optional
        A Dask scheduler address: the jobs run on that cluster's workers instead of a local
        pool (see :mod:`moopt.dask_fanout`), with the same executor, cache and reporting.

    Returns
    -------
    list of NotebookResult
        One per job, in the order of ``jobs``; a failed notebook is a result, not an error;
        a reused notebook's result has ``reused`` True.

    Notes
    -----
    Workers die with the build (see ``_worker_start``). When a worker process dies (the
    pool is then broken), new workers take over: the notebooks that were running are
    retried once each, one at a time, and a notebook whose worker dies again is reported
    failed, so a notebook that always exhausts memory cannot stop the others. An
    interruption (Ctrl-C, or SIGTERM turned into one by the command line) stops every
    worker and kernel before it propagates.

    A job with a ``cache_key`` is reused, not run, when :func:`reusable_result` finds its
    earlier run still valid (never with ``force``). Before a job runs its cache record is
    removed; it is written again only when the job succeeded.
    """
    if execute is None:
        if mode not in EXECUTORS:
            raise ValueError(f"Unknown notebook runner mode {mode!r}: use warm or papermill.")
        execute = EXECUTORS[mode]
    say = progress or (lambda msg: None)
    if not jobs:
        return []
    out = str(Path(outputs_dir).resolve())
    results: dict[int, NotebookResult] = {}
    for index, job in enumerate(jobs):
        reused = None if force else reusable_result(job, Path(out))
        if reused is not None:
            results[index] = reused
    if force or any(job.cache_key is not None for job in jobs):  # no line for callers without the cache
        say(reuse_line(len(results), len(jobs)) + (" (forced: every notebook is run)" if force else ""))
    for index, job in enumerate(jobs):
        if index not in results:
            cache_record_path(job).unlink(missing_ok=True)  # written again only if it succeeds
    started_at = time.perf_counter()
    n_reused = len(results)
    total = len(jobs) - n_reused
    cwd_text = str(cwd) if cwd else None
    context = multiprocessing.get_context()

    def record(index: int, result: NotebookResult) -> None:
        results[index] = result
        write_cache_record(jobs[index], result)
        done = len(results) - n_reused
        remaining = (time.perf_counter() - started_at) / done * (total - done)
        flag = "ok" if result.status == "ok" else f"FAILED ({result.error})"
        say(f"[{done}/{total}] {result.org_level} {result.org_code} {result.theme}: {flag} "
            f"{result.seconds:.1f}s (about {remaining / 60:.1f} min left)")

    def failed(index: int, error: str) -> NotebookResult:
        job = jobs[index]
        return NotebookResult(job.org_level, job.org_code, job.theme, job.output, "failed", error, 0.0)

    def run_batch(batch: list[int], width: int) -> set[int] | None:
        """Run ``batch`` on ``width`` new workers; None when all ran, else the jobs in flight when one died."""
        started_queue = context.SimpleQueue()
        started: set[int] = set()
        pool = ProcessPoolExecutor(max_workers=max(1, min(width, len(batch))), mp_context=context,
                                   initializer=_worker_start, initargs=(os.getpid(), started_queue))
        broken = False
        try:
            futures = {pool.submit(_run_reported, execute, i, jobs[i], out, cwd_text): i for i in batch}
            for future in as_completed(futures):
                index = futures[future]
                _drain(started_queue, started)  # often, so the workers never fill the pipe
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                except Exception as exc:  # noqa: BLE001 - a job that cannot even be run is a failed job
                    result = failed(index, _short_error(exc))
                record(index, result)
            _drain(started_queue, started)
        except BaseException:
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True)
        return started - results.keys() if broken else None

    if scheduler is not None:
        from moopt.dask_fanout import run_on_dask

        run_on_dask(scheduler, [i for i in range(len(jobs)) if i not in results], jobs, out, cwd_text,
                    execute, record, failed)
        return [results[i] for i in range(len(jobs))]

    # When a worker dies, the pool stops every worker, so the notebooks then in flight are only
    # suspects. Suspects are rerun one at a time, where a death names its notebook exactly: a
    # notebook that kills its worker there too has failed twice and is given up.
    pending = [i for i in range(len(jobs)) if i not in results]
    suspects: list[int] = []
    while pending or suspects:
        solo = bool(suspects)
        batch = suspects if solo else pending
        in_flight = run_batch(batch, 1 if solo else workers)
        if in_flight is None:
            suspects, pending = ([], pending) if solo else (suspects, [])
            continue
        if not in_flight:  # no job was running: the workers cannot start at all
            for i in batch:
                if i not in results:
                    record(i, failed(i, "the worker processes died before running it"))
            suspects = [i for i in suspects if i not in results]
            pending = [i for i in pending if i not in results]
            continue
        names = ", ".join(f"{jobs[i].org_code} {jobs[i].theme}" for i in sorted(in_flight))
        if solo:
            for i in in_flight:
                record(i, failed(i, WORKER_DIED))
            suspects = [i for i in suspects if i not in results]
        else:
            suspects = sorted(in_flight)
            pending = [i for i in pending if i not in results and i not in in_flight]
            say(f"a worker process died while running {names}; starting new workers: each of these "
                "is retried once, on its own, and the other notebooks continue")
    return [results[i] for i in range(len(jobs))]


def remove_interrupted_notebooks(notebooks_dir: Path) -> int:
    """Delete the temporary notebooks (``.<theme>.tmp-<pid>.ipynb``) of killed runs; return how many.

    Half-written cache records (``.<theme>.cache.json.<id>.tmp``) go too, uncounted.
    Call it only while holding the outputs lock, when no worker of another build is writing.
    """
    removed = 0
    folder = Path(notebooks_dir)
    for path in folder.rglob(".*.tmp-*.ipynb") if folder.is_dir() else []:
        path.unlink(missing_ok=True)
        removed += 1
    for path in folder.rglob(f".*{CACHE_RECORD_SUFFIX}.*.tmp") if folder.is_dir() else []:
        path.unlink(missing_ok=True)
    return removed
