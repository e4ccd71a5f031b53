"""The JSON file API: the time and size it adds to a site build, with and without practices.

Usage::

    python benchmarks/bench_file_api.py [--store outputs/store/moopt.duckdb] [--repeat 3]

Writes the files :func:`moopt.site.file_api.write_file_api` writes in a build
into a temporary folder (deleted afterwards), from a built store opened
read-only, twice over:

* ``default``: the levels of a build whose pages stop above practices (every
  stored level but practice: region, ICB, sub-ICB, PCN, England);
* ``with practices``: as a build that includes practice pages.

For each it prints the files, their bytes and the disk space they take (small
files round up to the file system's block), and the seconds of the best of
``--repeat`` runs, split into reading the store and writing. A national store
(``moopt synth --scale national`` then ``moopt build``) gives the figures in
docs/file-api.md; the small synthetic set (``--scale small``) is quick. With no
store it says how to make one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def disk_bytes(folder: Path) -> tuple[int, int, int]:
    """(files, bytes, bytes on disk) of every file under ``folder``."""
    files = size = used = 0
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            files += 1
            size += stat.st_size
            used += stat.st_blocks * 512
    return files, size, used


def run(store: Path, page_levels: set[str], repeat: int) -> dict:
    import duckdb

    from moopt.site import file_api
    from moopt.site.downloads import selection

    best = None
    for _ in range(repeat):
        folder = Path(tempfile.mkdtemp(prefix="bench_file_api_"))
        try:
            started = time.perf_counter()
            con = duckdb.connect(str(store), read_only=True)
            try:  # the store read alone, as write_file_api does it
                chosen = selection(con)
                stored = {r[0] for r in con.execute("SELECT DISTINCT org_level FROM indicator_results").fetchall()}
                levels = file_api.api_levels(stored, chosen.levels, page_levels)
                rows = len(file_api._latest_rows(con, chosen, levels))
            finally:
                con.close()
            read = time.perf_counter() - started
            started = time.perf_counter()
            written = file_api.write_file_api(store, folder, title="bench", moopt_version="bench",
                                              page_levels=page_levels)
            total = time.perf_counter() - started
            files, size, used = disk_bytes(folder / file_api.API_DIR)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        result = {"levels": written.levels, "rows": rows, "files": files, "bytes": size, "disk": used,
                  "read": read, "total": total, "org_files": written.organisation_files,
                  "indicator_files": written.indicator_files}
        if best is None or total < best["total"]:
            best = result
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=Path("outputs/store/moopt.duckdb"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.store.is_file():
        print(f"No store at {args.store}: run `moopt synth --scale small` (or national) and `moopt build` "
              "first, or pass --store.")
        return 0
    print(f"store: {args.store} ({args.store.stat().st_size / 1e9:.2f} GB); {os.cpu_count()} CPUs; "
          f"best of {args.repeat}")
    print(f"{'levels':<16} {'latest rows':>11} {'files':>7} {'org':>6} {'ind':>5} {'MB':>7} {'MB on disk':>10} "
          f"{'read s':>7} {'total s':>8}")
    for name, page_levels in (("default", set()), ("with practices", {"practice"})):
        r = run(args.store, page_levels, args.repeat)
        print(f"{name:<16} {r['rows']:>11,} {r['files']:>7,} {r['org_files']:>6,} {r['indicator_files']:>5,} "
              f"{r['bytes'] / 1e6:>7.1f} {r['disk'] / 1e6:>10.1f} {r['read']:>7.2f} {r['total']:>8.2f}")
        print(f"{'':<16} levels: {', '.join(r['levels'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
