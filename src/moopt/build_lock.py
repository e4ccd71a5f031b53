"""One moopt command at a time per outputs folder, and a mark for builds that did not finish.

Two builds writing one outputs folder overwrite each other's notebooks and fight over the
DuckDB store, so every command that writes the folder (``build``, ``ingest``, ``site``,
``synth`` into it) first takes ``<outputs>/.moopt-build.lock``.

The lock is an exclusive ``flock`` on that file, and the file records who holds it (pid,
host, command, start time) for the message the next command prints. The kernel drops a
``flock`` when the last process holding it dies, so a lock left by a killed build is free
at once: the next command takes it over without guessing whether a recorded pid is still
the same process. A holder removes the file on release while still holding it, so a
waiting command that locked the removed file notices (the path no longer names the file it
locked) and starts again; no two commands can both believe they hold the lock.

A build marks the folder unfinished before its notebooks start overwriting the previous
run's and clears the mark after writing the new run manifest. While the mark is there the
notebooks on disk may be a mix of two runs, so ``moopt site`` refuses to publish them.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from moopt.config import ParameterError

LOCK_NAME = ".moopt-build.lock"
UNFINISHED_NAME = ".moopt-build-unfinished"


class OutputsBusyError(ParameterError):
    """Another moopt command is writing the same outputs folder."""


class UnfinishedBuildError(ParameterError):
    """The outputs folder holds the notebooks of a build that did not finish."""


@dataclass
class _Held:
    pid: int  # the process that took the lock: a forked child inherits this table, not the lock
    fd: int
    depth: int


# Locks this process holds, by lock file path: taking one again (a build publishing its
# site) nests instead of deadlocking against itself.
_HELD: dict[str, _Held] = {}


def _holder_text(record: dict) -> str:
    if not record:
        return "a moopt command (details not yet written)"
    parts = [f"moopt {record.get('command', 'command')}", f"pid {record.get('pid', '?')}"]
    if record.get("host"):
        parts.append(f"on {record['host']}")
    if record.get("started"):
        parts.append(f"started {record['started']}")
    return ", ".join(parts)


def _read_record(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}


def read_lock_holder(outputs_dir: Path) -> dict | None:
    """The record in the outputs folder's lock file (pid, host, command, started), or None."""
    path = Path(outputs_dir) / LOCK_NAME
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return None


@contextmanager
def outputs_lock(outputs_dir: Path, command: str, progress: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the outputs folder for one command; raise :class:`OutputsBusyError` if another holds it.

    Parameters
    ----------
    outputs_dir : Path
        The outputs folder (created if missing).
    command : str
        What is running ("build", "site", ...), recorded for the message others get.
    progress : callable, optional
        Told when a lock left by a process that no longer runs is taken over.

    Raises
    ------
    OutputsBusyError
        When another process holds the folder; the message names it and says what to do.
    """
    try:
        import fcntl
    except ImportError:  # no flock on this platform (Windows): run unguarded, as before
        yield
        return
    outputs_dir = Path(outputs_dir)
    outputs_dir.mkdir(parents=True, exist_ok=True)
    path = outputs_dir.resolve() / LOCK_NAME
    key = str(path)
    held = _HELD.get(key)
    if held is not None and held.pid == os.getpid():
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
        return

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            record = _read_record(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputsBusyError(
                    f"The outputs folder {outputs_dir} is in use by {_holder_text(record)} "
                    f"(lock file {path}). Wait for it to finish, or give this command another "
                    "outputs folder (--outputs). Only one moopt command may write an outputs "
                    "folder at a time.") from None
            raise OutputsBusyError(f"Cannot lock the outputs folder {outputs_dir} ({path}): {exc}. "
                                   "moopt needs file locking (flock) there.") from None
        try:
            same_file = os.path.samestat(os.stat(path), os.fstat(fd))
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the holder we waited for removed this file on release: try the new one

    left_behind = _read_record(fd)
    if left_behind and progress is not None:
        progress(f"taking over the outputs lock left by {_holder_text(left_behind)}, which no longer runs")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _HELD[key] = _Held(os.getpid(), fd, 1)
    try:
        yield
    finally:
        del _HELD[key]
        # Removed while still locked, so a command waiting on this file sees it is gone.
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)


def mark_unfinished(outputs_dir: Path) -> None:
    """Record that a build has started replacing the notebooks of the previous run."""
    record = {"pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (Path(outputs_dir) / UNFINISHED_NAME).write_text(json.dumps(record))


def mark_finished(outputs_dir: Path) -> None:
    """The notebooks on disk and the run manifest now describe one complete run."""
    (Path(outputs_dir) / UNFINISHED_NAME).unlink(missing_ok=True)


def check_finished(outputs_dir: Path) -> None:
    """Raise :class:`UnfinishedBuildError` when the last build stopped during its notebooks."""
    marker = Path(outputs_dir) / UNFINISHED_NAME
    if not marker.exists():
        return
    try:
        started = json.loads(marker.read_text()).get("started", "at an unknown time")
    except (OSError, ValueError):
        started = "at an unknown time"
    raise UnfinishedBuildError(
        f"The last build in {outputs_dir} (started {started}) stopped while running its notebooks, "
        f"so {Path(outputs_dir) / 'notebooks'} may hold a mix of two runs and the site was not "
        f"replaced. Run `moopt build` again to publish a complete site (marker: {marker}).")
