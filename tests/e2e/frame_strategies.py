"""The session gateway's strategies of malformed frames (services/session_gateway/tests/
frame_strategies.py), for e2e tests: one definition for the parsers' property tests and the fuzzing
over real sockets.

Test directories are not packages, so the module is loaded from its file once, as llm_fakes.py
loads the runtime's provider fakes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "services.session_gateway.tests.frame_strategies"
_PATH = Path(__file__).parents[2] / "services/session_gateway/tests/frame_strategies.py"

if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, _PATH)
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)

_strategies = sys.modules[_NAME]
Case = _strategies.Case
kivox_cases = _strategies.kivox_cases
chat_cases = _strategies.chat_cases
