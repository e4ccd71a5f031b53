"""Benchmark: the input checksums the run manifest records (moopt.provenance).

Hashes every file of a synthetic data set (generated into a temporary folder, or the
folder given) and prints MB/s, then the time to look the same files up in the checksum
cache, which is what every later build on unchanged files pays. Usage:

    python benchmarks/bench_provenance.py [--scale small|national] [--data DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from moopt.pipeline import make_synthetic
from moopt.provenance import ChecksumCache, sha256_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["small", "national"], default="small")
    parser.add_argument(
        "--data", help="folder of input files to hash (default: a new synthetic set)"
    )
    args = parser.parse_args()
    folder = (
        Path(args.data)
        if args.data
        else Path(tempfile.mkdtemp(prefix="moopt-bench-")) / "synthetic"
    )
    if not args.data:
        make_synthetic(folder, args.scale, 42, "2026-09", 24)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    megabytes = sum(p.stat().st_size for p in files) / 1e6

    started = time.perf_counter()
    for path in files:
        sha256_file(path)
    seconds = time.perf_counter() - started
    print(
        f"sha256: {len(files)} files, {megabytes:,.0f} MB in {seconds:.2f} s = {megabytes / seconds:,.0f} MB/s "
        "(files just written, so mostly read from memory)"
    )

    cache = ChecksumCache(folder.parent / "input_checksums.json")
    for path in files:
        cache.digest(path)
    cache.save()
    started = time.perf_counter()
    again = ChecksumCache(folder.parent / "input_checksums.json")
    for path in files:
        again.digest(path)
    print(f"cache: {len(files)} unchanged files looked up in {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
