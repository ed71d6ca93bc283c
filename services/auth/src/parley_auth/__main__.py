"""`python -m parley_auth`: run the auth service."""

from parley_auth.app import build_app
from parley_auth.settings import get_settings
from parley_common.kit.runner import run

if __name__ == "__main__":
    run(build_app, get_settings)
