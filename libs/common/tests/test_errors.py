"""The error registry and docs/errors.md describe the same codes."""

from __future__ import annotations

import re
from pathlib import Path

from parley_common.errors import REGISTRY, Codes, ParleyError, envelope

DOC = Path(__file__).resolve().parents[3] / "docs" / "errors.md"


def test_every_code_has_a_doc_section_and_no_stale_sections() -> None:
    text = DOC.read_text()
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', text))
    assert anchors == {c.anchor for c in REGISTRY.values()}
    for code in REGISTRY.values():
        assert f"## `{code.code}`" in text
        assert f"HTTP {code.status}." in text


def test_codes_are_dot_notation_and_statuses_are_errors() -> None:
    for code in REGISTRY.values():
        assert re.fullmatch(r"[a-z_]+\.[a-z_]+", code.code), code.code
        assert 400 <= code.status <= 599


def test_envelope_renders_params_and_doc_url() -> None:
    env = envelope(Codes.NOT_FOUND, params={"resource": "agent"})
    assert env.message == "The agent was not found."
    assert env.doc_url.endswith("#resource-not-found")
    # A template whose params are missing falls back to the raw text instead of failing.
    err = ParleyError(Codes.RATE_LIMITED)
    assert err.status == 429 and "retry" in err.message.lower()
