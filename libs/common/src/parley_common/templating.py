"""`{{VAR}}` templates and expressions, evaluated in Jinja2's sandbox (never `eval`).

The same functions serve the catalog (lint: does it parse?) and the runtime (render/evaluate with
the session's variables), so what lint accepts is exactly what runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, Undefined
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_MAX_OUTPUT = 100_000
_FAILURES = (TemplateSyntaxError, UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError)


class TemplateError(ValueError):
    """A template or expression that cannot be parsed or evaluated."""


def _env(strict: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined if strict else Undefined, autoescape=False)
    env.globals.clear()  # no range(), lipsum(), dict() ... only what the caller passes in
    return env


_lenient = _env(strict=False)
_strict = _env(strict=True)
# Compiling is what costs (parse, generate Python, `compile`: ~4 ms); an agent's templates and
# expressions are few and evaluated every turn, so each is compiled once per process. A source
# that does not parse raises and is not cached.
_COMPILED = 2048


@lru_cache(maxsize=_COMPILED)
def _template(source: str, strict: bool) -> Template:
    return (_strict if strict else _lenient).from_string(source)


@lru_cache(maxsize=_COMPILED)
def _expression(source: str) -> Any:
    return _lenient.compile_expression(source, undefined_to_none=True)


def check_template(source: str) -> str | None:
    """None when `source` parses, else the reason."""
    try:
        _lenient.parse(source)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    return None


def check_expression(source: str) -> str | None:
    try:
        _lenient.compile_expression(source)
    except TemplateSyntaxError as exc:
        return exc.message or "invalid expression"
    return None


def render(source: str, variables: Mapping[str, Any], *, strict: bool = False) -> str:
    """Render a template; unknown variables render empty unless `strict`."""
    try:
        out = _template(source, strict).render(**dict(variables))
    except _FAILURES as exc:
        raise TemplateError(str(exc)) from exc
    return out[:_MAX_OUTPUT]


def evaluate(source: str, variables: Mapping[str, Any]) -> Any:
    """Evaluate an expression such as `attempts > 2 and intent == 'buy'`."""
    try:
        value = _expression(source)(**dict(variables))
    except _FAILURES as exc:
        raise TemplateError(str(exc)) from exc
    return value
