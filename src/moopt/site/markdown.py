"""Markdown helpers shared by the Quarto project writer and the built-in renderer.

The generated ``.qmd`` pages are Markdown that both Pandoc (inside Quarto)
and mistune read the same way. Two rules keep that true:

* text from data is escaped with :func:`md_text`, which puts a backslash
  before every Markdown-active ASCII punctuation character (CommonMark and
  Pandoc both turn ``\\<`` into a literal ``<``, so it ends up HTML-escaped);
* raw HTML is only ever written inside a ```` ```{=html} ```` fenced block,
  Pandoc's raw-attribute syntax, which :class:`QuartoHtmlRenderer` teaches
  mistune to pass through unchanged.
"""

from __future__ import annotations

import html
import re

import mistune
import yaml

# Characters with a meaning in CommonMark or Pandoc Markdown (Pandoc adds $ maths, @ citations,
# ~ subscript and ^ superscript). Letters, digits, spaces and plain punctuation pass through.
_MD_ACTIVE = re.compile(r"([\\`*_{}\[\]#+!|~^$@])")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)


def md_text(value: object) -> str:
    r"""Escape text from data so that Markdown shows it literally, on one line.

    ``&``, ``<`` and ``>`` become HTML entities, which Markdown renders as
    the characters and which stay harmless even where a tool inserts the
    text as raw HTML; other Markdown-active characters get a backslash.

    Examples
    --------
    >>> md_text("A&B <script> *x*")
    'A&amp;B &lt;script&gt; \\*x\\*'
    """
    text = html.escape(" ".join(str(value).split()), quote=False)
    return _MD_ACTIVE.sub(r"\\\1", text)


def html_text(value: object) -> str:
    """Escape text for a YAML setting Quarto may show as Markdown or as HTML (navigation labels)."""
    return html.escape(" ".join(str(value).split()), quote=False)


def md_link(text: object, href: str) -> str:
    """A Markdown link with escaped text. ``href`` must be a URL built by moopt (no spaces)."""
    if any(ch in href for ch in " ()<>\n"):
        raise ValueError(f"The link target {href!r} contains characters that break Markdown links.")
    return f"[{md_text(text)}]({href})"


def fence_for(text: str) -> str:
    """A backtick fence longer than any backtick run inside ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def raw_html_block(html: str) -> str:
    """Wrap HTML in a Pandoc raw block (```` ```{=html} ````) that mistune passes through too."""
    fence = fence_for(html)
    return f"{fence}{{=html}}\n{html.rstrip()}\n{fence}\n"


def code_block(text: str) -> str:
    """A fenced code block showing ``text`` verbatim (for error messages)."""
    fence = fence_for(text)
    return f"{fence}text\n{text.rstrip()}\n{fence}\n"


def front_matter(meta: dict) -> str:
    """YAML front matter block for a Quarto page."""
    body = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000).rstrip()
    return f"---\n{body}\n---\n\n"


def split_front_matter(text: str) -> tuple[dict, str]:
    """Split a page into its YAML front matter (a dict, maybe empty) and its Markdown body.

    Raises
    ------
    ValueError
        When the front matter is not a YAML mapping.
    """
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    meta = yaml.safe_load(match.group(1)) or {}
    if not isinstance(meta, dict):
        raise ValueError("The page's front matter must be a YAML mapping of names to values.")
    return meta, text[match.end() :]


_LEADING_H1 = re.compile(r"\A\s*#[ \t]+([^\n]*?)[ \t#]*(?:\r?\n|\Z)")


def split_leading_heading(body: str) -> tuple[str | None, str]:
    r"""Split a Markdown body opening with a level-1 heading into its plain text and the rest.

    The page shell shows the page title as the page's one ``<h1>``; a page
    whose body opens with its own ``# Heading`` gives that heading as its title.

    Examples
    --------
    >>> split_leading_heading("# AMR01: *Items* & more\n\nText\n")
    ('AMR01: Items & more', '\nText\n')
    >>> split_leading_heading("## Not a title\n")
    (None, '## Not a title\n')
    """
    match = _LEADING_H1.match(body)
    if not match:
        return None, body
    inline = render_markdown(match.group(1))
    text = html.unescape(re.sub(r"<[^>]+>", "", inline))
    return " ".join(text.split()) or None, body[match.end() :]


def heading_id(text_html: str) -> str:
    """Pandoc's automatic heading identifier for a heading's (rendered) text.

    Tags are dropped, then everything but letters, digits, ``_``, ``-`` and
    ``.``; spaces become hyphens; text before the first letter goes.

    Examples
    --------
    >>> heading_id("Accessibility <em>statement</em>")
    'accessibility-statement'
    """
    text = html.unescape(re.sub(r"<[^>]+>", "", text_html)).lower()
    text = re.sub(r"[^\w\s.-]", "", text)
    text = re.sub(r"\s+", "-", text.strip())
    text = re.sub(r"^[^a-z]+", "", text)
    return text or "section"


class QuartoHtmlRenderer(mistune.HTMLRenderer):
    """mistune renderer that reads Markdown the way Quarto's Pandoc does where moopt needs it.

    * passes Pandoc raw HTML blocks (```` ```{=html} ````) through unchanged;
    * gives headings Pandoc's automatic ids, so links such as
      ``about.html#accessibility-statement`` work on both renderers.
    """

    def __init__(self, escape: bool = False):
        super().__init__(escape=escape)
        self._ids: dict[str, int] = {}

    def block_code(self, code: str, info: str | None = None) -> str:
        if info is not None and info.strip() == "{=html}":
            return code
        return super().block_code(code, info)

    def heading(self, text: str, level: int, **attrs) -> str:
        base = attrs.get("id") or heading_id(text)
        count = self._ids.get(base, 0)
        self._ids[base] = count + 1
        unique = base if count == 0 else f"{base}-{count}"
        return f'<h{level} id="{html.escape(unique)}">{text}</h{level}>\n'


def render_markdown(body: str) -> str:
    """Render a page body to HTML the way the built-in renderer does.

    Raw inline HTML is allowed (``escape=False``) because the pages are
    written by moopt itself with every piece of data text escaped by
    :func:`md_text`; extra pages come from moopt's methodology writer.
    """
    markdown = mistune.create_markdown(
        escape=False, renderer=QuartoHtmlRenderer(escape=False), plugins=["table", "strikethrough"]
    )
    return markdown(body)
