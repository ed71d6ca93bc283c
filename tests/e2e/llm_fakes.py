"""The runtime's LLM provider fakes (services/runtime/tests/llm/fakes.py), for e2e tests and the
bench's provider (bench/sse_provider.py).

Test directories are not packages, so the module is loaded from its file once, under the name
pytest gives it when it collects the runtime's own tests.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "services.runtime.tests.llm.fakes"
_PATH = Path(__file__).parents[2] / "services/runtime/tests/llm/fakes.py"

if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, _PATH)
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)

_fakes = sys.modules[_NAME]
FakeAnthropic = _fakes.FakeAnthropic
FakeOpenAI = _fakes.FakeOpenAI
Pause = _fakes.Pause
openai_text = _fakes.openai_text
anthropic_text = _fakes.anthropic_text
anthropic_tool_use = _fakes.anthropic_tool_use
