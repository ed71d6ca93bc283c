"""The runtime's LLM provider fakes (services/runtime/tests/llm/fakes.py), for e2e tests and the
bench's provider (bench/sse_provider.py).

Test directories are not packages, so the module is loaded from its file once, under the name
pytest gives it when it collects the runtime's own tests.
"""

from __future__ import annotations

from pathlib import Path

from parley_devstack.testing import module_from_file

_fakes = module_from_file(
    "services.runtime.tests.llm.fakes", Path(__file__).parents[2] / "services/runtime/tests/llm/fakes.py"
)
FakeAnthropic = _fakes.FakeAnthropic
FakeOpenAI = _fakes.FakeOpenAI
Pause = _fakes.Pause
openai_text = _fakes.openai_text
anthropic_text = _fakes.anthropic_text
anthropic_tool_use = _fakes.anthropic_tool_use
