"""Octavus prompt placeholders: `{{VAR}}` and `{{VAR.field}}`; everything else is Markdown text."""

from __future__ import annotations

from parley_common.octavus import placeholders, render_prompt


def test_placeholders_are_found_with_lines() -> None:
    source = "Hi {{NAME}}\n\nTicket: {{ TICKET.ticketId }} and {{bad ref}}\n{% raw %} {# not jinja #}"
    found = [(p.raw, p.line, p.name, p.fields) for p in placeholders(source)]
    assert found == [
        ("NAME", 1, "NAME", ()),
        ("TICKET.ticketId", 3, "TICKET", ("ticketId",)),
        ("bad ref", 3, None, ()),
    ]


def test_render_substitutes_values_and_leaves_markdown_alone() -> None:
    source = "For {{COMPANY}}: {{TICKET.ticketId}} / {{MISSING}} / {{DATA}} / {{ not a ref }} / {% if x %}"
    values = {"COMPANY": "Acme", "TICKET": {"ticketId": 42}, "DATA": {"a": [1, "é"]}}
    assert render_prompt(source, values) == 'For Acme: 42 /  / {"a": [1, "é"]} / {{ not a ref }} / {% if x %}'


def test_render_missing_fields_and_non_objects_are_empty() -> None:
    assert render_prompt("[{{A.b.c}}][{{S.x}}][{{N}}]", {"A": {"b": {}}, "S": "text", "N": 0}) == "[][][0]"
