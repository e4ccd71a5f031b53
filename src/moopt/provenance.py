"""What a run was made from, for the run manifest: enough to reproduce it or tell why it differs.

:func:`run_provenance` gathers, for ``outputs/run_manifest.json``:

``resolved_parameters``
    the run's parameters after defaults, the run file and command-line overrides,
    with every path made absolute (:func:`resolved_parameters`);
``source``
    moopt's version and the git commit of the source tree it ran from, with a
    ``dirty`` flag for uncommitted changes (:func:`source_commit`);
``environment``
    Python and the versions of the libraries that compute results;
``inputs``
    every file the run read, data and packaged lookups alike, with size and
    SHA-256 (:func:`input_files`);
``row_counts``
    rows read, accepted, rejected and set aside, per source table
    (:func:`row_counts`);
``stages`` and ``failures``
    how long each stage took and what failed.

The field-by-field description is ``docs/manifest.md``.

A national run reads over 100 GB of prescribing files, so checksums are kept in
``input_checksums.json`` beside the store and reused while a file's size and
modification time are unchanged (the same test the ingest uses to skip a file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

from moopt import __version__
from moopt.atomic import write_text_atomic

CHECKSUM_CACHE_NAME = "input_checksums.json"
# Read in blocks of this size: large enough to hash at disk speed, small enough for any memory.
HASH_BLOCK_BYTES = 4 * 1024 * 1024
# Libraries whose version can change a computed value or a page.
RECORDED_LIBRARIES = (
    "duckdb",
    "ibis-framework",
    "pandas",
    "numpy",
    "scipy",
    "statsmodels",
    "pyarrow",
    "matplotlib",
    "papermill",
    "nbclient",
)
# Uncommitted paths listed in the manifest (the count is always given).
MAX_CHANGED_PATHS = 50
GIT_TIMEOUT_SECONDS = 30
PACKAGE_DIR = Path(__file__).resolve().parent


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as 64 hex digits.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    str
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


class ChecksumCache:
    """SHA-256 digests of files, reused while a file's size and modification time are unchanged.

    Parameters
    ----------
    path : Path or None
        The JSON file the digests are kept in; None keeps them in memory only.

    Notes
    -----
    Entries are keyed by the file's resolved path. A file rewritten with the same size
    within the file system's timestamp resolution would keep a stale digest; the ingest
    makes the same assumption when it skips an unchanged file.
    """

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict] = {}
        self.changed = False
        if self.path is not None and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = {}  # a damaged cache only costs the time to hash again
            if isinstance(loaded, dict):
                self.entries = {k: v for k, v in loaded.items() if isinstance(v, dict)}

    def digest(self, path: Path) -> tuple[int, str]:
        """Size and SHA-256 of ``path``, from the cache when the file is unchanged."""
        resolved = Path(path).resolve()
        stat = resolved.stat()
        key = str(resolved)
        held = self.entries.get(key)
        if held and held.get("size") == stat.st_size and held.get("mtime_ns") == stat.st_mtime_ns:
            return stat.st_size, held["sha256"]
        sha = sha256_file(resolved)
        self.entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
        self.changed = True
        return stat.st_size, sha

    def save(self) -> None:
        """Write the cache (atomically) when a digest was added or renewed."""
        if self.path is not None and self.changed:
            write_text_atomic(self.path, json.dumps(self.entries, indent=1, sort_keys=True))
            self.changed = False


def file_record(path: str | Path, role: str, cache: ChecksumCache | None = None) -> dict:
    """One input file for the manifest: role, absolute path, size in bytes and SHA-256.

    Parameters
    ----------
    path : str or Path
        The file.
    role : str
        What the run used it for, e.g. ``prescribing`` or ``lookup``.
    cache : ChecksumCache, optional
        Digests to reuse (and add to).

    Returns
    -------
    dict
        ``role``, ``path``, ``size`` and ``sha256``; a file that no longer exists has
        ``size`` and ``sha256`` None and an ``error`` saying so.
    """
    resolved = Path(path).resolve()
    try:
        size, sha = (cache or ChecksumCache(None)).digest(resolved)
    except OSError as exc:
        return {
            "role": role,
            "path": str(resolved),
            "size": None,
            "sha256": None,
            "error": f"could not be read after the run: {exc.strerror or exc}",
        }
    return {"role": role, "path": str(resolved), "size": size, "sha256": sha}


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_SECONDS,
        check=False,
    )


def source_commit(folder: str | Path = PACKAGE_DIR) -> dict:
    """The git commit of the checkout holding ``folder``, and whether it has uncommitted changes.

    Parameters
    ----------
    folder : str or Path
        A folder inside the checkout; default moopt's own package folder.

    Returns
    -------
    dict
        ``folder``, ``repository`` (the checkout's top folder), ``commit`` (40 hex digits),
        ``dirty`` (True when tracked files differ from the commit or untracked files that
        are not ignored exist), ``changed_paths`` (how many) and ``changed`` (the first
        paths, as ``git status --porcelain`` shows them). When ``folder`` is not in a git
        checkout, or git is not installed, ``commit``, ``dirty`` and ``repository`` are
        None and ``reason`` says why.
    """
    folder = Path(folder).resolve()
    record: dict = {"folder": str(folder), "repository": None, "commit": None, "dirty": None}
    try:
        top = _git(folder, "rev-parse", "--show-toplevel")
    except FileNotFoundError:
        return {**record, "reason": "git is not installed, so the source commit is unknown"}
    except subprocess.TimeoutExpired:
        return {**record, "reason": f"git did not answer within {GIT_TIMEOUT_SECONDS} s"}
    if top.returncode != 0:
        return {
            **record,
            "reason": f"{folder} is not in a git checkout (an installed package, or a copy)",
        }
    head = _git(folder, "rev-parse", "HEAD")
    if head.returncode != 0:
        return {
            **record,
            "repository": top.stdout.strip(),
            "reason": "the git checkout has no commit yet: " + head.stderr.strip(),
        }
    status = _git(folder, "status", "--porcelain")
    if status.returncode != 0:
        return {
            **record,
            "repository": top.stdout.strip(),
            "commit": head.stdout.strip(),
            "reason": "git status failed, so whether the tree is dirty is unknown: "
            + status.stderr.strip(),
        }
    changed = [line for line in status.stdout.splitlines() if line.strip()]
    return {
        **record,
        "repository": top.stdout.strip(),
        "commit": head.stdout.strip(),
        "dirty": bool(changed),
        "changed_paths": len(changed),
        "changed": changed[:MAX_CHANGED_PATHS],
    }


def resolved_parameters(config) -> dict:
    """The run's parameters as moopt resolved them, JSON-ready.

    Parameters
    ----------
    config : moopt.config.RunConfig
        The validated run.

    Returns
    -------
    dict
        Every field of the run configuration (paths absolute, lists of files expanded),
        plus ``params_file`` as an absolute path (None for the built-in defaults). The
        merged parameters as written (``config.raw``) are the manifest's ``parameters``.
    """
    fields = {
        f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "raw"
    }
    if fields.get("params_file") is not None:
        fields["params_file"] = Path(fields["params_file"]).resolve()
    return json.loads(json.dumps(fields, default=str))


def library_versions(names: tuple[str, ...] = RECORDED_LIBRARIES) -> dict[str, str | None]:
    """Installed version of each library (None when it is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def package_data_files(indicators=None) -> list[tuple[str, Path]]:
    """The packaged files a run reads besides its data: definitions, themes, lookups, weights.

    Parameters
    ----------
    indicators : list of Indicator, optional
        Default: every definition (:func:`moopt.indicators.load_indicators`).

    Returns
    -------
    list of (role, Path)
        ``definition`` for each indicator's YAML file, ``themes``, ``lookups`` for the
        lookup list and ``lookup`` for each lookup file it names (all are loaded and
        validated when the definitions are), ``star_pu_weights``.
    """
    from moopt.indicators.definitions import DEFINITIONS_DIR, THEMES_FILE, load_indicators
    from moopt.indicators.denominators import WEIGHTS_FILE
    from moopt.indicators.lookups import MANIFEST, load_lookups

    indicators = load_indicators() if indicators is None else indicators
    files = [
        ("definition", DEFINITIONS_DIR / f"{i.id}.yml")
        for i in sorted(indicators, key=lambda i: i.id)
    ]
    files = [(role, path) for role, path in files if path.is_file()]
    files.append(("themes", THEMES_FILE))
    files.append(("lookups", MANIFEST))
    files += [("lookup", lookup.path) for _, lookup in sorted(load_lookups().items())]
    files.append(("star_pu_weights", WEIGHTS_FILE))
    return files


def data_files(files) -> list[tuple[str, Path]]:
    """The run's data files with their roles, in the order they are ingested.

    Parameters
    ----------
    files : moopt.pipeline.DataFiles
        What :func:`moopt.pipeline.ensure_data` returned.

    Returns
    -------
    list of (role, Path)
        Roles: ``organisations`` (or ``organisations:<kind>`` for ODS files),
        ``practice_attributes``, ``list_sizes``, ``prescribing``, ``reference``,
        ``supplied``, and ``synthetic_manifest`` (seed and scale of a synthetic set).
    """
    found: list[tuple[str, Path]] = []
    orgs = files.organisations
    if isinstance(orgs, dict):
        found += [
            (f"organisations:{kind}", Path(path)) for kind, path in sorted(orgs.items()) if path
        ]
    elif orgs:
        found.append(("organisations", Path(orgs)))
    if files.practice_attributes:
        found.append(("practice_attributes", Path(files.practice_attributes)))
    for role, paths in (
        ("list_sizes", files.list_sizes),
        ("prescribing", files.prescribing),
        ("reference", files.reference),
        ("supplied", files.supplied),
    ):
        found += [(role, Path(p)) for p in paths]
    if files.synthetic:
        manifest = Path(orgs).parents[1] / "synthetic_manifest.json"
        if manifest.is_file():
            found.append(("synthetic_manifest", manifest))
    return found


def input_files(config, files, indicators=None, cache: ChecksumCache | None = None) -> list[dict]:
    """Every file the run read, with role, absolute path, size and SHA-256.

    Parameters
    ----------
    config : moopt.config.RunConfig
        The run (its parameter file is an input too).
    files : moopt.pipeline.DataFiles
        The data files.
    indicators : list of Indicator, optional
        The definitions the run used; default every one.
    cache : ChecksumCache, optional
        Digests to reuse.

    Returns
    -------
    list of dict
        See :func:`file_record`; the parameter file first (role ``parameters``), then the
        data files (:func:`data_files`), then the packaged files (:func:`package_data_files`).
    """
    listed: list[tuple[str, Path]] = []
    if config.params_file is not None:
        listed.append(("parameters", Path(config.params_file)))
    listed += data_files(files) + package_data_files(indicators)
    return [file_record(path, role, cache) for role, path in listed]


def row_counts(reports) -> dict:
    """Rows read, accepted, rejected and set aside, per source table and in all.

    Parameters
    ----------
    reports : list of moopt.store.IngestReport
        One per ingested file.

    Returns
    -------
    dict
        ``by_source``: per store table (``prescribing``, ``list_size``, ``organisations``,
        ...), the number of ``files``, how many were ``files_unchanged`` (kept from an
        earlier ingest, with the counts of that ingest), ``rows_read``, ``rows_accepted``,
        ``rows_rejected``, ``rows_set_aside`` (accepted but not stored: summary rows, cost
        centres that are not practices) and the rejection ``reasons`` with their counts;
        ``total``: the same sums over every file. Rows read = accepted + rejected for
        every file.
    """

    def empty() -> dict:
        return {
            "files": 0,
            "files_unchanged": 0,
            "rows_read": 0,
            "rows_accepted": 0,
            "rows_rejected": 0,
            "rows_set_aside": 0,
            "reasons": {},
        }

    by_source: dict[str, dict] = {}
    total = empty()
    for report in reports:
        source = by_source.setdefault(report.table, empty())
        for counts in (source, total):
            counts["files"] += 1
            counts["files_unchanged"] += int(bool(report.skipped))
            counts["rows_read"] += int(report.rows_read)
            counts["rows_accepted"] += int(report.rows_accepted)
            counts["rows_rejected"] += int(report.rows_rejected)
            counts["rows_set_aside"] += int(report.rows_set_aside)
            for reason, n in (report.reasons or {}).items():
                counts["reasons"][reason] = counts["reasons"].get(reason, 0) + int(n)
    return {"by_source": dict(sorted(by_source.items())), "total": total}


def stage_records(result, failures: list[dict]) -> list[dict]:
    """One record per stage the build ran before writing the manifest: name, seconds, status.

    The stages that stop a build when they fail (data, ingest, indicators) are ``ok`` when
    they are listed at all; the notebook stage is ``ok`` or says how many notebooks failed.
    The site stage runs after the manifest is written (it is built from it), so it is not
    listed; ``moopt build`` prints its time.
    """
    records = []
    for stage, seconds in result.seconds.items():
        status = "ok"
        if stage == "notebooks" and failures:
            status = f"{len(failures)} of {len(result.notebooks)} notebooks failed"
        records.append({"stage": stage, "seconds": round(seconds, 1), "status": status})
    return records


def run_provenance(config, files, result, indicators=None) -> dict:
    """The provenance keys of the run manifest (see the module docstring and ``docs/manifest.md``).

    Parameters
    ----------
    config : moopt.config.RunConfig
        The run.
    files : moopt.pipeline.DataFiles
        Its data files.
    result : moopt.pipeline.BuildResult
        What the build did so far: ingest reports, notebook results and stage timings.
    indicators : list of Indicator, optional
        The definitions used; default every one.

    Returns
    -------
    dict
        ``resolved_parameters``, ``source``, ``environment``, ``inputs``, ``row_counts``,
        ``rejected_rows``, ``stages`` and ``failures``.
    """
    store_dir = Path(config.store_path).parent
    cache = ChecksumCache(store_dir / CHECKSUM_CACHE_NAME)
    inputs = input_files(config, files, indicators, cache)
    cache.save()
    package = source_commit(PACKAGE_DIR)
    project = None
    if (
        Path(config.project_dir).resolve()
        != Path(package.get("repository") or PACKAGE_DIR).resolve()
    ):
        project = source_commit(config.project_dir)  # the notebooks and parameters, when kept apart
    failures = [
        {
            "stage": "notebooks",
            "org_level": r.org_level,
            "org_code": r.org_code,
            "theme": r.theme,
            "error": r.error,
        }
        for r in result.notebooks
        if r.status != "ok"
    ]
    return {
        "resolved_parameters": resolved_parameters(config),
        "source": {"moopt_version": __version__, **package, "project": project},
        "environment": {
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "libraries": library_versions(),
        },
        "inputs": inputs,
        "row_counts": row_counts(result.ingest),
        "rejected_rows": {
            "table": "rejects",
            "store": str(Path(config.store_path).resolve()),
            "csv_folder": str((store_dir / "rejects").resolve()),
        },
        "stages": stage_records(result, failures),
        "failures": failures,
    }
