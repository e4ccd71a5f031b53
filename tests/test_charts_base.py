"""The chart object and the browser side of charts: datasets, specifications, HTML, shared files."""

from __future__ import annotations

import json
import re

import altair as alt
import pandas as pd
import pytest

from moopt.charts import web
from moopt.charts.base import (Chart, ChartData, compact_rows, empty_chart, expand_rows, json_records,
                               output_frame, script_json, spec_data_names, spec_from_altair)
from moopt.report import CHART_MODE_VARIABLE, chart_mode


def own_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "period": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"]),
        "org_code": ["A1B"] * 3,
        "value": [1.23456789, 22.5, float("nan")],
        "denominator": [1000, 2000, 3000],
    })


def all_rows() -> pd.DataFrame:
    return pd.DataFrame({"org_code": ["A1B", "C2D", "E3F"], "org_name": ["Alpha", "Beta </script>", "Gamma"],
                         "value": [1.0, 2.0, 3.0]})


def template() -> dict:
    own = alt.Chart(alt.NamedData(name="own")).mark_line().encode(x="period:T", y="value:Q")
    every = alt.Chart(alt.NamedData(name="every")).mark_point().encode(
        x="org_code:N", y="value:Q",
        shape=alt.condition("datum.org_code === org_code", alt.value("diamond"), alt.value("circle")))
    spec = spec_from_altair(alt.vconcat(own, every))
    spec["params"] = [{"name": "org_code", "value": ""}]
    return spec


def make_chart(code: str = "A1B", spec: dict | None = None) -> Chart:
    return Chart("X01_test", "A title", "How to read it.", "Alt text with <b>markup</b>.",
                 [ChartData("own", own_rows(), "this organisation's values"),
                  ChartData("every", all_rows(), "every organisation's values", shared_key="X01.sub_icb.values")],
                 spec if spec is not None else template(), params={"org_code": code})


def test_output_frame_rounds_to_six_significant_figures_and_writes_dates_as_days():
    out = output_frame(own_rows())
    assert out["period"].tolist() == ["2026-01-01", "2026-02-01", "2026-03-01"]
    assert out["value"].iloc[0] == 1.23457 and out["value"].iloc[1] == 22.5
    assert pd.isna(out["value"].iloc[2])
    assert out["denominator"].tolist() == [1000, 2000, 3000]  # integers untouched
    records = json_records(own_rows())
    assert records[0] == {"period": "2026-01-01", "org_code": "A1B", "value": 1.23457, "denominator": 1000}
    assert records[2]["value"] is None


def test_the_csv_download_holds_exactly_the_rows_the_chart_draws(tmp_path):
    chart = make_chart()
    path = chart.to_csv(tmp_path / "own.csv")
    from_csv = pd.read_csv(path, keep_default_na=True)
    drawn = pd.DataFrame(chart.page_spec(inline=True)["datasets"]["own"])
    assert from_csv["period"].tolist() == drawn["period"].tolist()
    assert from_csv["value"].fillna(-1).tolist() == drawn["value"].fillna(-1).tolist()


def test_script_json_cannot_end_a_script_element():
    text = script_json({"name": "</script><script>alert(1)</script>", "x": "\u2028"})
    assert "</script" not in text and "<" not in text
    assert json.loads(text)["name"] == "</script><script>alert(1)</script>"


def test_a_chart_must_carry_every_dataset_its_specification_reads():
    with pytest.raises(ValueError, match="reads dataset"):
        Chart("X01_test", "t", "c", "a", [ChartData("own", own_rows(), "rows")], template())
    with pytest.raises(ValueError, match="unique"):
        Chart("X01_test", "t", "c", "a", [ChartData("own", own_rows(), "rows")] * 2, None)
    with pytest.raises(ValueError, match="safe for a file name"):
        Chart("../x", "t", "c", "a", [ChartData("own", own_rows(), "rows")], None)
    assert spec_data_names(template()) == {"own", "every"}


def test_page_spec_sets_parameters_and_description_without_changing_the_template():
    spec = template()
    before = json.dumps(spec, sort_keys=True)
    chart_a, chart_b = make_chart("A1B", spec), make_chart("C2D", spec)
    page_a = chart_a.page_spec(inline=False)
    assert page_a["params"] == [{"name": "org_code", "value": "A1B"}]
    assert chart_b.page_spec(inline=False)["params"] == [{"name": "org_code", "value": "C2D"}]
    assert page_a["description"] == "Alt text with <b>markup</b>."
    assert set(page_a["datasets"]) == {"own"}  # the shared rows come from the site's script file
    assert set(chart_a.page_spec(inline=True)["datasets"]) == {"own", "every"}
    assert json.dumps(spec, sort_keys=True) == before


def test_full_spec_is_valid_vega_lite_with_a_fixed_width():
    spec = make_chart().full_spec(width=640)
    assert web.validate_spec(spec) == []
    assert "container" not in json.dumps(spec)
    assert web.validate_spec({"mark": "no-such-mark"}) != []


def test_html_of_a_site_chart_loads_its_shared_data_and_escapes_text():
    chart = make_chart()
    page = chart.to_html([("csv/x/own.csv", "this organisation's values")],
                         {"X01.sub_icb.values": "csv/shared/X01.sub_icb.values.abc.js"})
    assert page.index('<script src="csv/shared/X01.sub_icb.values.abc.js"></script>') < page.index("<figure")
    assert "<b>markup</b>" not in page and "&lt;b&gt;markup&lt;/b&gt;" in page
    spec_text = re.search(r'<script type="application/json" class="moopt-vega-spec">(.*?)</script>',
                          page, re.S).group(1)
    assert json.loads(spec_text)["params"] == [{"name": "org_code", "value": "A1B"}]
    assert expand_rows(json.loads(spec_text)["datasets"]["own"]) == json_records(own_rows())
    shared = re.search(r'data-moopt-shared="([^"]*)"', page).group(1)
    assert json.loads(shared.replace("&quot;", '"')) == {"every": "X01.sub_icb.values"}
    assert 'href="csv/x/own.csv" download' in page
    with pytest.raises(ValueError, match="No script file"):
        chart.to_html([], {})
    with pytest.raises(ValueError, match="scheme"):
        chart.to_html([("javascript:alert(1)", "x")], {"X01.sub_icb.values": "a.js"})


def test_an_empty_chart_has_no_specification_and_says_why():
    chart = empty_chart("X01_practices", "Practices", "no member practices in the period", own_rows())
    page = chart.to_html([("csv/x.csv", "the (empty) data")])
    assert chart.spec is None and chart.data.empty and list(chart.data.columns) == list(own_rows().columns)
    assert "moopt-vega" not in page and "No data for this selection" in page


def test_shared_datasets_are_written_once_under_a_name_carrying_their_digest(tmp_path):
    chart = make_chart()
    shared = chart.dataset("every")
    js_rel, csv_rel = web.write_shared_dataset(tmp_path, shared)
    assert js_rel.startswith("csv/shared/X01.sub_icb.values.") and js_rel.endswith(".js")
    assert web.write_shared_dataset(tmp_path, shared) == (js_rel, csv_rel)
    text = (tmp_path / js_rel).read_text(encoding="utf-8")
    payload = text[text.index("]=") + 2:].rstrip().rstrip(";")
    assert expand_rows(json.loads(payload)) == json_records(all_rows())
    assert "</script" not in text
    assert pd.read_csv(tmp_path / csv_rel)["org_name"].tolist() == all_rows()["org_name"].tolist()
    changed = ChartData("every", all_rows().assign(value=[9.0, 8.0, 7.0]), "rows", shared_key="X01.sub_icb.values")
    assert web.write_shared_dataset(tmp_path, changed)[0] != js_rel  # a cached page's file is never overwritten
    with pytest.raises(ValueError, match="not shared"):
        web.write_shared_dataset(tmp_path, chart.dataset("own"))


def test_chart_assets_are_the_vega_bundle_and_the_page_script_with_the_shared_look(tmp_path):
    cache = tmp_path / "cache"
    bundle, script = web.write_chart_assets(tmp_path / "assets", cache_dir=cache)
    assert "vegaEmbed" in bundle.read_text(encoding="utf-8")
    page_script = script.read_text(encoding="utf-8")
    assert "__MOOPT_VEGA_CONFIG__" not in page_script and '"labelFontSize":12' in page_script
    assert len(list(cache.glob("vega-*.js"))) == 1
    again = web.write_chart_assets(tmp_path / "again", cache_dir=cache)
    assert again[0].read_text(encoding="utf-8") == bundle.read_text(encoding="utf-8")


def test_a_notebook_gets_the_scripts_once_per_kernel(monkeypatch):
    monkeypatch.setattr(web, "_NOTEBOOK_SCRIPTS_SENT", False)
    first, second = make_chart()._repr_html_(), make_chart()._repr_html_()
    assert "vegaEmbed" in first and "vegaEmbed" not in second
    assert '"every":{"columns"' in second.replace(" ", "")  # in a notebook the shared rows travel inline


def test_chart_mode_comes_from_the_runner_and_rejects_unknown_values(monkeypatch):
    monkeypatch.delenv(CHART_MODE_VARIABLE, raising=False)
    assert chart_mode() == "notebook"
    monkeypatch.setenv(CHART_MODE_VARIABLE, "site+svg")
    assert chart_mode() == "site+svg"
    monkeypatch.setenv(CHART_MODE_VARIABLE, "png")
    with pytest.raises(ValueError, match="not a chart mode"):
        chart_mode()


def test_the_static_copy_is_an_svg_of_the_same_specification():
    svg = make_chart().to_svg(width=480)
    assert svg.lstrip().startswith("<svg") and "Gamma" not in svg  # axis shows codes, not names
    assert "E3F" in svg


def test_compact_rows_give_the_records_back_and_state_constant_columns_once():
    records = json_records(own_rows())
    compact = compact_rows(records)
    assert compact["constants"] == {"org_code": "A1B"} and "org_code" not in compact["columns"]
    assert expand_rows(compact) == records
    assert expand_rows(compact_rows([])) == [] and expand_rows(compact_rows(records[:1])) == records[:1]
    assert len(script_json(compact)) < len(script_json(records))


def test_a_site_page_carries_only_its_part_when_the_template_is_shared(tmp_path):
    spec = template()
    digest, rel = web.write_shared_template(tmp_path, spec)
    assert web.write_shared_template(tmp_path, spec) == (digest, rel)  # written once
    assert web.write_shared_template(tmp_path, template())[0] == digest  # same content, same file
    text = (tmp_path / rel).read_text(encoding="utf-8")
    assert json.loads(text[text.index("]=") + 2:].rstrip().rstrip(";")) == spec
    chart = make_chart("A1B", spec)
    page = chart.to_html([], {"X01.sub_icb.values": "a.js"}, template=(digest, rel))
    part = json.loads(re.search(r'class="moopt-vega-spec">(.*?)</script>', page, re.S).group(1))
    assert set(part) == {"description", "params", "datasets"}  # no marks or encodings repeated per page
    assert f'data-moopt-template="{digest}"' in page and f'<script src="{rel}"></script>' in page
    merged = {**spec, **part, "datasets": {k: expand_rows(v) for k, v in part["datasets"].items()}}
    merged["datasets"]["every"] = json_records(all_rows())
    assert web.validate_spec(merged) == []


def test_chart_csv_download_cannot_carry_a_spreadsheet_formula(tmp_path):
    rows = all_rows().assign(org_name=["=HYPERLINK(\"http://x\")", "-1.5", "Plain $x^2$ name"])
    chart = Chart("X01_csv", "t", "c", "a", [ChartData("every", rows, "rows")], None)
    written = pd.read_csv(chart.to_csv(tmp_path / "every.csv"), dtype=str)
    assert written["org_name"].tolist() == ["'=HYPERLINK(\"http://x\")", "-1.5", "Plain $x^2$ name"]
    # The chart itself draws the name as written: JSON carries text, never a formula or markup.
    assert json_records(rows)[0]["org_name"] == "=HYPERLINK(\"http://x\")"
