"""`python -m parley_session_gateway`: serve the realtime edge."""

from parley_common.kit.runner import run
from parley_session_gateway.app import build_app
from parley_session_gateway.corked_ws import CorkedWebSocketsProtocol
from parley_session_gateway.settings import get_settings

if __name__ == "__main__":
    run(build_app, get_settings, ws=CorkedWebSocketsProtocol)
