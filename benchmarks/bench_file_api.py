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
files round up to the file system's block), and for the best of ``--repeat``
runs the wall-clock seconds of reading the store (a build does it while its
pages render) and of writing the files, the CPU seconds of both (DuckDB's
threads included), and the seconds a rebuild with nothing changed takes to
link the previous files instead. A national store
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
    from moopt.site import file_api

    best = None
    for _ in range(repeat):
        folder = Path(tempfile.mkdtemp(prefix="bench_file_api_"))
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            data = file_api.read_api_data(store, page_levels)  # what a build reads while pages render
            read = time.perf_counter() - wall
            started = time.perf_counter()
            written = file_api.write_file_api(store, folder / "site", title="bench", moopt_version="bench",
                                              page_levels=page_levels, data=data)
            write = time.perf_counter() - started
            cpu = time.process_time() - cpu
            files, size, used = disk_bytes(folder / "site" / file_api.API_DIR)
            started = time.perf_counter()  # a rebuild with nothing changed: the files are linked
            again = file_api.write_file_api(store, folder / "again", title="bench", moopt_version="bench",
                                            page_levels=page_levels, previous_site=folder / "site")
            reuse = time.perf_counter() - started
            assert again.reused, "the unchanged files were not reused"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        result = {"levels": written.levels, "rows": len(data.rows), "files": files, "bytes": size, "disk": used,
                  "read": read, "write": write, "cpu": cpu, "reuse": reuse,
                  "org_files": written.organisation_files, "indicator_files": written.indicator_files}
        if best is None or read + write < best["read"] + best["write"]:
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
          f"{'read s':>7} {'write s':>8} {'CPU s':>6} {'reuse s':>8}")
    for name, page_levels in (("default", set()), ("with practices", {"practice"})):
        r = run(args.store, page_levels, args.repeat)
        print(f"{name:<16} {r['rows']:>11,} {r['files']:>7,} {r['org_files']:>6,} {r['indicator_files']:>5,} "
              f"{r['bytes'] / 1e6:>7.1f} {r['disk'] / 1e6:>10.1f} {r['read']:>7.2f} {r['write']:>8.2f} "
              f"{r['cpu']:>6.2f} {r['reuse']:>8.2f}")
        print(f"{'':<16} levels: {', '.join(r['levels'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
