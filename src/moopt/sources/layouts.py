"""Published file layouts, recognised from the header row.

Each layout maps the canonical column names moopt uses to the column names
of one published format (with the variants different eras used). A file's
layout is detected from its header; an unrecognised header is an error that
names the file and the columns each known layout expects. Headers are
compared after trimming padding and ignoring case, and spaces and
underscores are treated alike (the legacy NHS Digital files pad their names
and write ``BNF CODE`` where NHSBSA writes ``BNF_CODE``). Columns are
returned by position, because readers address them by position: padded or
blank names (the legacy files' trailing comma makes one) cannot be relied on.

Compressed inputs: ``.gz`` is read directly; a ``.zip`` archive is opened at
the one member whose header fits a layout of the kind asked for
(:func:`csv_members`).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path


def _normalise(name: str) -> str:
    return re.sub(r"[\s_]+", "_", name.strip().upper())


@dataclass(frozen=True)
class Layout:
    """A published file layout: its name and canonical -> source column aliases.

    ``reader`` says how the store reads it: ``csv`` (a CSV with this header),
    ``lines`` (whole lines split by the store, for the legacy files whose free
    text may hold commas) or ``headerless`` (no header row; ``sniff`` checks
    the first row's values instead, and ``columns`` are in file order).
    """

    name: str
    kind: str  # "prescribing", "list_size", "organisations", "supplied" or "reference"
    description: str
    columns: dict[str, tuple[str, ...]]  # canonical name -> accepted source names (first wins)
    optional: tuple[str, ...] = ()
    reader: str = "csv"
    sniff: tuple[str, ...] = ()  # headerless layouts: a regular expression per leading field
    n_fields: int | None = None  # headerless layouts: the exact number of fields, where fixed

    def match(self, header: list[str]) -> dict[str, int] | None:
        """Return canonical name -> column position if ``header`` fits, else None."""
        if self.reader == "headerless":
            if self.n_fields is not None and len(header) != self.n_fields:
                return None
            if len(header) < len(self.sniff) or not all(
                    re.fullmatch(pattern, value.strip()) for pattern, value in zip(self.sniff, header)):
                return None
            return {canonical: i for i, canonical in enumerate(self.columns)}
        present: dict[str, int] = {}
        for i, h in enumerate(header):
            present.setdefault(_normalise(h), i)
        found: dict[str, int] = {}
        for canonical, aliases in self.columns.items():
            for alias in aliases:
                if _normalise(alias) in present:
                    found[canonical] = present[_normalise(alias)]
                    break
            else:
                if canonical not in self.optional:
                    return None
        return found

    def expected(self) -> str:
        if self.reader == "headerless":
            return "no header row; columns " + ", ".join(self.columns)
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

LEGACY_PDPI = Layout(
    name="nhs_digital_pdpi",
    kind="prescribing",
    description=("NHS Digital practice level prescribing (PDPI, 2010 to 2019; padded with a trailing comma "
                 "before December 2018, plain after)"),
    columns={
        "sha": ("SHA",),
        "pct": ("PCT",),
        "practice_code": ("PRACTICE",),
        "bnf_code": ("BNF CODE",),
        "bnf_name": ("BNF NAME",),
        "items": ("ITEMS",),
        "nic": ("NIC",),
        "actual_cost": ("ACT COST",),
        "total_quantity": ("QUANTITY",),  # the total quantity; one release left it out
        "year_month": ("PERIOD",),
    },
    optional=("total_quantity",),
    reader="lines",
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

SINGLE_AGE_LIST_SIZE = Layout(
    name="gp_reg_pat_prac_single_age_or_all",
    kind="list_size",
    description=("NHS Digital Patients Registered at a GP Practice, single year of age by sex "
                 "(gp-reg-pat-prac-sing-age-*.csv) or totals only (gp-reg-pat-prac-all.csv), CCG or sub-ICB era"),
    columns={
        "extract_date": ("EXTRACT_DATE",),
        "org_type": ("TYPE", "ORG_TYPE"),
        "practice_code": ("ORG_CODE", "CODE"),
        "sex": ("SEX",),
        "age": ("AGE",),
        "patients": ("NUMBER_OF_PATIENTS",),
    },
)

# The nine age bands of the NHSBSA file are the bands the STAR-PU and ASTRO-PU weights use.
NHSBSA_BANDS = ("0-4", "5-14", "15-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+")

NHSBSA_LIST_SIZE = Layout(
    name="nhsbsa_patient_list_size",
    kind="list_size",
    description=("NHSBSA quarterly Patient List Size (to 2016): one row per practice, male and female "
                 "counts in nine age bands; the quarter comes from a Month column or the file name"),
    columns={
        "month": ("Month",),
        "practice_code": ("Practice Code",),
        **{f"{sex}_{band}": (f"{sex.title()} {band}",) for band in NHSBSA_BANDS for sex in ("male", "female")},
    },
    optional=("month",),
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

LEGACY_ADDR = Layout(
    name="nhs_digital_addr",
    kind="reference",
    description="NHS Digital practice addresses (ADDR, monthly with PDPI; no header row)",
    columns={name: () for name in ("year_month", "practice_code", "practice_name", "address_1", "address_2",
                                   "address_3", "county", "postcode")},
    reader="headerless",
    sniff=(r"\d{6}", r"[A-Z0-9]{3,8}"),
)

LEGACY_CHEM = Layout(
    name="nhs_digital_chem",
    kind="reference",
    description="NHS Digital chemical substance names (CHEM, monthly with PDPI)",
    columns={"chemical_code": ("CHEM SUB",), "chemical_name": ("NAME",)},
    reader="lines",
)

LSOA_LIST_SIZE_TOTALS = Layout(
    name="practice_list_size_from_lsoa",
    kind="list_size",
    description=("Practice list sizes summed over the quarterly LSOA file (totals only; the month comes "
                 "from the file name, e.g. ..._Oct2025_...)"),
    columns={"practice_code": ("PRACTICE_CODE",), "patients": ("NUMBER_OF_PATIENTS_SUM_LSOA",)},
)


@dataclass(frozen=True)
class ReferenceTable:
    """Where a reference layout is stored: table ``reference_<table>``, its key columns, and
    the organisation level the file describes (for organisation names)."""

    table: str
    key: tuple[str, ...]
    org_level: str | None = None


def _reference(name: str, description: str, columns: dict[str, tuple[str, ...]], table: ReferenceTable,
               optional: tuple[str, ...] = ()) -> Layout:
    layout = Layout(name=name, kind="reference", description=description, columns=columns, optional=optional)
    REFERENCE_TABLES[name] = table
    return layout


# Reference files: kept in the store for analysts and checks; indicators do not depend on them.
REFERENCE_TABLES: dict[str, ReferenceTable] = {}
BNF_CODES = _reference(
    "bnf_codes", "NHSBSA BNF code information (chapter to presentation codes and names)",
    {"presentation_code": ("BNF Presentation Code",), "presentation_name": ("BNF Presentation",),
     "chemical_code": ("BNF Chemical Substance Code",), "chemical_name": ("BNF Chemical Substance",),
     "section_code": ("BNF Section Code",), "section_name": ("BNF Section",),
     "chapter_code": ("BNF Chapter Code",), "chapter_name": ("BNF Chapter",)},
    ReferenceTable("bnf_presentations", ("presentation_code",)))
ADQ_VALUES = _reference(
    "adq_values", "NHSBSA average daily quantities by BNF presentation",
    {"bnf_code": ("BNF Code",), "bnf_name": ("BNF Name",), "adq_value": ("ADQ Value",), "adq_unit": ("ADQ Unit",)},
    ReferenceTable("adq_values", ("bnf_code",)))
QOF_PREVALENCE_PRACTICE = _reference(
    "qof_prevalence_practice", "QOF disease registers and list sizes by practice (OpenPrescribing extract)",
    {"org_code": ("practicecode",), "indicator_group": ("indicator_group",),
     "register_description": ("Register_description",), "register_size": ("disease_register_size",),
     "list_size": ("practice_listsize",)},
    ReferenceTable("qof_prevalence", ("org_code", "indicator_group", "register_description"), "practice"))
QOF_PREVALENCE_CCG = _reference(
    "qof_prevalence_ccg", "QOF disease registers and list sizes by CCG (OpenPrescribing extract)",
    {"org_code": ("ccgcode",), "indicator_group": ("indicator_group",),
     "register_description": ("Register_description",), "register_size": ("disease_register_size",),
     "list_size": ("ccg_listsize",)},
    ReferenceTable("qof_prevalence", ("org_code", "indicator_group", "register_description"), "sub_icb"))
QOF_PREVALENCE_RAW = _reference(
    "qof_prevalence_raw", "NHS Digital QOF prevalence file (PREVALENCE_<yy><yy>.csv in the QOF raw data zip)",
    {"practice_code": ("PRACTICE_CODE",), "group_code": ("GROUP_CODE",), "register": ("REGISTER",),
     "patient_list_type": ("PATIENT_LIST_TYPE",), "practice_list_size": ("PRACTICE_LIST_SIZE",)},
    ReferenceTable("qof_prevalence_raw", ("practice_code", "group_code", "patient_list_type")))
# Organisation names and parents: sub-ICB, ICB, region and CCG dimension tables, and the ONS
# CCG -> STP lookup. LAYOUTS lists the lowest level first: a sub-ICB or CCG table also has the
# columns of the levels above it.
ORG_NAMES_SUB_ICB = _reference(
    "organisation_names_sub_icb", "Sub-ICB locations with their ICB",
    {"org_code": ("SUB_ICB_LOCATION_CODE",), "org_name": ("SUB_ICB_LOCATION_NAME",), "parent_code": ("ICB_CODE",)},
    ReferenceTable("organisation_names", ("org_level", "org_code"), "sub_icb"))
ORG_NAMES_ICB = _reference(
    "organisation_names_icb", "ICBs with their region",
    {"org_code": ("ICB_CODE",), "org_name": ("ICB_NAME",), "parent_code": ("COMM_REGION_CODE",)},
    ReferenceTable("organisation_names", ("org_level", "org_code"), "icb"))
ORG_NAMES_REGION = _reference(
    "organisation_names_region", "NHS England commissioning regions",
    {"org_code": ("COMM_REGION_CODE",), "org_name": ("COMM_REGION_NAME",)},
    ReferenceTable("organisation_names", ("org_level", "org_code"), "region"))
ORG_NAMES_CCG = _reference(
    "organisation_names_ccg", "CCGs (the sub-ICB locations before July 2022) with their STP or area team",
    {"org_code": ("CCG_CODE",), "org_name": ("CCG_NAME",), "parent_code": ("STP_CODE", "AREA_TEAM_CODE_LS")},
    ReferenceTable("organisation_names", ("org_level", "org_code"), "sub_icb"), optional=("parent_code",))
ORG_NAMES_ONS_CCG = _reference(
    "organisation_names_ons_ccg_stp", "ONS CCG to STP lookup (CCG18CDH is the ODS code)",
    {"org_code": ("CCG18CDH",), "org_name": ("CCG18NM",), "parent_code": ("STP18CD",)},
    ReferenceTable("organisation_names", ("org_level", "org_code"), "sub_icb"))

ODS_COLUMNS = ("code", "name", "national_grouping", "high_level_health_geography", "address_1", "address_2",
               "address_3", "address_4", "address_5", "postcode", "open_date", "close_date", "status_code",
               "sub_type_code", "commissioner", "join_date", "left_date", "telephone", "null_19", "null_20",
               "null_21", "amended_record", "null_23", "provider_purchaser", "null_25", "prescribing_setting",
               "null_27")
ODS_RECORDS = Layout(
    name="ods_organisations", kind="reference",
    description="ODS organisation file (epraccur, eccg, eauth ...; no header, 27 quoted columns)",
    columns={name: () for name in ODS_COLUMNS}, reader="headerless", sniff=(r"[A-Z0-9]{1,12}",), n_fields=27)
REFERENCE_TABLES["ods_organisations"] = ReferenceTable("ods_organisations", ("code",))

LAYOUTS: tuple[Layout, ...] = (EPD, LEGACY_PDPI, QUINARY_LIST_SIZE, SINGLE_AGE_LIST_SIZE, NHSBSA_LIST_SIZE,
                               LSOA_LIST_SIZE_TOTALS, PRACTICE_MAP, SUPPLIED_TIDY, QOF_ACHIEVEMENT,
                               LEGACY_ADDR, LEGACY_CHEM, BNF_CODES, ADQ_VALUES, QOF_PREVALENCE_RAW,
                               QOF_PREVALENCE_PRACTICE,
                               QOF_PREVALENCE_CCG, ORG_NAMES_SUB_ICB, ORG_NAMES_CCG, ORG_NAMES_ONS_CCG,
                               ORG_NAMES_ICB, ORG_NAMES_REGION, ODS_RECORDS)


def csv_members(path: Path) -> list[str]:
    """The CSV members of a zip archive, in archive order."""
    with zipfile.ZipFile(path) as archive:
        return [m.filename for m in archive.infolist()
                if not m.is_dir() and m.filename.lower().endswith((".csv", ".txt"))]


def _open_binary(path: Path, member: str | None = None):
    if member is not None:
        return zipfile.ZipFile(path).open(member)
    if str(path).lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_header(path: Path, member: str | None = None) -> list[str]:
    """The first row of a CSV file (plain, gzip, or a zip ``member``), as a list of fields.

    Only the first record is decoded, so text that is not UTF-8 further down is reported by
    the reader at its own line, not here as a fault of the header.
    """
    raw = b""
    try:
        with _open_binary(Path(path), member) as handle:
            while True:  # a quoted name may hold a line break: read until the quotes balance
                line = handle.readline(1 << 20)
                raw += line
                if not line or raw.count(b'"') % 2 == 0 or len(raw) > (1 << 22):
                    break
        text = raw.decode("utf-8-sig")
        return next(csv.reader(io.StringIO(text, newline="")), [])
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: the first line holds bytes that are not UTF-8 text (byte 0x{raw[exc.start]:02X} at "
            f"position {exc.start + 1}): the file was saved in another encoding, probably Latin-1 or "
            "Windows-1252. Convert it to UTF-8 (e.g. iconv -f WINDOWS-1252 -t UTF-8) and run again.") from exc
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read the header row ({exc}).") from exc


def detect_layout(path: Path, kind: str, member: str | None = None) -> tuple[Layout, dict[str, int]]:
    """Find the layout of ``path`` (or of a zip ``member``) among the layouts of ``kind``.

    Raises
    ------
    ValueError
        Naming the file, the columns it has and the columns each layout of
        that kind expects.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: file not found.")
    header = read_header(path, member)
    candidates = [layout for layout in LAYOUTS if layout.kind == kind]
    for layout in candidates:
        columns = layout.match(header)
        if columns is not None:
            return layout, columns
    expected = "; ".join(f"{layout.description}: {layout.expected()}" for layout in candidates)
    where = f"{path} (member {member})" if member else str(path)
    shown = ", ".join(h.strip() for h in header[:30]) or "(none)"
    raise ValueError(
        f"{where}: the header does not match any known {kind.replace('_', ' ')} layout. "
        f"It has columns {shown}. Expected {expected}."
    )
