"""Organisation levels and the practice -> PCN -> sub-ICB -> ICB -> region hierarchy.

Organisation level is data, not code: every function that works on an
organisation takes the level as a parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Levels from the smallest to the largest. The names are the domain's words.
ORG_LEVELS: tuple[str, ...] = ("practice", "pcn", "sub_icb", "icb", "region", "england")
# A run's own groups of practices (localities, federations, a research cohort), named in a
# groupings file (see moopt.groupings). Outside the hierarchy: a group may span any parents.
GROUP_LEVEL = "group"

ORG_LEVEL_LABELS: dict[str, str] = {
    "practice": "GP practice",
    "pcn": "Primary care network",
    "sub_icb": "Sub-ICB location",
    "icb": "Integrated care board",
    "region": "NHS England region",
    "england": "England",
    GROUP_LEVEL: "Group of practices",
}

# Plural forms for running text ("higher than 40% of sub-ICB locations").
ORG_LEVEL_PLURALS: dict[str, str] = {
    "practice": "GP practices",
    "pcn": "primary care networks",
    "sub_icb": "sub-ICB locations",
    "icb": "integrated care boards",
    "region": "NHS England regions",
    "england": "England",
    GROUP_LEVEL: "groups of practices",
}

# Column of the organisation table that holds each level's code and name.
ORG_LEVEL_COLUMNS: dict[str, tuple[str, str]] = {
    "practice": ("practice_code", "practice_name"),
    "pcn": ("pcn_code", "pcn_name"),
    "sub_icb": ("sub_icb_code", "sub_icb_name"),
    "icb": ("icb_code", "icb_name"),
    "region": ("region_code", "region_name"),
    # Not a column of the organisations table: the practice_groups table the groupings file fills.
    GROUP_LEVEL: ("group_code", "group_name"),
}

ENGLAND_CODE = "ENG"
ENGLAND_NAME = "England"

# Codes become file and folder names, so only plain letters and digits pass.
SAFE_CODE = re.compile(r"^[A-Za-z0-9]{1,12}$")


def parent_levels(level: str) -> tuple[str, ...]:
    """The levels above ``level`` that pages are built for, nearest first, up to region (not England)."""
    below_england = ORG_LEVELS[:ORG_LEVELS.index("england")]
    return below_england[below_england.index(level) + 1:]


def check_org_level(level: str) -> str:
    """Return ``level`` if it is a known organisation level (or the groups level), else raise ValueError."""
    if level not in ORG_LEVELS and level != GROUP_LEVEL:
        raise ValueError(
            f"Unknown organisation level {level!r}. Use one of: {', '.join((*ORG_LEVELS, GROUP_LEVEL))}."
        )
    return level


def check_safe_code(code: str, what: str = "organisation code") -> str:
    """Return ``code`` if it is safe to use in a file name, else raise ValueError."""
    if not isinstance(code, str) or not SAFE_CODE.match(code):
        raise ValueError(
            f"The {what} {code!r} is not usable: codes must be 1 to 12 letters or digits."
        )
    return code


@dataclass(frozen=True)
class Organisation:
    """One organisation at one level."""

    level: str
    code: str
    name: str
    parent_code: str | None = None
    parent_name: str | None = None
