"""`python -m parley_speech`: run one speech worker (bus handlers plus its health endpoint)."""

from parley_common.kit.runner import run
from parley_speech.app import build_app
from parley_speech.settings import get_settings

if __name__ == "__main__":
    run(build_app, get_settings)
