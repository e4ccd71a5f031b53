"""Which indicators a run computes, and which pages a preview build re-runs.

Two things an analyst changing a definition needs:

* **Draft indicators.** A definition with ``status: draft`` is computed and shown only
  when asked: ``include_drafts: true`` in the run file (``moopt build --drafts``), or by
  naming it (``moopt build --indicator ID``). Every page that shows one marks it "Draft".
* **Preview builds.** ``moopt build --indicator ID`` (or ``--theme ID``) re-runs only the
  pages that show it: its theme's page for every organisation of the run, the summaries
  and the England overview. Every other page is kept as the last build left it (even if
  its inputs changed since), so that a changed definition can be looked at in the site in
  a fraction of a full build. The next build without these options re-runs whatever the
  build cache finds out of date, the kept pages included.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from pathlib import Path

from moopt.config import ParameterError, RunConfig
from moopt.indicators.definitions import Indicator, load_indicators
from moopt.runner import NotebookJob, NotebookResult, reusable_result

DRAFT = "draft"
# Pages that show every indicator, so any preview re-runs them.
EVERY_INDICATOR_PAGES = ("summary", "overview")


def is_draft(indicator: Indicator) -> bool:
    """True for a definition still in draft (``status: draft``)."""
    return indicator.status == DRAFT


def run_indicators(config: RunConfig, indicators: list[Indicator] | None = None) -> list[Indicator]:
    """The definitions a run computes: all but the drafts it did not ask for.

    Parameters
    ----------
    config : RunConfig
        ``include_drafts`` takes every draft; ``named_drafts`` the drafts named by ``--indicator``.
    indicators : list of Indicator, optional
        Default: every definition.
    """
    indicators = load_indicators() if indicators is None else indicators
    return [i for i in indicators
            if not is_draft(i) or config.include_drafts or i.id in config.named_drafts]


def left_out_drafts(config: RunConfig) -> list[str]:
    """Ids of the drafts this run does not compute (said in the build's progress)."""
    computed = {i.id for i in run_indicators(config)}
    return [i.id for i in load_indicators() if i.id not in computed]


@dataclasses.dataclass(frozen=True)
class PreviewRequest:
    """What ``--indicator``/``--theme`` asked for: the themes whose pages are re-run."""

    indicators: tuple[str, ...]
    themes: tuple[str, ...]

    def describe(self) -> str:
        named = [*(f"indicator {i}" for i in self.indicators), *(f"theme {t}" for t in self.themes)]
        return ", ".join(named)


def _split(values: str | Iterable[str] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def preview_request(config: RunConfig, indicator_ids: str | Iterable[str] | None,
                    theme_ids: str | Iterable[str] | None,
                    run_themes: list[str]) -> tuple[RunConfig, PreviewRequest | None]:
    """Check ``--indicator``/``--theme``; return the run (drafts named now computed) and the request.

    Parameters
    ----------
    config : RunConfig
        The run.
    indicator_ids, theme_ids : str or list of str, optional
        Comma-separated or listed ids; none of either: not a preview (None is returned).
    run_themes : list of str
        The themes this run builds (a previewed theme must be among them).

    Raises
    ------
    ParameterError
        For an unknown indicator or theme (with the closest known ids), or a theme the run
        does not build.
    """
    indicator_ids, theme_ids = _split(indicator_ids), _split(theme_ids)
    if not indicator_ids and not theme_ids:
        return config, None
    known = {i.id: i for i in load_indicators()}
    unknown = [i for i in indicator_ids if i not in known]
    if unknown:
        hints = [f"{i} (did you mean {' or '.join(close)}?)" if (close := difflib.get_close_matches(
            i.upper(), list(known), n=2)) else i for i in unknown]
        raise ParameterError(f"Unknown indicator(s) in --indicator: {', '.join(hints)}. "
                             "`moopt indicators list` lists them.")
    themes = list(dict.fromkeys([*(known[i].theme for i in indicator_ids), *theme_ids]))
    outside = [t for t in themes if t not in run_themes]
    if outside:
        raise ParameterError(f"Theme(s) {', '.join(outside)} (from --indicator or --theme) are not built by this "
                             f"run, whose themes are {', '.join(run_themes)}; change themes (or --themes).")
    drafts = tuple(i for i in indicator_ids if is_draft(known[i]))
    if drafts:
        config = dataclasses.replace(config, named_drafts=tuple(dict.fromkeys([*config.named_drafts, *drafts])))
    return config, PreviewRequest(tuple(indicator_ids), tuple(themes))


def shows_previewed(job: NotebookJob, request: PreviewRequest) -> bool:
    """Does the page of ``job`` show what the preview asked for?"""
    return job.theme in EVERY_INDICATOR_PAGES or job.theme in request.themes


def split_preview_jobs(jobs: list[NotebookJob], request: PreviewRequest,
                       outputs_dir: Path) -> tuple[list[int], dict[int, NotebookResult]]:
    """Indexes of the jobs to run, and the last results of the pages kept as they are.

    A page that does not show the previewed indicators is kept when the last build left a
    good notebook for it; one that has none (never built, or failed) is run too.
    """
    to_run, kept = [], {}
    for index, job in enumerate(jobs):
        last = None if shows_previewed(job, request) else reusable_result(job, Path(outputs_dir), same_key=False)
        if last is None:
            to_run.append(index)
        else:
            kept[index] = last
    return to_run, kept
