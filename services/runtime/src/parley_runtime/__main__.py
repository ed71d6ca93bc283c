"""`python -m parley_runtime`: run one runtime worker (bus consumer plus its health endpoint)."""

from parley_common.kit.runner import run
from parley_runtime.app import build_app
from parley_runtime.settings import get_settings

if __name__ == "__main__":
    run(build_app, get_settings)
