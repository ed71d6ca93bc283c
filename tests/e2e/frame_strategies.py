"""The session gateway's strategies of malformed frames (services/session_gateway/tests/
frame_strategies.py), for e2e tests: one definition for the parsers' property tests and the fuzzing
over real sockets.

Test directories are not packages, so the module is loaded from its file once, as llm_fakes.py
loads the runtime's provider fakes.
"""

from __future__ import annotations

from pathlib import Path

from parley_devstack.testing import module_from_file

_strategies = module_from_file(
    "services.session_gateway.tests.frame_strategies",
    Path(__file__).parents[2] / "services/session_gateway/tests/frame_strategies.py",
)
Case = _strategies.Case
kivox_cases = _strategies.kivox_cases
chat_cases = _strategies.chat_cases
