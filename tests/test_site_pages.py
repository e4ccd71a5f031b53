"""What the site shell adds to or takes from page bodies: table regions, repeated titles and notices."""

from __future__ import annotations

from moopt.site.markdown import split_leading_heading
from moopt.site.notebooks import drop_repeats
from moopt.site.render import wrap_tables


def test_every_table_gets_a_focusable_labelled_region():
    body = ("<h2>Costs &amp; items</h2><table><tr><td>1</td></tr></table>"
            "<table><caption>Per <em>1,000</em></caption><tr><td>2</td></tr></table>")
    out = wrap_tables(body)
    assert out.count('<div class="moopt-table-scroll" tabindex="0" role="region"') == 2
    assert 'aria-label="Table: Costs &amp; items"' in out
    assert 'aria-label="Table: Per 1,000"' in out  # the caption names the second table
    assert out.count("</table></div>") == 2
    assert wrap_tables("<p>no tables</p>") == "<p>no tables</p>"


def test_a_table_without_heading_or_caption_is_still_named():
    assert 'aria-label="Table"' in wrap_tables("<table><tr><td>1</td></tr></table>")


def test_repeated_title_and_synthetic_notice_are_dropped_once():
    fragment = ('<div class="moopt-synthetic-notice" role="note"><strong>Synthetic data. Made up.'
                '</strong></div>\n<h2>Safety: A &amp; B</h2><p>x</p><h2>Safety: A &amp; B</h2>')
    out, dropped = drop_repeats(fragment, "Safety: A & B", drop_synthetic_notice=True)
    assert dropped and "moopt-synthetic-notice" not in out
    assert out.count("<h2>") == 1  # only the first repeat goes


def test_other_notices_and_headings_stay():
    part = '<div class="moopt-synthetic-notice" role="note"><strong>Part of England only.</strong></div>'
    out, dropped = drop_repeats(part + "<h2>Another heading</h2>", "Safety: A", drop_synthetic_notice=True)
    assert not dropped and "Part of England only" in out and "Another heading" in out
    out, _ = drop_repeats('<div class="moopt-synthetic-notice">Synthetic data</div>', "", False)
    assert "Synthetic data" in out  # kept when the site shows no banner of its own


def test_leading_heading_names_an_extra_page():
    assert split_leading_heading("# AMR01: *Items* & more\n\nText\n") == ("AMR01: Items & more", "\nText\n")
    assert split_leading_heading("Text\n# Later heading\n") == (None, "Text\n# Later heading\n")
