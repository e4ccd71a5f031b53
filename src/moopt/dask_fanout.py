"""Notebook fan-out on a Dask distributed cluster (``moopt build --scheduler ADDRESS``).

The local process pool of :func:`moopt.runner.run_notebooks` stays the default. With a
scheduler address the same jobs go to the cluster's workers instead, and each runs through
the same executor function (:func:`moopt.runner.execute_job_warm`, or the papermill one):
every worker process keeps one warm kernel on one notebook thread, exactly as a local pool
worker does, and the results come back as the same :class:`~moopt.runner.NotebookResult`.
The build process keeps the cache (reuse before, records after) and the failure reporting.

What a cluster must provide:

* the outputs folder and the project folder at the same paths on every worker (a shared
  file system), since notebooks and their CSV downloads are written there;
* the same Python environment as the build (moopt and its notebook libraries);
* preferably one thread per worker (``dask worker --nthreads 1``); a worker with more
  threads still runs one notebook at a time, on its notebook thread.

The build's ``MOOPT_*`` environment variables (the chart mode, for one) are sent with each
job; a worker whose kernel was started under other values starts a new one.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

from moopt import runner
from moopt.runner import NotebookJob, NotebookResult

_KERNEL_ENVIRONMENT: dict[str, str] | None = None  # the MOOPT_* variables this worker's kernel started under
WORKER_LOST = "its Dask worker was lost while running it (killed by the system, e.g. for lack of memory?)"


def kernel_environment() -> dict[str, str]:
    """The build's ``MOOPT_*`` environment variables, which notebooks read."""
    return {name: value for name, value in os.environ.items() if name.startswith("MOOPT_")}


def _with_environment(execute, environment: dict[str, str], job: NotebookJob, outputs_dir: str,
                      cwd: str | None) -> NotebookResult:
    """Run ``execute`` with the build's environment (on the worker's notebook thread)."""
    global _KERNEL_ENVIRONMENT
    if environment != _KERNEL_ENVIRONMENT:
        runner._drop_warm_client()  # a kernel keeps the environment it started with
        for name in [n for n in os.environ if n.startswith("MOOPT_") and n not in environment]:
            del os.environ[name]
        os.environ.update(environment)
        _KERNEL_ENVIRONMENT = dict(environment)
    return execute(job, outputs_dir, cwd)


def run_job_on_worker(execute, job: NotebookJob, outputs_dir: str, cwd: str | None,
                      environment: dict[str, str]) -> NotebookResult:
    """The task a Dask worker runs: one notebook, on the worker's one notebook thread."""
    return runner._run_reported(functools.partial(_with_environment, execute, environment), -1, job,
                                outputs_dir, cwd)


def _stop_worker_kernels() -> None:
    runner._stop_kernels()


def _scheduler_client(scheduler):
    """A Dask client for ``scheduler``: an address (``tcp://host:8786``) or a Client already made."""
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler, False
    return Client(scheduler, set_as_default=False), True


def run_on_dask(scheduler, indices: list[int], jobs: list[NotebookJob], outputs_dir: str, cwd: str | None,
                execute, record: Callable[[int, NotebookResult], None],
                failed: Callable[[int, str], NotebookResult]) -> None:
    """Run ``jobs[i]`` for each ``i`` in ``indices`` on the cluster; ``record`` each result as it arrives.

    A job that raises on its worker, or whose worker is lost (Dask reruns a task whose worker
    died on another, up to ``distributed.scheduler.allowed-failures`` times), is recorded
    through ``failed`` with the reason; the other jobs go on.
    """
    from distributed import as_completed
    from distributed.diagnostics.plugin import WorkerPlugin

    class StopKernels(WorkerPlugin):
        """When a worker closes, its warm kernel goes with it."""

        name = "moopt-stop-kernels"

        def teardown(self, worker) -> None:
            _stop_worker_kernels()

    client, owned = _scheduler_client(scheduler)
    try:
        client.register_plugin(StopKernels(), name=StopKernels.name)
        environment = kernel_environment()
        futures = {}
        for i in indices:
            future = client.submit(run_job_on_worker, execute, jobs[i], outputs_dir, cwd, environment,
                                   key=f"moopt-notebook-{i}-{os.getpid()}-{id(jobs[i])}", pure=False)
            futures[future] = i
        try:
            with client.as_current():  # as_completed looks up the current client
                for future in as_completed(futures):
                    index = futures[future]
                    try:
                        result = future.result()
                    except Exception as exc:  # noqa: BLE001 - reported as the job's failure, never fatal
                        lost = type(exc).__name__ == "KilledWorker"
                        result = failed(index, WORKER_LOST if lost else runner._short_error(exc))
                    record(index, result)
        except BaseException:
            client.cancel(list(futures), force=True)
            raise
    finally:
        if owned:
            client.close()
