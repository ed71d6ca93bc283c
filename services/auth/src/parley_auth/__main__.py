"""`python -m parley_auth`: run the auth service."""

from parley_auth.app import build_app
from parley_auth.settings import get_settings
from parley_common.runner import serve


def main() -> None:
    settings = get_settings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
