"""Published file layouts, recognised from the header row.

Each layout maps the canonical column names moopt uses to the column names
of one published format (with the variants different eras used). A file's
layout is detected from its header; an unrecognised header is an error that
names the file and the columns each known layout expects.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """A published file layout: its name and canonical -> source column aliases."""

    name: str
    kind: str  # "prescribing", "list_size" or "organisations"
    description: str
    columns: dict[str, tuple[str, ...]]  # canonical name -> accepted source names (first wins)
    optional: tuple[str, ...] = ()

    def match(self, header: list[str]) -> dict[str, str] | None:
        """Return canonical -> actual column names if ``header`` fits, else None."""
        present = {h.strip().upper(): h for h in header}
        found: dict[str, str] = {}
        for canonical, aliases in self.columns.items():
            for alias in aliases:
                if alias in present:
                    found[canonical] = present[alias]
                    break
            else:
                if canonical not in self.optional:
                    return None
        return found

    def expected(self) -> str:
        return ", ".join(" or ".join(a) for c, a in self.columns.items() if c not in self.optional)


EPD = Layout(
    name="epd",
    kind="prescribing",
    description="NHSBSA English Prescribing Dataset (EPD, any era, including EPD with SNOMED code)",
    columns={
        "year_month": ("YEAR_MONTH",),
        "practice_code": ("PRACTICE_CODE",),
        "practice_name": ("PRACTICE_NAME",),
        "bnf_code": ("BNF_CODE", "BNF_PRESENTATION_CODE"),
        "quantity": ("QUANTITY",),
        "items": ("ITEMS",),
        "total_quantity": ("TOTAL_QUANTITY",),
        "adq_usage": ("ADQUSAGE", "ADQ_USAGE"),
        "nic": ("NIC",),
        "actual_cost": ("ACTUAL_COST",),
    },
    optional=("practice_name",),
)

QUINARY_LIST_SIZE = Layout(
    name="gp_reg_pat_prac_quin_age",
    kind="list_size",
    description="NHS Digital Patients Registered at a GP Practice, quinary age bands by sex",
    columns={
        "extract_date": ("EXTRACT_DATE",),
        "org_type": ("ORG_TYPE",),
        "practice_code": ("ORG_CODE",),
        "sex": ("SEX",),
        "age_group": ("AGE_GROUP_5",),
        "patients": ("NUMBER_OF_PATIENTS",),
    },
)

PRACTICE_MAP = Layout(
    name="gp_reg_pat_prac_map",
    kind="organisations",
    description="NHS Digital practice -> PCN -> sub-ICB (or CCG) -> ICB (or STP) -> region mapping",
    columns={
        "practice_code": ("PRACTICE_CODE",),
        "practice_name": ("PRACTICE_NAME",),
        "pcn_code": ("PCN_CODE",),
        "pcn_name": ("PCN_NAME",),
        "sub_icb_code": ("SUB_ICB_LOCATION_CODE", "CCG_CODE"),
        "sub_icb_name": ("SUB_ICB_LOCATION_NAME", "CCG_NAME"),
        "icb_code": ("ICB_CODE", "STP_CODE"),
        "icb_name": ("ICB_NAME", "STP_NAME"),
        "region_code": ("COMM_REGION_CODE",),
        "region_name": ("COMM_REGION_NAME",),
    },
)

SUPPLIED_TIDY = Layout(
    name="moopt_supplied",
    kind="supplied",
    description="moopt tidy supplied-indicator file",
    columns={
        "indicator_id": ("INDICATOR_ID",),
        "org_level": ("ORG_LEVEL",),
        "org_code": ("ORG_CODE",),
        "period_start": ("PERIOD_START",),
        "period_end": ("PERIOD_END",),
        "breakdown": ("BREAKDOWN",),
        "numerator": ("NUMERATOR",),
        "denominator": ("DENOMINATOR",),
    },
    optional=("breakdown",),
)

QOF_ACHIEVEMENT = Layout(
    name="qof_achievement",
    kind="supplied",
    description="NHS Digital QOF achievement file (ACHIEVEMENT_<yy><yy>.csv)",
    columns={
        "practice_code": ("PRACTICE_CODE",),
        "indicator_code": ("INDICATOR_CODE",),
        "measure": ("MEASURE",),
        "value": ("VALUE",),
    },
)

LAYOUTS: tuple[Layout, ...] = (EPD, QUINARY_LIST_SIZE, PRACTICE_MAP, SUPPLIED_TIDY, QOF_ACHIEVEMENT)


def read_header(path: Path) -> list[str]:
    """The first row of a CSV file (plain or gzip), as a list of column names."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the header row ({exc}).") from exc


def detect_layout(path: Path, kind: str) -> tuple[Layout, dict[str, str]]:
    """Find the layout of ``path`` among the layouts of ``kind``.

    Raises
    ------
    ValueError
        Naming the file, the columns it has and the columns each layout of
        that kind expects.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: file not found.")
    header = read_header(path)
    candidates = [layout for layout in LAYOUTS if layout.kind == kind]
    for layout in candidates:
        columns = layout.match(header)
        if columns is not None:
            return layout, columns
    expected = "; ".join(f"{layout.description}: {layout.expected()}" for layout in candidates)
    raise ValueError(
        f"{path}: the header does not match any known {kind.replace('_', ' ')} layout. "
        f"It has columns {', '.join(header[:30]) or '(none)'}. Expected {expected}."
    )
