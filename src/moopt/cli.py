"""The ``moopt`` command line.

    moopt synth [--scale small|national]     write the synthetic national data set
    moopt build [--params FILE] [overrides]  data -> store -> indicators -> notebooks -> site
                                             (notebooks whose inputs are unchanged are reused; --force
                                             runs them all; --indicator ID re-runs only its pages;
                                             --drafts computes draft indicators)
    moopt ingest [--params FILE]             validate and load the run's files into the store
    moopt fetch [--months A:B] [--icb ...]    download EPD months (NHSBSA open data portal) or a file
    moopt indicators list | check            the indicator library
    moopt export-parquet [--month YYYY-MM]   the store's input tables as Parquet, by month
    moopt site                               re-render the site from the last run's notebooks
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import sys
import threading
import time
from pathlib import Path

from moopt import __version__
from moopt.config import ParameterError, load_config


def _say(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def _overrides(args: argparse.Namespace) -> dict:
    over: dict = {}
    if getattr(args, "orgs", None):
        over.setdefault("organisations", {})["codes"] = args.orgs
    if getattr(args, "level", None):
        over.setdefault("organisations", {})["level"] = args.level
    if getattr(args, "no_levels_above", False):
        over.setdefault("organisations", {})["levels_above"] = False
    if getattr(args, "themes", None):
        over["themes"] = args.themes
    if getattr(args, "period_end", None):
        over.setdefault("period", {})["end"] = args.period_end
    if getattr(args, "workers", None) is not None:  # 0 is an answer, to be refused, not ignored
        over["workers"] = args.workers
    if getattr(args, "runner", None):
        over["runner"] = args.runner
    if getattr(args, "scheduler", None):
        over["scheduler"] = args.scheduler
    if getattr(args, "renderer", None):
        over["renderer"] = args.renderer
    if getattr(args, "outputs", None):
        over["outputs"] = args.outputs
    if getattr(args, "drafts", False):
        over["include_drafts"] = True
    if getattr(args, "synthetic_scale", None):
        over.setdefault("data", {})["synthetic_scale"] = args.synthetic_scale
    return over


@contextlib.contextmanager
def _nothing():
    yield


def cmd_synth(args: argparse.Namespace) -> int:
    from moopt.pipeline import make_synthetic

    from moopt.build_lock import outputs_lock

    config = load_config(args.params, overrides=_overrides(args))
    folder = Path(args.out) if args.out else config.synthetic_dir
    started = time.perf_counter()
    # A build reads the synthetic set in its outputs folder: do not rewrite it under a build.
    inside_outputs = folder.resolve().is_relative_to(config.outputs_dir.resolve())
    with outputs_lock(config.outputs_dir, "synth") if inside_outputs else _nothing():
        summary = make_synthetic(folder, args.scale, args.seed, config.synthetic_end_month,
                                 config.synthetic_months, _say)
    _say(f"synthetic {args.scale} data written to {folder} in {time.perf_counter() - started:.0f}s")
    counts = summary.get("counts", summary) if isinstance(summary, dict) else {}
    for key, value in counts.items():
        if isinstance(value, (int, float, str)):
            print(f"  {key}: {value}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from moopt.pipeline import ensure_data, ingest_run, reset_store_if_data_changed
    from moopt.store import Store

    from moopt.build_lock import outputs_lock

    config = load_config(args.params, overrides=_overrides(args))
    with outputs_lock(config.outputs_dir, "ingest", _say):
        files = ensure_data(config, _say)
        reset_store_if_data_changed(config.store_path, files, _say)
        with Store(config.store_path) as store:
            reports = ingest_run(store, config, files, _say)
            rejects = store.rejects_dir
    read = sum(r.rows_read for r in reports)
    rejected = sum(r.rows_rejected for r in reports)
    _say(f"{read:,} rows read = {read - rejected:,} accepted + {rejected:,} rejected"
         + (f" (rejected rows and reasons: {rejects})" if rejected else ""))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from moopt.pipeline import build, themes_for_run
    from moopt.preview import preview_request
    from moopt.runner import reuse_line

    config = load_config(args.params, overrides=_overrides(args))
    config, preview = preview_request(config, args.indicator, args.theme,
                                      [t.id for t in themes_for_run(config)])
    _say(f"moopt {__version__} build: level {config.org_level}, "
         f"organisations {'all' if config.org_codes is None else ','.join(config.org_codes)}, "
         f"themes {'all' if config.themes is None else ','.join(config.themes)}, outputs {config.outputs_dir}")
    result = build(config, progress=_say, render_site=not args.no_site, force=args.force, preview=preview)
    times = ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
    _say(f"finished: {times}")
    if result.notebooks:
        _say(f"notebooks: {reuse_line(len(result.reused), len(result.notebooks))}, "
             f"{len(result.notebooks) - len(result.reused)} run")
    if result.site:
        _say(f"site: {result.site.get('index')} ({result.site.get('pages')} pages, "
             f"{result.site.get('renderer')} renderer)")
    if result.failures:
        print(f"\n{len(result.failures)} notebook(s) failed:", file=sys.stderr)
        for f in result.failures:
            print(f"  {f.org_level} {f.org_code} {f.theme}: {f.error}", file=sys.stderr)
        return 1
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from moopt.build_lock import check_finished, outputs_lock
    from moopt.site import build_site

    config = load_config(args.params, overrides=_overrides(args))
    manifest_path = config.outputs_dir / "run_manifest.json"
    with outputs_lock(config.outputs_dir, "site", _say):  # a running build may be rewriting the manifest
        check_finished(config.outputs_dir)
        if not manifest_path.exists():
            raise ParameterError(f"No run manifest at {manifest_path}: run `moopt build` first.")
        # build_site also refuses the notebooks of a build that did not finish.
        result = build_site(config.outputs_dir, None, renderer=config.renderer,
                            base_config=config.project_dir / "_quarto.yml", progress=_say)
    _say(f"site: {result.get('index')} ({result.get('pages')} pages, {result.get('renderer')} renderer)")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from moopt.sources.fetch import run_fetch_command

    config = load_config(args.params, overrides=_overrides(args))  # period and outputs folder
    return run_fetch_command(args, _say, config)


def cmd_export_parquet(args: argparse.Namespace) -> int:
    from moopt.parquet_store import run_export_command

    config = load_config(args.params, overrides=_overrides(args))
    return run_export_command(config.store_path, args.out, args.month, _say)


def cmd_indicators(args: argparse.Namespace) -> int:
    from moopt.indicators.definitions import load_indicators

    indicators = load_indicators()
    if args.action == "list":
        for ind in indicators:
            print(f"{ind.id:6} {ind.theme:18} {ind.improvement_direction:9} {ind.value_kind:10} {ind.title}")
            if ind.national_priority:
                print(f"{'':6} for: {ind.national_priority}")
        return 0
    from moopt.indicators.check import check_indicators

    config = load_config(args.params, overrides=_overrides(args))
    report = check_indicators(config.store_path if config.store_path.exists() else None)
    print(report.text())
    return 0 if report.ok else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moopt", description="Medicines optimisation dashboards for the English NHS.")
    p.add_argument("--version", action="version", version=f"moopt {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = p.add_subparsers(dest="command", required=True)

    def add_common(sp):
        sp.add_argument("--params", help="YAML run file (default parameters/default.yml)")
        sp.add_argument("--outputs", help="outputs folder (default: the run file's outputs, else outputs)")

    sp = sub.add_parser("synth", help="write the synthetic national data set")
    add_common(sp)
    sp.add_argument("--scale", choices=["national", "small"], default="national")
    sp.add_argument("--seed", type=int, default=42)
    sp.add_argument("--out", help="folder (default outputs/data/synthetic)")
    sp.set_defaults(func=cmd_synth)

    sp = sub.add_parser("build", help="build everything: store, indicators, notebooks, site")
    add_common(sp)
    sp.add_argument("--orgs", help="comma-separated organisation codes (default: all at the level)")
    sp.add_argument("--level", choices=["practice", "pcn", "sub_icb", "icb", "region", "group"],
                    help="organisation level of the pages (group: the groups of organisations.groupings)")
    sp.add_argument("--no-levels-above", action="store_true",
                    help="pages for this level only, not also for the ICBs and regions above it "
                         "(organisations.levels_above: false)")
    sp.add_argument("--themes", help="comma-separated theme ids (default: all built themes)")
    sp.add_argument("--period-end", help="last month, YYYY-MM (default: the run file's period.end, "
                                         "else the latest month in the data)")
    sp.add_argument("--workers", type=int, help="notebooks run in parallel (default 2; at most 4 per CPU core)")
    sp.add_argument("--renderer", choices=["auto", "quarto", "builtin"])
    sp.add_argument("--runner", choices=["warm", "papermill"],
                    help="warm: one kernel per worker, reused (default); papermill: a new kernel each")
    sp.add_argument("--synthetic-scale", choices=["national", "small"],
                    help="regenerate synthetic data at this scale if the current set differs")
    sp.add_argument("--indicator", action="append", metavar="ID",
                    help="preview: re-run only the pages that show this indicator (its theme's pages, the "
                         "summaries, the England overview) and keep every other page from the last build; "
                         "a draft named here is computed. Repeat or comma-separate for several")
    sp.add_argument("--theme", action="append", metavar="ID",
                    help="preview: re-run only this theme's pages (and the summaries and overview)")
    sp.add_argument("--drafts", action="store_true",
                    help="compute and show draft indicators (status: draft), marked Draft on every page "
                         "(run file: include_drafts: true)")
    sp.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786): run the notebooks on that "
                                        "cluster instead of local worker processes (see docs/scaling.md)")
    sp.add_argument("--no-site", action="store_true", help="stop after the notebooks")
    sp.add_argument("--force", action="store_true",
                    help="run every notebook, even those whose inputs are unchanged since the last build")
    sp.set_defaults(func=cmd_build)

    sp = sub.add_parser("ingest", help="validate and load the run's files into the store")
    add_common(sp)
    sp.set_defaults(func=cmd_ingest)

    sp = sub.add_parser("site", help="re-render the site from the last build")
    add_common(sp)
    sp.add_argument("--renderer", choices=["auto", "quarto", "builtin"])
    sp.set_defaults(func=cmd_site)

    from moopt.sources.fetch import add_fetch_arguments

    sp = sub.add_parser("fetch", help="download prescribing months from the NHSBSA open data portal, "
                                      "or any published file, into a checked local cache")
    add_common(sp)
    add_fetch_arguments(sp)
    sp.set_defaults(func=cmd_fetch)

    sp = sub.add_parser("export-parquet", help="write the store's input tables as Parquet, prescribing "
                                               "partitioned by month (for Spark or another cluster engine)")
    add_common(sp)
    sp.add_argument("--out", help="folder (default outputs/store/parquet)")
    sp.add_argument("--month", action="append", help="replace only this prescribing month (YYYY-MM), "
                                                     "atomically; may be repeated")
    sp.set_defaults(func=cmd_export_parquet)

    sp = sub.add_parser("indicators", help="list or check the indicator definitions")
    add_common(sp)
    sp.add_argument("action", choices=["list", "check"])
    sp.set_defaults(func=cmd_indicators)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop like Ctrl-C, so that workers, kernels and locks are cleaned up."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def stop_cleanly_on_sigterm():
    """While in this block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt).

    Without it SIGTERM ends the process at once: no worker is stopped and no half-written
    file removed. Only the main thread can set signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_duckdb_lock_error(exc: BaseException) -> bool:
    # "lock" as a word: DuckDB's out-of-memory message ("could not allocate block") is not one.
    return "duckdb" in type(exc).__module__ and re.search(r"\block\b", str(exc).lower()) is not None


def _is_duckdb_memory_error(exc: BaseException) -> bool:
    return "duckdb" in type(exc).__module__ and type(exc).__name__ == "OutOfMemoryException"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        with stop_cleanly_on_sigterm():
            return args.func(args)
    except (ParameterError, ValueError, FileNotFoundError) as exc:
        print(f"moopt: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("moopt: stopped by SIGTERM (a build stopped before its end does not replace the site)",
              file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("moopt: interrupted (a build stopped before its end does not replace the site)", file=sys.stderr)
        return 130
    except Exception as exc:
        if _is_duckdb_memory_error(exc):
            print("moopt: error: DuckDB ran out of the memory it is allowed (data.ingest_memory_limit in "
                  f"the run file, which holds ingest, indicators and results): {str(exc).splitlines()[0]} "
                  "Raise the limit, or run with fewer organisations or months.", file=sys.stderr)
            return 2
        if not _is_duckdb_lock_error(exc):
            raise
        # Another program (a notebook, a DuckDB shell) has the store open for writing.
        print(f"moopt: error: the store is in use by another program, so it cannot be opened: {exc}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
