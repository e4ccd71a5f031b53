"""A run's own groups of practices: localities, federations, a research cohort.

A run file names a CSV under ``organisations.groupings``::

    organisations:
      level: group
      groupings: my_groups.csv

with one row per practice: ``practice_code, group_code, group_name``. The groups become an
organisation level of their own, ``group``: the indicator engine sums each group's practices
(ratios of sums, like every level), the results stage gives every group a funnel position
against England, confidence intervals, SPC and trends, and ``--level group`` builds pages
for them. Peers (similar organisations) are not chosen for groups: a group's members are
the user's choice, so there is no national set of groups to find peers in.

The file is checked as a whole before it is used: every row must have all three values,
a group code usable as a folder name, a practice the organisations data hold, and a
practice in one group only. Any row failing these stops the run with the file, the line
and the problem; nothing is dropped quietly.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from moopt.config import ParameterError
from moopt.orgs import SAFE_CODE
from moopt.store import IngestReport, Store

COLUMNS = ("practice_code", "group_code", "group_name")
TABLE = "practice_groups"
SHOWN_PROBLEMS = 10


def read_groupings(path: str | Path, known_practices: set[str]) -> tuple[pd.DataFrame, IngestReport]:
    """Read and check a groupings file; return its rows and what happened to them.

    Parameters
    ----------
    path : path
        CSV with the columns ``practice_code, group_code, group_name`` (any case and order,
        other columns ignored).
    known_practices : set of str
        Practice codes of the organisations data.

    Raises
    ------
    ParameterError
        When the file is missing, lacks a column, or any row is rejected; the message gives
        rows read = accepted + rejected and each problem with its line number.
    """
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"Groupings file {path} does not exist (organisations.groupings).")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ParameterError(f"Groupings file {path} is not a readable CSV: {exc}") from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ParameterError(f"Groupings file {path} lacks the column(s) {', '.join(missing)}; it needs "
                             f"{', '.join(COLUMNS)} (found {', '.join(frame.columns) or 'none'}).")
    frame = frame[list(COLUMNS)].apply(lambda column: column.str.strip())
    frame["practice_code"] = frame["practice_code"].str.upper()
    frame["line"] = range(2, len(frame) + 2)  # the header is line 1
    problems: list[tuple[int, str]] = []
    reasons: dict[str, int] = {}

    def reject(mask: pd.Series, reason: str, detail) -> None:
        for row in frame[mask].itertuples(index=False):
            problems.append((row.line, detail(row)))
        if mask.any():
            reasons[reason] = reasons.get(reason, 0) + int(mask.sum())

    blank = (frame[list(COLUMNS)] == "").any(axis=1)
    reject(blank, "blank practice_code, group_code or group_name",
           lambda r: "blank " + ", ".join(c for c in COLUMNS if getattr(r, c) == ""))
    rest = ~blank
    bad_code = rest & ~frame["group_code"].str.match(SAFE_CODE.pattern)
    reject(bad_code, "group code not 1 to 12 letters or digits",
           lambda r: f"group code {r.group_code!r} is not 1 to 12 letters or digits (it names the group's folder)")
    rest &= ~bad_code
    unknown = rest & ~frame["practice_code"].isin(known_practices)
    reject(unknown, "practice not in the organisations data",
           lambda r: f"practice {r.practice_code} is not in the organisations data")
    rest &= ~unknown
    repeated = rest & frame["practice_code"].duplicated(keep=False)
    reject(repeated, "practice listed more than once",
           lambda r: f"practice {r.practice_code} is listed more than once (lines "
                     f"{', '.join(map(str, frame.loc[repeated & (frame['practice_code'] == r.practice_code), 'line']))})")
    rest &= ~repeated
    names = frame[rest].groupby("group_code")["group_name"].nunique()
    two_names = rest & frame["group_code"].isin(names[names > 1].index)
    reject(two_names, "group code with more than one name",
           lambda r: f"group {r.group_code} has more than one group_name in the file")
    rest &= ~two_names

    report = IngestReport(str(path), "groupings", TABLE, len(frame), int(rest.sum()), int((~rest).sum()),
                          reasons=reasons)
    if problems:
        problems.sort()
        shown = "; ".join(f"line {line}: {text}" for line, text in problems[:SHOWN_PROBLEMS])
        more = f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        raise ParameterError(
            f"Groupings file {path}: {report.rows_read:,} rows read = {report.rows_accepted:,} accepted + "
            f"{report.rows_rejected:,} rejected, and a group must not lose practices silently, so nothing is "
            f"used. Fix: {shown}{more}.")
    if not len(frame):
        raise ParameterError(f"Groupings file {path} has no rows: list practice_code, group_code, group_name.")
    return frame[list(COLUMNS)].reset_index(drop=True), report


def load_groupings(store: Store, path: str | Path | None, progress=None) -> IngestReport | None:
    """Write the run's groups to the store's ``practice_groups`` table (empty without a file).

    Returns the file's report (rows read = accepted + rejected), or None without a file.
    """
    say = progress or (lambda msg: None)
    if path is None:
        store.con.execute(f"CREATE OR REPLACE TABLE {TABLE} (practice_code VARCHAR, group_code VARCHAR, "
                          "group_name VARCHAR)")
        return None
    known = {code for (code,) in store.con.execute("SELECT DISTINCT practice_code FROM organisations").fetchall()}
    frame, report = read_groupings(path, known)
    store.con.register("_groupings_frame", frame)
    try:
        store.con.execute(f"CREATE OR REPLACE TABLE {TABLE} AS SELECT practice_code, group_code, group_name "
                          "FROM _groupings_frame ORDER BY practice_code")
    finally:
        store.con.unregister("_groupings_frame")
    groups = frame["group_code"].nunique()
    say(f"groupings: {report.line()}; {groups} group(s) of {len(frame):,} practices")
    return report
