"""docs/architecture.md stays true: every subject and stream it names is defined in
`parley_common.subjects`, and it names every one of them."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from parley_common import subjects

DOC = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"

# A subject as the page writes it: dotted lower-case words, `<placeholders>` for the variable parts.
# Parley's own subjects, and JetStream's (`$JS.…`, its advisories) that a service subscribes to.
SUBJECT = re.compile(r"[a-z_]+(?:\.(?:[a-z_]+|<[a-z_]+>))+|\$JS(?:\.[A-Z_]+)+")
STREAM = re.compile(r"[A-Z][A-Z_]+")


def named_in_doc() -> tuple[set[str], set[str]]:
    """The subjects and streams in backticks and in the picture of docs/architecture.md."""
    text = DOC.read_text()
    quoted = re.findall(r"`([^`\n]+)`", text)
    picture = text.split("```")[1]
    found = {q for q in quoted if SUBJECT.fullmatch(q)} | set(SUBJECT.findall(picture))
    # Python modules and files are not subjects.
    found = {f for f in found if not f.startswith("parley_") and not f.endswith((".py", ".md"))}
    streams = {q for q in quoted if STREAM.fullmatch(q)}
    return found, streams


def defined() -> tuple[set[str], dict[str, str], set[str]]:
    """Fixed subjects, subject patterns (function name -> pattern with `<parameter>`s), streams."""
    constants = {n: v for n, v in vars(subjects).items() if n.isupper() and isinstance(v, str)}
    streams = {v for n, v in constants.items() if n.endswith("_STREAM")}
    fixed = {v for n, v in constants.items() if "." in v and not n.endswith("_PREFIX")}
    patterns = {}
    for name, fn in inspect.getmembers(subjects, inspect.isfunction):
        if fn.__module__ == subjects.__name__:
            params = inspect.signature(fn).parameters
            patterns[name] = fn(*(f"<{p}>" for p in params))
    return fixed, patterns, streams


def matches(subject: str, pattern: str) -> bool:
    """`subject` is `pattern` itself or one of its instances (`catalog.events.agent.created`)."""
    parts = [re.escape(p) if not p.startswith("<") else r"(?:<[a-z_]+>|[a-z_]+)" for p in pattern.split(".")]
    return re.fullmatch(r"\.".join(parts), subject) is not None


def test_every_subject_and_stream_named_exists() -> None:
    fixed, patterns, streams = defined()
    named, named_streams = named_in_doc()
    unknown = {n for n in named if n not in fixed and not any(matches(n, p) for p in patterns.values())}
    assert unknown == set(), "named in docs/architecture.md, defined nowhere in parley_common.subjects"
    assert named_streams - streams == set()


def test_every_subject_and_stream_is_named() -> None:
    fixed, patterns, streams = defined()
    named, named_streams = named_in_doc()
    # A fixed subject that only prefixes a pattern (`conv.events` of `conv.events.<id>`) counts
    # as named when its pattern is.
    missing = {f for f in fixed if f not in named and not any(n.startswith(f + ".") for n in named)}
    assert missing == set(), "defined in parley_common.subjects, missing from docs/architecture.md"
    assert {p for p in patterns.values() if not any(matches(n, p) for n in named)} == set()
    assert streams <= named_streams


def test_the_check_is_not_vacuous() -> None:
    named, named_streams = named_in_doc()
    assert {"auth.verify", "session.<conversation_id>.in", "sessions.start"} <= named
    assert len(named) >= 20 and len(named_streams) >= 7
    assert matches("catalog.events.agent.created", "catalog.events.agent.<kind>")
    assert not matches("catalog.events.agent", "catalog.events.agent.<kind>")
    assert not matches("session.x.in", "session.<conversation_id>.out")
