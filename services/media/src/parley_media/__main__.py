"""`python -m parley_media`: run one WebRTC media worker (bus handler plus its health endpoint)."""

from parley_common.kit.runner import run
from parley_media.app import build_app
from parley_media.settings import get_settings

if __name__ == "__main__":
    run(build_app, get_settings)
