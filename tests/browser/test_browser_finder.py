"""The organisation finder in every page header: type, choose, arrive."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]


def finder_entries(built_site: dict) -> list[dict]:
    text = (built_site["site"] / "assets" / "finder-index.js").read_text(encoding="utf-8")
    match = re.search(r"window\.MOOPT_FINDER_INDEX = (\{.*\});\s*\Z", text, re.S)
    assert match, "assets/finder-index.js does not set window.MOOPT_FINDER_INDEX"
    return json.loads(match.group(1))["organisations"]


def distinctive_part(name: str, others: list[str]) -> str:
    """A lower-case word of ``name`` that no other organisation's name contains."""
    for word in re.findall(r"[A-Za-z]{5,}", name):
        if not any(word.lower() in other.lower() for other in others):
            return word.lower()[1:-1]  # part of a word, not the whole of it
    raise AssertionError(f"no word of {name!r} tells it apart from {others}")


def test_the_index_lists_every_organisation_page(built_site):
    entries = finder_entries(built_site)
    # every organisation with a page: the run's sub-ICB locations, and their ICBs and regions
    pages = {(p.parent.parent.name, p.parent.name) for p in (built_site["site"] / "orgs").glob("*/*/index.html")}
    assert {(e["level"], e["code"]) for e in entries} == pages
    assert set(built_site["codes"]) <= {e["code"] for e in entries}
    assert {e["level"] for e in entries} == {"region", "icb", "sub_icb"}
    for entry in entries:
        assert (built_site["site"] / entry["url"]).is_file(), entry
        assert entry["name"] and entry["level_label"]
        assert entry["url"] == f"orgs/{entry['level']}/{entry['code']}/index.html"


def test_type_part_of_a_name_choose_it_and_land_on_its_page(page, built_site, site_url):
    entries = finder_entries(built_site)
    target = entries[-1]
    part = distinctive_part(target["name"], [e["name"] for e in entries if e is not target])
    page.goto(site_url + "index.html")
    box = page.get_by_role("combobox", name="Find an organisation")
    box.click()
    box.press_sequentially(part, delay=20)
    option = page.get_by_role("option").filter(has_text=target["name"])
    option.wait_for()
    assert page.get_by_role("option").count() == 1, "a distinctive part of one name matched others"
    assert box.get_attribute("aria-expanded") == "true"
    option.click()
    page.wait_for_url(re.compile(re.escape(target["url"]) + "$"))
    assert page.locator("h1").inner_text().startswith(target["name"])


def test_the_finder_works_by_keyboard_from_a_deep_page_and_by_code(page, built_site, site_url):
    code = built_site["codes"][0]
    other = built_site["codes"][1]
    page.goto(site_url + f"orgs/{built_site['level']}/{other}/summary.html")
    box = page.get_by_role("combobox", name="Find an organisation")
    box.focus()
    page.keyboard.type(code.lower())
    page.get_by_role("option").first.wait_for()
    page.keyboard.press("ArrowDown")
    active = box.get_attribute("aria-activedescendant")
    assert active and page.locator(f"#{active}").get_attribute("aria-selected") == "true"
    assert code in page.locator(f"#{active}").inner_text()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(re.escape(f"orgs/{built_site['level']}/{code}/index.html") + "$"))


def test_no_match_is_announced_and_escape_closes(page, site_url):
    page.goto(site_url + "about.html")
    box = page.get_by_role("combobox", name="Find an organisation")
    box.fill("zzzz no such organisation")
    status = page.locator(".moopt-finder [aria-live]")
    assert status.inner_text() == "No organisation matches."
    assert page.get_by_role("option").count() == 0 and box.get_attribute("aria-expanded") == "false"
    box.fill("NHS")
    page.get_by_role("option").first.wait_for()
    box.press("Escape")
    assert box.get_attribute("aria-expanded") == "false"
    assert page.locator("#moopt-finder-results").is_hidden()


def test_the_finder_works_from_the_file_system(page, built_site):
    """file:// pages cannot fetch() local files; the index is a script, so the finder still works."""
    entries = finder_entries(built_site)
    target = entries[0]
    page.goto((built_site["site"] / "themes" / "index.html").as_uri())
    box = page.get_by_role("combobox", name="Find an organisation")
    box.fill(target["code"])
    page.get_by_role("option").filter(has_text=target["name"]).click()
    page.wait_for_url(re.compile(re.escape(target["url"]) + "$"))
    assert page.url.startswith("file://")
