"""Swagger UI served from the installation, never from a CDN, so `/docs` works offline.

The Swagger UI 5 distribution (JavaScript, CSS, favicon) comes from the `fastapi-offline` wheel;
`add_api_docs` mounts it under `<path>/assets` and serves the page at `<path>`, with every URL on
the page relative to the origin that served it.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"


def add_api_docs(app: FastAPI, *, openapi_url: str, title: str, path: str = "/docs") -> None:
    assets = f"{path}/assets"
    app.mount(assets, StaticFiles(directory=ASSETS), name="api-docs-assets")

    @app.get(path, include_in_schema=False)
    async def api_docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=title,
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon.png",
        )
