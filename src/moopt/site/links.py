"""Check that every relative link and image in a built site resolves."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Attributes that point at another file.
LINK_ATTRIBUTES = {"href", "src"}


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in LINK_ATTRIBUTES:
                self.links.append(value)
            elif name == "id" or (name == "name" and tag == "a"):
                self.ids.add(value)

    handle_startendtag = handle_starttag


def _is_external(href: str) -> bool:
    parts = urlsplit(href)
    return bool(parts.scheme or parts.netloc) or href.startswith("//")


def _scan(page: Path) -> _LinkCollector:
    collector = _LinkCollector()
    collector.feed(page.read_text(encoding="utf-8", errors="replace"))
    collector.close()
    return collector


def check_links(site_dir: Path) -> list[tuple[str, str]]:
    """Find relative links and image sources in a site that do not resolve.

    Parameters
    ----------
    site_dir : Path
        The built site (e.g. ``outputs/site``).

    Returns
    -------
    list of (page, href)
        ``page`` relative to ``site_dir`` (with "/"), ``href`` as written in the page.
        Empty when every link works. A link is broken when its file does not
        exist inside ``site_dir`` (links that leave the site count as broken),
        when it names a folder without an ``index.html``, or when its
        ``#fragment`` names no element of the target page.

    Notes
    -----
    External links (with a scheme such as ``https:`` or ``mailto:``, or
    starting ``//``) and ``data:`` URIs are not checked. A link starting
    with "/" is taken relative to ``site_dir``.
    """
    site_dir = Path(site_dir).resolve()
    if not site_dir.is_dir():
        raise ValueError(f"The site folder {site_dir} does not exist.")
    pages = sorted(site_dir.rglob("*.html"))
    scans = {page: _scan(page) for page in pages}
    broken: list[tuple[str, str]] = []
    for page, scan in scans.items():
        rel_page = page.relative_to(site_dir).as_posix()
        for href in scan.links:
            if _is_external(href) or not href.strip():
                continue
            parts = urlsplit(href)
            path_part = unquote(parts.path)
            if not path_part:  # "#fragment" or "?query" on the same page
                target = page
            elif path_part.startswith("/"):
                target = (site_dir / path_part.lstrip("/")).resolve()
            else:
                target = (page.parent / path_part).resolve()
            if target.is_dir():
                target = target / "index.html"
            inside = target == site_dir or site_dir in target.parents
            if not inside or not target.is_file():
                broken.append((rel_page, href))
                continue
            if parts.fragment and target.suffix == ".html":
                ids = scans[target].ids if target in scans else _scan(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append((rel_page, href))
    return broken
