"""Atomic file writes: a reader (or a crash) never sees a half-written output.

Everything moopt writes goes to a uniquely named hidden temporary file in the
target's own folder (so the final rename stays on one file system), is flushed
to disk, and is moved into place with :func:`os.replace`. A failed write
removes its temporary file and leaves any previous version untouched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pandas as pd


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is moved to ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO], None], binary: bool = False) -> Path:
    """Call ``write(stream)`` on a temporary file (text, or bytes when ``binary``), then move it to ``path``."""
    with replacing(path) as temporary:
        # "x": never reuse an existing file; newline="": the writer decides line endings.
        with (open(temporary, "xb") if binary else
              open(temporary, "x", encoding="utf-8", newline="")) as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_atomic(path, lambda stream: stream.write(text))


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike[str], **to_csv_options) -> Path:
    """``frame.to_csv`` (without the index, Unix line ends, ISO dates), atomically."""
    options = {"index": False, "lineterminator": "\n", "date_format": "%Y-%m-%d", **to_csv_options}
    return write_atomic(path, lambda stream: frame.to_csv(stream, **options))
