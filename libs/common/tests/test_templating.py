"""Templates and expressions: sandboxed, compiled once per source, same answers every time."""

from __future__ import annotations

import pytest

from parley_common import templating


def test_expression_is_compiled_once_and_evaluated_with_each_call_s_variables() -> None:
    templating._expression.cache_clear()
    assert templating.evaluate("attempts > 2 and intent == 'buy'", {"attempts": 3, "intent": "buy"}) is True
    assert templating.evaluate("attempts > 2 and intent == 'buy'", {"attempts": 1, "intent": "buy"}) is False
    assert templating.evaluate("missing", {}) is None
    info = templating._expression.cache_info()
    assert (info.misses, info.hits) == (2, 1)


def test_template_is_compiled_once_per_source_and_strictness() -> None:
    templating._template.cache_clear()
    assert templating.render("Hi {{ name }}", {"name": "Ada"}) == "Hi Ada"
    assert templating.render("Hi {{ name }}", {"name": "Bob"}) == "Hi Bob"
    assert templating.render("Hi {{ name }}", {}) == "Hi "
    with pytest.raises(templating.TemplateError):
        templating.render("Hi {{ name }}", {}, strict=True)
    assert templating._template.cache_info().misses == 2


def test_a_broken_source_still_fails_every_time_and_the_sandbox_holds() -> None:
    for _ in range(2):
        with pytest.raises(templating.TemplateError):
            templating.evaluate("1 +", {})
    with pytest.raises(templating.TemplateError):
        templating.render("{{ ''.__class__.__mro__ }}", {})
