"""`python -m parley_session_gateway`: serve the realtime edge."""

from __future__ import annotations

from parley_common.runner import serve
from parley_session_gateway.app import build_app
from parley_session_gateway.settings import get_settings


def main() -> None:
    settings = get_settings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
