"""`python -m parley_media`: run one WebRTC media worker (bus handler plus its health endpoint)."""

from __future__ import annotations

from parley_common.runner import serve
from parley_media.app import build_app
from parley_media.settings import get_settings


def main() -> None:
    settings = get_settings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
