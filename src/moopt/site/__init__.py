"""moopt's static website builder.

:func:`build_site` writes a Quarto website project for a run's executed
notebooks (``outputs/quarto/``) and renders it into ``outputs/site/``, with
``quarto render`` when Quarto is on PATH and otherwise with moopt's built-in
renderer, which reads the same project files. :func:`check_links` finds
relative links in a built site that do not resolve.
"""

from moopt.site.build import QuartoNotFoundError, build_site
from moopt.site.links import check_links

__all__ = ["QuartoNotFoundError", "build_site", "check_links"]
