"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with their assets served from the package.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank on a closed
network. The assets come from the ``fastapi-offline`` distribution (a dependency, so they are
updated with it rather than vendored here), mounted under ``/static/api-docs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS", "PREFIX", "add_to"]

ASSETS: Final = Path(fastapi_offline.__file__).resolve().parent / "static"
PREFIX: Final = "/static/api-docs"


def add_to(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve the two pages of ``app``'s OpenAPI document, built with ``docs_url=None`` and
    ``redoc_url=None`` so that FastAPI's CDN pages are not there too."""
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title
    # Call it before mounting the app's own /static, which would otherwise shadow this.
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="api-docs-assets")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title}: API",
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon.png",
        )

    @app.get(redoc_url, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title}: API",
            redoc_js_url=f"{PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{PREFIX}/favicon.png",
            with_google_fonts=False,
        )
        # ReDoc's bundle draws its maker's logo from their CDN (and hides it when that
        # fails): images from this server only, so the page never reaches out.
        page.headers["Content-Security-Policy"] = "img-src 'self' data:"
        return page
