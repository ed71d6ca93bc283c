"""`python -m parley_catalog`: serve the catalog HTTP API and its bus handlers."""

from parley_catalog.app import build_app
from parley_catalog.settings import get_settings
from parley_common.kit.runner import run

if __name__ == "__main__":
    run(build_app, get_settings)
