"""The static JSON file API: a file per organisation and per indicator under ``api/v1/``.

The site is the small one of tests/test_site.py (two sub-ICB pages, built-in renderer)
over a store written as tests/test_site_downloads.py writes it, plus trends and SPC
series, so no notebook runs. Every number is checked against the bulk CSV of the same
build.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from test_site import make_outputs
from test_site_downloads import result_row, write_store

from moopt.atomic import write_atomic
from moopt.site import build_site, check_links
from moopt.site import file_api
from moopt.site.downloads import LATEST_CSV_FILE, STORE_FILE
from moopt.tables import TABLES

ROOT = Path(__file__).resolve().parents[1]
API = file_api.API_DIR
DOUBLE_COLUMNS = [c.name for c in TABLES["indicator_results"].columns if c.type == "DOUBLE"]
PARENTS = {"A1B": ("QAB", "Y60"), "X9Z": ("QXY", "Y56")}


def hierarchy_rows(indicator_id: str = "AMR01", **extra) -> list[dict]:
    """One indicator at every level: England, 2 regions, 2 ICBs, the site's 2 sub-ICBs, a PCN, 2 practices."""
    def row(level, code, value, **more):
        return result_row(code, value, indicator_id=indicator_id, org_level=level, org_name=f"{level} {code}",
                          england_value=1.5, lowest=0.5, decile_10=0.6, decile_50=1.2, decile_90=2.25,
                          highest=3.0, quartile_25=0.9, quartile_75=1.9, **{**extra, **more})
    rows = [row("england", "ENG", 1.5, not_compared_reason="England is the benchmark.")]
    for sub_icb, (icb, region) in PARENTS.items():
        rows += [row("region", region, 1.4, comparison_99_8="similar", assessment_99_8="similar"),
                 row("icb", icb, 1.6, region_code=region, comparison_99_8="higher", assessment_99_8="worse")]
    rows += [
        row("sub_icb", "A1B", 0.000123456789, icb_code="QAB", region_code="Y60", lower_95=0.0001, upper_95=0.0002,
            comparison_99_8="lower", assessment_99_8="better"),
        row("sub_icb", "X9Z", 2.5, icb_code="QXY", region_code="Y56", lower_95=2.1, upper_95=2.9,
            comparison_99_8="similar", assessment_99_8="similar"),
        row("pcn", "U1", 1.0, sub_icb_code="A1B", icb_code="QAB", region_code="Y60"),
        row("practice", "P1", 1.1, pcn_code="U1", sub_icb_code="A1B", icb_code="QAB", region_code="Y60"),
        row("practice", "P2", None, pcn_code="U1", sub_icb_code="A1B", icb_code="QAB", region_code="Y60",
            not_compared_reason="No value for this period (no denominator, or too few months)."),
    ]
    return rows


def add_series_tables(store: Path) -> None:
    """trends and spc_series rows for the sub-ICB locations, as the results stage stores them."""
    with duckdb.connect(str(store)) as con:
        con.execute("CREATE TABLE trends (indicator_id VARCHAR, org_level VARCHAR, org_code VARCHAR, "
                    "trend_points BIGINT, change_per_year DOUBLE, change_per_year_lower DOUBLE, "
                    "change_per_year_upper DOUBLE, seasonal_terms BOOLEAN, recent_trend VARCHAR)")
        con.execute("INSERT INTO trends VALUES ('AMR01', 'sub_icb', 'A1B', 24, -0.0312345678, -0.05, -0.0123, "
                    "false, 'no significant change')")
        con.execute("CREATE TABLE spc_series (indicator_id VARCHAR, org_level VARCHAR, org_code VARCHAR, "
                    "period_type VARCHAR, last_period DATE, variation_icon VARCHAR, spc_points BIGINT, "
                    "spc_trial_limits BOOLEAN)")
        con.execute("INSERT INTO spc_series VALUES ('AMR01', 'sub_icb', 'A1B', 'month', DATE '2026-09-01', "
                    "'improvement_low', 24, false)")


def make_site(root: Path, rows: list[dict] | None = None, **store_options) -> tuple[Path, dict]:
    out, _ = make_outputs(root)
    rows = rows if rows is not None else [*hierarchy_rows(), *hierarchy_rows("OPI01")]
    store = write_store(out, rows, **store_options)
    add_series_tables(store)
    with duckdb.connect(str(store)) as con:  # numbers JSON cannot hold: they must become null
        con.execute("UPDATE indicator_results SET upper_95 = 'inf'::DOUBLE, lower_95 = 'nan'::DOUBLE "
                    "WHERE org_code = 'U1'")
    result = build_site(out, renderer="builtin")
    return out, result


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out, result = make_site(tmp_path_factory.mktemp("file_api"))
    return out, result


def load(path: Path):
    def refuse(constant):
        raise AssertionError(f"{path}: {constant} is not JSON")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def api_files(site: Path) -> list[Path]:
    return sorted(p for p in (site / API).rglob("*.json"))


def csv_rows(site: Path) -> list[dict]:
    with open(site / LATEST_CSV_FILE, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def same_number(csv_cell: str, json_value) -> bool:
    """A CSV cell and a JSON number hold the same value (JSON null for empty or non-finite cells)."""
    if csv_cell == "" or not math.isfinite(float(csv_cell)):
        return json_value is None
    return json_value is not None and float(csv_cell) == json_value


def test_every_organisation_and_indicator_page_has_its_file(built):
    out, result = built
    site = result["site_dir"]
    org_pages = sorted(site.glob("orgs/*/*/index.html"))
    indicator_pages = sorted(site.glob("indicators/*/*.html"))
    assert org_pages and indicator_pages
    for page in org_pages:
        level, code = page.parent.parent.name, page.parent.name
        document = load(site / API / file_api.organisation_file(level, code))
        assert document["organisation"]["page"] == page.relative_to(site).as_posix()
    for page in indicator_pages:
        document = load(site / API / file_api.indicator_file(page.parent.name, page.stem))
        assert document["page"] == page.relative_to(site).as_posix()
    assert result["file_api"].files == len(api_files(site))


def test_values_equal_the_bulk_csv_rows(built):
    _, result = built
    site = result["site_dir"]
    rows = csv_rows(site)
    assert rows
    seen = 0
    for row in rows:
        level, code, indicator_id = row["org_level"], row["org_code"], row["indicator_id"]
        org_file = site / API / file_api.organisation_file(level, code)
        if level == "practice":  # this run has no practice pages: practices stay out (as in the CSV)
            assert not org_file.exists()
            continue
        [entry] = [e for e in load(org_file)["indicators"] if e["id"] == indicator_id]
        in_indicator_file = None
        if level != "england":
            document = load(site / API / file_api.indicator_file(level, indicator_id))
            [in_indicator_file] = [o for o in document["organisations"] if o["code"] == code]
            assert document["period"] == row["period"] and document["period_type"] == row["period_type"]
        assert (entry["period"], entry["period_type"]) == (row["period"], row["period_type"])
        for found in filter(None, (entry, in_indicator_file)):
            for column in file_api.ROW_NUMBERS:
                assert same_number(row[column], found[column]), (code, indicator_id, column, row[column])
            for column in file_api.ROW_VERDICT:
                assert (row[column] or None) == found[column], (code, indicator_id, column)
        seen += 1
    assert seen == sum(1 for r in rows if r["org_level"] != "practice")
    # the CSV's rounding: 0.000123456789 is 0.000123457 in both
    amr = load(site / API / file_api.organisation_file("sub_icb", "A1B"))["indicators"][0]
    assert amr["id"] == "AMR01" and amr["value"] == 0.000123457 and amr["numerator"] == 12345679.0


def test_no_nan_in_any_file_and_non_finite_numbers_are_null(built):
    _, result = built
    site = result["site_dir"]
    for path in api_files(site):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\b(NaN|Infinity)\b", text), path
        load(path)
    pcn = load(site / API / file_api.organisation_file("pcn", "U1"))["indicators"][0]
    assert pcn["lower_95"] is None and pcn["upper_95"] is None and pcn["value"] == 1.0


def test_index_lists_every_file_and_its_links_resolve(built):
    _, result = built
    site = result["site_dir"]
    index = load(site / API / file_api.INDEX_FILE)
    assert index["schema_version"] == file_api.SCHEMA_VERSION
    assert index["run"]["period_end"] == "2026-09-01" and index["run"]["results_key"] == "key-1"
    assert [level["level"] for level in index["levels"]] == ["england", "region", "icb", "sub_icb", "pcn"]
    listed = {file_api.INDEX_FILE} | {o["file"] for o in index["organisations"]}
    listed |= {f for i in index["indicators"] for f in i["files"].values()}
    on_disk = {p.relative_to(site / API).as_posix() for p in api_files(site)}
    assert listed == on_disk
    assert [i["id"] for i in index["indicators"]] == ["AMR01", "OPI01"]
    assert index["indicators"][0]["themes"] == [{"id": "antimicrobials", "title": "Antimicrobial stewardship"}]
    for path in api_files(site):
        document = load(path)
        links = []

        def collect(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key in ("file", "page") and value is not None:
                        links.append((key, value))
                    elif key == "files":
                        links.extend(("file", v) for v in value.values())
                    elif key == "pages":
                        links.extend(("page", v) for v in value.values() if v is not None)
                    else:
                        collect(value)
            elif isinstance(node, list):
                for item in node:
                    collect(item)
        collect(document)
        for kind, link in links:
            target = site / API / link if kind == "file" else site / link
            assert target.is_file(), f"{path.name}: {kind} {link} does not exist"


def test_parents_children_trend_and_spc(built):
    _, result = built
    site = result["site_dir"]
    sub_icb = load(site / API / file_api.organisation_file("sub_icb", "A1B"))
    assert sub_icb["organisation"]["parent"] == {"level": "icb", "code": "QAB", "name": "icb QAB",
                                                 "file": "organisations/icb/QAB.json"}
    assert sub_icb["organisation"]["children"] == [{"level": "pcn", "code": "U1", "name": "pcn U1",
                                                   "file": "organisations/pcn/U1.json"}]
    # practices have no files in this run, but a PCN still names its practices
    pcn = load(site / API / file_api.organisation_file("pcn", "U1"))["organisation"]
    assert [(c["code"], c["file"]) for c in pcn["children"]] == [("P1", None), ("P2", None)]
    england = load(site / API / file_api.organisation_file("england", "ENG"))["organisation"]
    assert england["parent"] is None and [c["code"] for c in england["children"]] == ["Y56", "Y60"]
    amr = sub_icb["indicators"][0]
    assert amr["trend"] == {"trend_points": 24, "change_per_year": -0.0312346, "change_per_year_lower": -0.05,
                            "change_per_year_upper": -0.0123, "recent_trend": "no significant change"}
    assert amr["spc"] == {"variation_icon": "improvement_low", "last_period": "2026-09-01", "spc_points": 24,
                          "spc_trial_limits": False}
    assert amr["verdict"] == "better: lower than England"
    assert sub_icb["indicators"][1]["id"] == "OPI01" and sub_icb["indicators"][1]["trend"] is None
    indicator = load(site / API / file_api.indicator_file("sub_icb", "AMR01"))
    assert indicator["distribution"] == {
        "organisations": 2, "organisations_with_value": 2, "england_value": 1.5, "lowest": 0.5, "decile_10": 0.6,
        **{f"decile_{d}": None for d in (20, 30, 40)}, "decile_50": 1.2,
        **{f"decile_{d}": None for d in (60, 70, 80)}, "decile_90": 2.25, "highest": 3.0,
        "quartile_25": 0.9, "quartile_75": 1.9}
    assert [o["code"] for o in indicator["organisations"]] == ["A1B", "X9Z"]
    assert not (site / API / file_api.indicator_file("england", "AMR01")).exists()


def test_the_api_page_documents_the_files_and_every_link_resolves(built):
    out, result = built
    site = result["site_dir"]
    downloads = (site / "downloads.html").read_text(encoding="utf-8")
    assert 'href="api.html"' in downloads and f'href="{API}/index.json"' in downloads
    page = (site / "api.html").read_text(encoding="utf-8")
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert "Practices have no files: this run's pages do not include practices." in text
    for file, fields in file_api.FIELDS:
        for name, *_ in fields:
            assert name in text, (file, name)
    assert "pd.json_normalize" in text and "curl" in text and "urllib.request" in text
    assert check_links(site) == [] and result["broken_links"] == []


def test_docs_file_api_md_is_generated_from_the_schema():
    assert (ROOT / "docs/file-api.md").read_text(encoding="utf-8") == file_api.docs_markdown(), (
        "docs/file-api.md is stale: run `python -m moopt.site.file_api > docs/file-api.md`")
    assert "docs/file-api.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_documented_field_is_in_the_files_and_every_field_is_documented(built):
    _, result = built
    site = result["site_dir"]
    # Fields documented as a whole (maps keyed by level, small reference objects).
    opaque = {"files", "pages", "themes", "parent", "children", "indicator"}

    def leaves(node, prefix: str) -> set[str]:
        """Dotted names of a document's fields, "[]" marking list items, as FIELDS names them."""
        found = set()
        for key, value in node.items():
            name = prefix + key
            if isinstance(value, list):
                if key in opaque or not value:
                    found.add(name + "[]")
                for item in value if key not in opaque else ():
                    found |= leaves(item, name + "[].")
            elif isinstance(value, dict) and key not in opaque:
                found |= leaves(value, name + ".")
            else:
                found.add(name)
        return found

    samples = {file_api.INDEX_FILE: file_api.INDEX_FILE,
               "organisations/<level>/<code>.json": file_api.organisation_file("sub_icb", "A1B"),
               "indicators/<level>/<ID>.json": file_api.indicator_file("sub_icb", "AMR01")}
    for file, fields in file_api.FIELDS[1:]:
        documented = {name for name, *_ in fields}
        containers = {n for n in documented if any(m.startswith(n + ".") for m in documented)}
        found = leaves(load(site / API / samples[file]), "") - {"schema_version"}
        # a null trend or spc is a leaf here, its fields documented beneath it
        assert found - containers == documented - containers, (file, sorted(found ^ documented))


def test_practice_files_only_when_the_pages_include_practices(tmp_path):
    store = write_store(tmp_path, hierarchy_rows())
    without = file_api.write_file_api(store, tmp_path / "a")
    with_practices = file_api.write_file_api(store, tmp_path / "b", page_levels={"practice", "sub_icb"})
    assert "practice" not in without.levels and "practice" in with_practices.levels
    assert not (tmp_path / "a" / API / "organisations/practice").exists()
    practice = load(tmp_path / "b" / API / file_api.organisation_file("practice", "P2"))
    assert practice["organisation"]["parent"]["code"] == "U1"
    assert practice["indicators"][0]["value"] is None
    assert practice["indicators"][0]["verdict"].startswith("not compared: no value for this period")
    pcn = load(tmp_path / "b" / API / file_api.organisation_file("pcn", "U1"))["organisation"]
    assert [c["file"] for c in pcn["children"]] == ["organisations/practice/P1.json",
                                                    "organisations/practice/P2.json"]
    # a practice-level run has practice files (as its downloads have practice rows)
    store = write_store(tmp_path, hierarchy_rows(), org_level="practice")
    assert "practice" in file_api.write_file_api(store, tmp_path / "c").levels


def test_identical_results_give_identical_files_and_are_reused(tmp_path):
    store = write_store(tmp_path, hierarchy_rows(), results_key="first")
    first = file_api.write_file_api(store, tmp_path / "one", title="T")
    second = file_api.write_file_api(store, tmp_path / "two", title="T")
    again = file_api.write_file_api(store, tmp_path / "three", title="T", previous_site=tmp_path / "two")
    assert not first.reused and not second.reused and again.reused and again == file_api.FileApi(
        first.levels, first.organisation_files, first.indicator_files, first.bytes, reused=True)

    def contents(folder: Path) -> dict:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in (folder / API).rglob("*") if p.is_file()}
    assert contents(tmp_path / "one") == contents(tmp_path / "two") == contents(tmp_path / "three")
    # another title, or other results, are written again
    assert not file_api.write_file_api(store, tmp_path / "four", title="U", previous_site=tmp_path / "two").reused
    rows = hierarchy_rows()
    [pcn] = [r for r in rows if r["org_code"] == "U1"]
    pcn["value"] = 9.0
    store = write_store(tmp_path, rows, results_key="second")
    changed = file_api.write_file_api(store, tmp_path / "five", title="T", previous_site=tmp_path / "two")
    assert not changed.reused
    assert load(tmp_path / "five" / API / file_api.indicator_file("pcn", "AMR01"))["organisations"][0]["value"] == 9.0


def test_a_crash_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    store = write_store(tmp_path, hierarchy_rows())
    real = file_api.write_text_atomic
    calls = []

    def crashing(path, text, durable=True):
        calls.append(path)
        if len(calls) == 4:  # the fourth file: half of it reaches its temporary file, then the crash
            def half(stream):
                stream.write(text[: len(text) // 2])
                raise OSError("disk full")
            return write_atomic(path, half, durable=durable)
        return real(path, text, durable=durable)

    monkeypatch.setattr(file_api, "write_text_atomic", crashing)
    with pytest.raises(OSError, match="disk full"):
        file_api.write_file_api(store, tmp_path / "site")
    written = [p for p in (tmp_path / "site").rglob("*") if p.is_file()]
    assert len(written) == 3 and not calls[3].exists()
    assert all(p.suffix == ".json" and not p.name.startswith(".") for p in written)  # no temporary left
    for path in written:
        load(path)


def test_a_crash_in_the_file_api_leaves_the_previous_site(tmp_path, monkeypatch):
    out, _ = make_site(tmp_path)
    before = {p.relative_to(out / "site"): p.read_bytes() for p in (out / "site").rglob("*") if p.is_file()}
    shutil.rmtree(out / "site" / API)  # so that the next build cannot reuse the files
    (out / "site" / API).mkdir(parents=True)
    before = {k: v for k, v in before.items() if not k.as_posix().startswith(API)}

    def crashing(*args, **kwargs):
        raise RuntimeError("file API crashed")

    monkeypatch.setattr(file_api, "_dumps", crashing)
    with pytest.raises(RuntimeError, match="file API crashed"):
        build_site(out, renderer="builtin")
    after = {p.relative_to(out / "site"): p.read_bytes() for p in (out / "site").rglob("*") if p.is_file()}
    assert after == before
    assert not list(out.glob("site.tmp-*")) and not list(out.glob("site.old-*"))


def test_without_a_store_there_are_no_files(tmp_path):
    out, _ = make_outputs(tmp_path)
    result = build_site(out, renderer="builtin")
    assert result["file_api"] is None and not (result["site_dir"] / API).exists()
    assert file_api.write_file_api(out / STORE_FILE, tmp_path / "site") is None
