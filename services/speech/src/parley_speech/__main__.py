"""`python -m parley_speech`: run one speech worker (bus handlers plus its health endpoint)."""

from __future__ import annotations

from parley_common.runner import serve
from parley_speech.app import build_app
from parley_speech.settings import get_settings


def main() -> None:
    settings = get_settings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
