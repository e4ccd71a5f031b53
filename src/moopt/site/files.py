"""File helpers for the site builder: swap a finished folder into place, copy files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fresh_temp_dir(final: Path) -> Path:
    """Return an empty sibling folder ``<final>.tmp-<pid>`` to build into."""
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def swap_into_place(tmp: Path, final: Path) -> None:
    """Replace ``final`` by the finished folder ``tmp``.

    Both renames are within one parent folder, so each is atomic; the old
    folder is moved aside before the new one takes its name and is deleted
    only afterwards. A crash leaves either the old or the new folder at
    ``final`` (and at worst a ``.old-<pid>`` folder to delete), never a
    half-written one.
    """
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def copy_file(src: Path, dst: Path) -> None:
    """Copy one file (a real copy, not a hard link: a later run rewriting the source in place
    must not change a published site)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def link_file(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (a copy where links are not possible, e.g. across file systems).

    Only for files that are never rewritten in place: each build writes new files (the site's
    downloads and file API), so a published site sharing them with the next one stays as it was.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_tree(src: Path, dst: Path) -> int:
    """Copy every file under ``src`` to the same place under ``dst``; return how many."""
    count = 0
    if not src.is_dir():
        return 0
    for path in sorted(src.rglob("*")):
        if path.is_file():
            copy_file(path, dst / path.relative_to(src))
            count += 1
    return count
