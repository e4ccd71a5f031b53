"""NHS colours and fonts for both renderers, and the Jinja2 environment for the templates.

One palette feeds the built-in renderer's CSS and the Quarto theme (SCSS), so
the two sites look alike.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

# NHS identity colours (nhsuk-frontend names in the comments).
PALETTE: dict[str, str] = {
    "blue": "#005EB8",  # nhs-blue: links, header
    "dark_blue": "#003087",  # nhs-dark-blue: hover, footer rule
    "text": "#231f20",  # nhs-black: body text
    "grey": "#425563",  # nhs-dark-grey: secondary text
    "background": "#f0f4f5",  # nhs-pale-grey: page background
    "white": "#ffffff",
    "focus": "#ffeb3b",  # nhs-yellow: focus highlight
    "warning": "#ffb81c",  # nhs-warm-yellow: synthetic-data banner edge
    "error": "#d5281b",  # nhs-red: failed-page notice edge
    "border": "#d8dde0",  # nhs-grey-4: table rules
}

FONT_STACK = '"Frutiger W01", Frutiger, Arial, "Helvetica Neue", Helvetica, sans-serif'


def _autoescape(template_name: str | None) -> bool:
    # HTML templates escape every value; CSS/SCSS templates hold only the palette.
    return bool(template_name) and template_name.endswith((".html.j2", ".html"))


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja2 environment for moopt's site templates (autoescape on for HTML)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=_autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_template(name: str, **context) -> str:
    """Render one template; ``palette`` and ``font_stack`` are available to it."""
    return (
        environment().get_template(name).render(palette=PALETTE, font_stack=FONT_STACK, **context)
    )
