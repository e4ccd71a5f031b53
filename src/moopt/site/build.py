"""Build the website for one run: write the Quarto project, render it, swap it into place."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from moopt.build_lock import check_finished, outputs_lock
from moopt.site.downloads import STORE_FILE, write_bulk_downloads
from moopt.site.file_api import read_api_data_if_changed, write_file_api
from moopt.site.files import fresh_temp_dir, swap_into_place
from moopt.site.links import check_links
from moopt.site.plan import load_manifest, plan_site
from moopt.site.project import write_project
from moopt.site.render import Progress, render_builtin

RENDERERS = ("auto", "quarto", "builtin")


class QuartoNotFoundError(RuntimeError):
    """renderer="quarto" was asked for but no ``quarto`` command is on PATH."""


def _render_with_quarto(quarto: str, project_dir: Path, site_dir: Path) -> None:
    # --output-dir is taken relative to the project, like output-dir in _quarto.yml.
    output_dir = os.path.relpath(site_dir, project_dir)
    result = subprocess.run(
        [quarto, "render", str(project_dir), "--output-dir", output_dir],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-30:])
        raise RuntimeError(f"quarto render failed (exit code {result.returncode}):\n{tail}")


def remove_interrupted_site_folders(out: Path, progress: Progress | None = None) -> list[Path]:
    """Delete ``site.tmp-*`` and ``site.old-*`` folders that killed runs left in ``out``.

    Call it only while holding the outputs lock: another command's folders in progress
    carry the same names.
    """
    removed = []
    for pattern in ("site.tmp-*", "site.old-*"):
        for folder in sorted(Path(out).glob(pattern)):
            if folder.is_dir() and folder.name.rsplit("-", 1)[-1] != str(os.getpid()):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    if removed and progress is not None:
        progress(f"site: removed {len(removed)} folder(s) left by interrupted runs "
                 f"({', '.join(f.name for f in removed)})")
    return removed


def build_site(
    out: Path,
    manifest: dict | None = None,
    renderer: str = "auto",
    progress: Progress | None = None,
    base_config: Path | None = None,
) -> dict:
    """Write the Quarto project for a run and render the website into ``out/site``.

    Parameters
    ----------
    out : Path
        The outputs folder holding ``notebooks/``, ``csv/``, ``pages/`` and
        ``run_manifest.json``.
    manifest : dict, optional
        The run manifest; read from ``out/run_manifest.json`` when omitted.
    renderer : {"auto", "quarto", "builtin"}
        "auto" uses Quarto when a ``quarto`` command is on PATH, else moopt's
        built-in renderer (nbconvert + mistune + one page shell).
    progress : callable, optional
        Called with one-line progress messages (moopt's convention, e.g. the
        CLI's printer).
    base_config : Path, optional
        The ``_quarto.yml`` whose settings the generated project starts from;
        by default the repository's own ``_quarto.yml``.

    Returns
    -------
    dict
        ``renderer`` ("quarto" or "builtin"), ``pages`` (number of pages),
        ``site_dir`` and ``index`` (Paths), ``project_dir``, ``broken_links``
        (from :func:`check_links`, normally empty) and ``missing_csv`` (CSV
        downloads the notebooks link to that were not in the outputs folder) and
        ``bulk_downloads`` (a :class:`moopt.site.downloads.BulkDownloads`, None
        without a store) and ``file_api`` (a :class:`moopt.site.file_api.FileApi`,
        None without a store).

    Raises
    ------
    ValueError
        For an unknown renderer or an unusable code, theme id or path in the manifest.
    moopt.build_lock.OutputsBusyError
        When another moopt command is writing ``out``.
    moopt.build_lock.UnfinishedBuildError
        When the last build in ``out`` stopped during its notebooks (they may be a mix of two runs).
    QuartoNotFoundError
        When ``renderer="quarto"`` and Quarto is not installed.

    Notes
    -----
    The site is rendered into ``out/site.tmp-<pid>`` and only renamed to
    ``out/site`` once complete, so a failure part-way leaves the previous
    site (or none) in place, never a partial one. It holds the outputs
    folder's lock while it works, and first removes the temporary folders of
    runs that were killed.

    Examples
    --------
    >>> result = build_site(Path("outputs"), renderer="builtin")  # doctest: +SKIP
    >>> result["index"]  # doctest: +SKIP
    PosixPath('outputs/site/index.html')
    """
    if renderer not in RENDERERS:
        raise ValueError(f"Unknown renderer {renderer!r}: use one of {', '.join(RENDERERS)}.")
    quarto = shutil.which("quarto")
    if renderer == "quarto" and quarto is None:
        raise QuartoNotFoundError(
            "renderer='quarto' was requested but no 'quarto' command is on PATH. Install Quarto "
            "(https://quarto.org/docs/get-started/) or use renderer='builtin'."
        )
    chosen = "quarto" if (renderer == "quarto" or (renderer == "auto" and quarto)) else "builtin"
    out = Path(out)
    with outputs_lock(out, "site", progress):
        check_finished(out)
        remove_interrupted_site_folders(out, progress)
        return _build_site_locked(out, manifest, chosen, quarto, progress, base_config)


def _build_site_locked(out: Path, manifest: dict | None, chosen: str, quarto: str | None,
                       progress: Progress | None, base_config: Path | None) -> dict:
    if manifest is None:
        manifest = load_manifest(out)
    plan = plan_site(out, manifest)
    project_dir = out / "quarto"
    info = write_project(plan, project_dir, base_config=base_config)
    if progress is not None:
        progress(f"site: Quarto project written to {project_dir} ({len(info['pages'])} pages)")

    site_dir = out / "site"
    page_levels = {level for level, _ in plan.orgs}  # practice files only with practice pages
    pages = {page["output"] for page in info["pages"]}
    tmp = fresh_temp_dir(site_dir)
    try:
        if chosen == "quarto":
            if progress is not None:
                progress("site: running quarto render")
            _render_with_quarto(quarto, project_dir, tmp)  # may clear tmp: downloads come after
            bulk = write_bulk_downloads(out / STORE_FILE, tmp, previous_site=site_dir)
            api_data = None  # write_file_api reads it
        else:
            # DuckDB writes the bulk files and reads the file API's rows (releasing the GIL)
            # while Python renders the pages.
            with ThreadPoolExecutor(max_workers=1) as pool:
                writing = pool.submit(write_bulk_downloads, out / STORE_FILE, tmp, site_dir)
                reading = pool.submit(read_api_data_if_changed, out / STORE_FILE, page_levels,
                                      title=plan.title, moopt_version=plan.version, pages=pages,
                                      previous_site=site_dir)
                render_builtin(project_dir, tmp, progress=progress)
                bulk = writing.result()
                api_data = reading.result()
        if not (tmp / "index.html").is_file():
            raise RuntimeError(f"Rendering finished without writing {tmp / 'index.html'}.")
        # After the pages: its files link to the organisation and indicator pages that exist.
        api = write_file_api(out / STORE_FILE, tmp, title=plan.title, moopt_version=plan.version,
                             page_levels=page_levels, previous_site=site_dir, data=api_data, pages=pages)
        if progress is not None and api is not None:
            progress(f"site: JSON file API ({api.files:,} files, {api.bytes / 1e6:,.1f} MB) "
                     f"{'reused from the last site' if api.reused else 'written'}")
        if progress is not None and bulk is not None:
            progress(f"site: results downloads ({bulk.latest_rows:,} latest rows, {bulk.history_rows:,} "
                     f"rows of history, {bulk.total_bytes / 1e6:,.1f} MB) "
                     f"{'reused from the last site' if bulk.reused else 'written'}")
        broken = check_links(tmp)
        swap_into_place(tmp, site_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "renderer": chosen,
        "pages": len(info["pages"]),
        "site_dir": site_dir,
        "index": site_dir / "index.html",
        "project_dir": project_dir,
        "broken_links": [(page, href) for page, href in broken],
        "missing_csv": info["missing_csv"],
        "bulk_downloads": bulk,
        "file_api": api,
    }
