"""`python -m parley_catalog`: serve the catalog HTTP API and its bus handlers."""

from __future__ import annotations

from parley_catalog.app import build_app
from parley_catalog.settings import get_settings
from parley_common.runner import serve


def main() -> None:
    settings = get_settings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
