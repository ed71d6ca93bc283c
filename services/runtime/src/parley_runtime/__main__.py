"""`python -m parley_runtime`: run one runtime worker (bus consumer plus its health endpoint)."""

from __future__ import annotations

from parley_common.runner import serve
from parley_runtime.app import build_app
from parley_runtime.settings import get_settings


def main() -> None:
    settings = get_settings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
