"""Packaged lookup tables keyed on BNF codes, for measures the prescribing data cannot express alone.

A lookup is a CSV file in ``lookups/`` listed in ``lookups/lookups.yml`` with a title,
a description and the kind of key it has:

``presentation``
    the full 15-character BNF presentation code; a row matches that code only.
``chemical``
    the 9-character BNF chemical code; a row matches every presentation of it.
``generic``
    a 15-character generic presentation code (product ``AA``); a row matches the
    presentations with the same chemical and the same **last two** characters, i.e.
    the generic and every brand equivalent to it (the BNF code's last two characters
    give the strength and formulation of the generic equivalent).

Every file has a key column ``bnf_code``, then its value columns, then ``source``
and ``date`` (ISO) on every row, so each fact carries its provenance. A lookup whose
rows apply only in some months also has ``valid_from`` and ``valid_to`` columns
(ISO dates, ``valid_to`` may be empty for "still valid"). Prescribing is monthly, so a
row applies to every month from the month of ``valid_from`` to the month of ``valid_to``;
the months of one key must not overlap.

Files are validated when they are loaded; problems are reported with the file,
the row (as a spreadsheet shows it: the header is row 1) and what is wrong.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

LOOKUPS_DIR = Path(__file__).with_name("lookups")
MANIFEST = LOOKUPS_DIR / "lookups.yml"
KEY_KINDS = {"presentation": 15, "chemical": 9, "generic": 15}
CODE_PATTERN = re.compile(r"^[0-9A-Z]+$")
RESERVED = ("bnf_code", "source", "date", "valid_from", "valid_to")


class LookupFileError(ValueError):
    """A lookup file, or a definition's use of one, is invalid."""


@dataclass(frozen=True)
class Lookup:
    """One validated lookup table."""

    name: str
    title: str
    description: str
    key: str  # one of KEY_KINDS
    path: Path
    columns: tuple[str, ...]  # value columns, in file order
    dated: bool
    frame: pd.DataFrame  # bnf_code, value columns (text), source, date, [valid_from, valid_to]

    def key_of(self, bnf_code: str) -> str:
        """The key a prescribing BNF code is matched on (pure-Python reference of the engine)."""
        return key_for(bnf_code, self.key)

    def numeric(self, column: str) -> pd.Series:
        """``column`` as positive numbers; an error names the first row that is not one."""
        if column not in self.columns:
            raise LookupFileError(f"{self.path.name}: there is no column {column!r} "
                                  f"(value columns: {', '.join(self.columns)}).")
        values = pd.to_numeric(self.frame[column], errors="coerce")
        bad = ~(values > 0) | ~values.map(lambda v: math.isfinite(v) if v == v else False)
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise LookupFileError(f"{self.path.name}, row {i + 2}: column {column} is "
                                  f"{self.frame[column].iloc[i]!r}, not a positive number.")
        return values.astype("float64")

    def sources(self) -> list[tuple[str, str]]:
        """Distinct (source, date) pairs, in file order."""
        pairs = self.frame[["source", "date"]].drop_duplicates()
        return list(pairs.itertuples(index=False, name=None))


def key_for(bnf_code: str, kind: str) -> str:
    if kind == "chemical":
        return bnf_code[:9]
    if kind == "generic":
        return bnf_code[:9] + bnf_code[-2:]
    return bnf_code


def month_start(day: date) -> date:
    return day.replace(day=1)


def _iso(text: str, where: str, column: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise LookupFileError(f"{where}: {column} {text!r} is not a date (YYYY-MM-DD).") from None


def read_lookup(path: Path, name: str, title: str, description: str, key: str) -> Lookup:
    """Read and validate one lookup file."""
    path = Path(path)
    if key not in KEY_KINDS:
        raise LookupFileError(f"{MANIFEST.name}: lookup {name} has key {key!r}; use one of {', '.join(KEY_KINDS)}.")
    if not path.is_file():
        raise LookupFileError(f"{path}: lookup file not found (listed as {name} in {MANIFEST.name}).")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise LookupFileError(f"{path.name}: the file is empty.")
    header = [h.strip() for h in rows[0]]
    for needed in ("bnf_code", "source", "date"):
        if needed not in header:
            raise LookupFileError(f"{path.name}, row 1: the header has no {needed!r} column.")
    if header[0] != "bnf_code":
        raise LookupFileError(f"{path.name}, row 1: the first column must be bnf_code, not {header[0]!r}.")
    if len(set(header)) != len(header):
        raise LookupFileError(f"{path.name}, row 1: a column name appears twice.")
    dated = "valid_from" in header or "valid_to" in header
    if dated and not {"valid_from", "valid_to"} <= set(header):
        raise LookupFileError(f"{path.name}, row 1: a dated lookup needs both valid_from and valid_to columns.")
    columns = tuple(h for h in header if h not in RESERVED)
    records, seen = [], {}
    length = KEY_KINDS[key]
    for number, raw in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in raw):
            continue
        where = f"{path.name}, row {number}"
        if len(raw) != len(header):
            raise LookupFileError(f"{where}: {len(raw)} fields, the header has {len(header)}.")
        row = dict(zip(header, (cell.strip() for cell in raw)))
        code = row["bnf_code"]
        if not CODE_PATTERN.match(code) or len(code) != length:
            raise LookupFileError(f"{where}: bnf_code {code!r} is not a {length}-character BNF "
                                  f"{'chemical' if key == 'chemical' else 'presentation'} code.")
        if key == "generic" and code[9:11] != "AA":
            raise LookupFileError(f"{where}: bnf_code {code} is not a generic presentation (characters 10-11 "
                                  "must be AA); a generic lookup matches brands through their last two characters.")
        for column in ("source", *columns):
            if not row[column]:
                raise LookupFileError(f"{where}: {column} is empty.")
        _iso(row["date"], where, "date")
        start, end = date.min, date.max
        if dated:
            start = month_start(_iso(row["valid_from"], where, "valid_from"))
            end = month_start(_iso(row["valid_to"], where, "valid_to")) if row["valid_to"] else date.max
            if end < start:
                raise LookupFileError(f"{where}: valid_to {row['valid_to']} is before valid_from {row['valid_from']}.")
        matched_on = key_for(code, key)
        for other_number, (other_start, other_end) in seen.get(matched_on, []):
            if start <= other_end and other_start <= end:
                raise LookupFileError(f"{where}: bnf_code {code} is already given in row {other_number}"
                                      + (" for overlapping months" if dated else "") + "; each key may appear once.")
        seen.setdefault(matched_on, []).append((number, (start, end)))
        records.append(row)
    if not records:
        raise LookupFileError(f"{path.name}: the file has a header but no rows.")
    frame = pd.DataFrame(records, columns=header)
    return Lookup(name, title, description, key, path, columns, dated, frame)


@lru_cache(maxsize=4)
def _load_all(manifest: str) -> dict[str, Lookup]:
    manifest_path = Path(manifest)
    data = yaml.safe_load(manifest_path.read_text()) or {}
    lookups = {}
    for name, spec in (data.get("lookups") or {}).items():
        for field in ("title", "description", "key", "file"):
            if not spec or field not in spec:
                raise LookupFileError(f"{manifest_path.name}: lookup {name} has no {field!r}.")
        lookups[name] = read_lookup(manifest_path.parent / spec["file"], name, spec["title"],
                                    " ".join(str(spec["description"]).split()), spec["key"])
    return lookups


def load_lookups(manifest: Path | None = None) -> dict[str, Lookup]:
    """Every packaged lookup, validated, by name."""
    return _load_all(str(manifest or MANIFEST))


def get_lookup(name: str) -> Lookup:
    lookups = load_lookups()
    if name not in lookups:
        raise LookupFileError(f"Unknown lookup {name!r}. Known lookups: {', '.join(sorted(lookups))}.")
    return lookups[name]
