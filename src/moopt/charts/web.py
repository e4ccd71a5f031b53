"""What a browser needs to draw moopt's charts, and where shared chart data are stored.

* :func:`write_chart_assets` writes the two scripts every page loads: vega-embed
  with Vega and Vega-Lite, bundled from the vl-convert-python wheel (nothing is
  fetched from a CDN when a page is viewed, so the site works offline and from
  ``file://``), and moopt's own page script (``assets/moopt-charts.js``), which
  draws each chart from its specification.
* :func:`write_shared_dataset` stores a dataset that every organisation's page
  shows once, as a CSV for readers and a script file for charts; both names
  carry a digest of the rows, so pages running in parallel write identical
  files and a changed dataset never overwrites one a cached page still uses.
* :func:`notebook_scripts` gives a notebook (JupyterLab, VS Code) the same two
  scripts inline, once per kernel, so the same charts draw there.
* :func:`validate_spec` checks a specification against the Vega-Lite schema.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from moopt.atomic import write_csv_atomic, write_text_atomic
from moopt.charts.base import (ChartData, compact_rows, script_json, vega_lite_version,
                               VEGA_CONFIG)

VEGA_BUNDLE_FILE = "vega.js"
PAGE_SCRIPT_FILE = "moopt-charts.js"
SHARED_FOLDER = "csv/shared"  # under the outputs folder, published with the other downloads


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """vega-embed, Vega and Vega-Lite as one plain script (sets ``window.vegaEmbed``)."""
    import vl_convert

    return vl_convert.javascript_bundle(vl_version=vega_lite_version())


def page_script() -> str:
    """moopt's page script, with the shared chart look (:data:`VEGA_CONFIG`) filled in."""
    source = resources.files("moopt.charts").joinpath("assets", PAGE_SCRIPT_FILE).read_text("utf-8")
    return source.replace("__MOOPT_VEGA_CONFIG__", script_json(VEGA_CONFIG))


def bundle_version() -> str:
    """Versions that decide the bundle's content (for cache keys and the site's footer)."""
    import vl_convert

    return f"vega-lite {vega_lite_version()}, vega-embed {vl_convert.get_vega_embed_version()}"


def write_chart_assets(folder: Path, cache_dir: Path | None = None) -> list[Path]:
    """Write ``vega.js`` and ``moopt-charts.js`` into ``folder``; return their paths.

    Building the bundle takes about a second; with ``cache_dir`` it is built once per
    vl-convert and Vega-Lite version and copied afterwards.
    """
    folder = Path(folder)
    bundle_text = None
    if cache_dir is not None:
        digest = hashlib.sha256(bundle_version().encode()).hexdigest()[:16]
        cached = Path(cache_dir) / f"vega-{digest}.js"
        if cached.is_file():
            bundle_text = cached.read_text(encoding="utf-8")
        else:
            bundle_text = vega_bundle()
            write_text_atomic(cached, bundle_text)
    bundle = write_text_atomic(folder / VEGA_BUNDLE_FILE, bundle_text or vega_bundle())
    script = write_text_atomic(folder / PAGE_SCRIPT_FILE, page_script())
    return [bundle, script]


def dataset_digest(records_json: str) -> str:
    return hashlib.sha256(records_json.encode("utf-8")).hexdigest()[:12]


def write_shared_dataset(outputs_dir: Path, dataset: ChartData) -> tuple[str, str]:
    """Store a shared dataset once; return its script and CSV paths relative to ``outputs_dir``.

    The files are ``csv/shared/<key>.<digest>.js`` (which sets
    ``window.MOOPT_DATA[key]``) and the matching ``.csv``. When they exist already
    (another page wrote the same rows) nothing is written.
    """
    if dataset.shared_key is None:
        raise ValueError(f"Dataset {dataset.name!r} is not shared (it has no shared_key).")
    records = script_json(compact_rows(dataset.records()))
    stem = f"{SHARED_FOLDER}/{dataset.shared_key}.{dataset_digest(records)}"
    js_rel, csv_rel = f"{stem}.js", f"{stem}.csv"
    js_path, csv_path = Path(outputs_dir) / js_rel, Path(outputs_dir) / csv_rel
    if not csv_path.is_file():
        write_csv_atomic(dataset.output(), csv_path, durable=False)
    if not js_path.is_file():  # written last: its presence means both files are complete
        key = script_json(dataset.shared_key)
        write_text_atomic(js_path, f"(window.MOOPT_DATA=window.MOOPT_DATA||{{}})[{key}]={records};\n",
                          durable=False)
    return js_rel, csv_rel


# Templates already written by this process: id -> (template, digest). The template is kept
# so that its id cannot be reused by another object while the entry exists.
_TEMPLATE_DIGESTS: dict[int, tuple[dict, str]] = {}


def write_shared_template(outputs_dir: Path, template: dict) -> tuple[str, str]:
    """Store a chart's specification template once; return its digest and script path.

    Every organisation's chart of one indicator, level and period type has the same
    template (organisations differ only in parameters and data), so a site stores
    it once as ``csv/shared/spec.<digest>.js`` (setting ``window.MOOPT_SPECS[digest]``)
    and pages carry only their own part.
    """
    known = _TEMPLATE_DIGESTS.get(id(template))
    if known is None or known[0] is not template:
        text = script_json(template)
        known = (template, hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])
        _TEMPLATE_DIGESTS[id(template)] = known
    else:
        text = None
    digest = known[1]
    rel = f"{SHARED_FOLDER}/spec.{digest}.js"
    path = Path(outputs_dir) / rel
    if not path.is_file():
        text = text if text is not None else script_json(template)
        write_text_atomic(path, f"(window.MOOPT_SPECS=window.MOOPT_SPECS||{{}})[{script_json(digest)}]={text};\n",
                          durable=False)
    return digest, rel


_NOTEBOOK_SCRIPTS_SENT = False
# Sent after each chart in a notebook: draws the charts not yet drawn.
DRAW_CHARTS_SCRIPT = "<script>window.MooptCharts && window.MooptCharts.drawAll();</script>"


def notebook_scripts() -> str:
    """The chart scripts inline, the first time a kernel shows a chart (then nothing)."""
    global _NOTEBOOK_SCRIPTS_SENT
    if _NOTEBOOK_SCRIPTS_SENT:
        return ""
    _NOTEBOOK_SCRIPTS_SENT = True
    return f"<script>{vega_bundle()}</script>\n<script>{page_script()}</script>\n"


@lru_cache(maxsize=1)
def _validator():
    import altair as alt
    import jsonschema

    schema = alt.vegalite.v6.schema.core.load_schema()
    return jsonschema.Draft7Validator(schema)


def validate_spec(spec: dict) -> list[str]:
    """Messages for every way ``spec`` breaks the Vega-Lite schema (empty when valid)."""
    spec = json.loads(json.dumps(spec))  # plain JSON types, as a browser would get them
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message[:300]}"
            for error in _validator().iter_errors(spec)]
