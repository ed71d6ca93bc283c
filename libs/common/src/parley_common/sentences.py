"""Split streamed LLM text into sentences to speak, as soon as each one is complete.

Text-to-speech is asked for one sentence at a time, while the model is still writing, so the
first sentence can play before the answer is finished. A sentence ends at `.`, `!`, `?`, `…` (or
their CJK forms) followed by whitespace, or at a line break; abbreviations (`e.g.`, `Dr.`) and
numbers (`3.14`) do not end one. A sentence longer than `max_chars` is cut at the last comma or
space before the limit, so a run-on answer still starts playing early. `finish()` flushes the rest.

Each sentence carries its offsets in the whole text, so the caller can say exactly how much of the
answer was spoken (`TtsReport.text_end`) and keep `text[:end]` after a barge-in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Tokens (lowercase, without the dot) after which a period does not end a sentence.
ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "approx",
        "dept",
        "est",
        "inc",
        "ltd",
        "co",
        "no",
        "fig",
        "vol",
        "mt",
        "ft",
    }
)
# Sentence ends: . ! ? and the ellipsis, the ideographic full stop, fullwidth ! and ?.
_TERMINATORS = ".!?\u2026\u3002\uff01\uff1f"
# What may close a sentence after its end mark: quotes (straight and curly), brackets, guillemet.
_CLOSERS = "\"')]\u201d\u2019\u00bb"
_END = re.compile(rf"[{re.escape(_TERMINATORS)}]+[{re.escape(_CLOSERS)}]*(?=\s)|\n+")


@dataclass(frozen=True)
class Sentence:
    text: str  # stripped of surrounding whitespace
    start: int  # offset of text[0] in the whole stream
    end: int  # offset just past the sentence's last character

    def __str__(self) -> str:
        return self.text


class SentenceSplitter:
    """Feed deltas with `push`; it returns the sentences they completed. Then `finish()`."""

    def __init__(self, *, max_chars: int = 250, min_chars: int = 1) -> None:
        if max_chars < 20:
            raise ValueError("max_chars must be at least 20")
        self.max_chars = max_chars
        # Sentences shorter than this wait to be joined to the next one ("Ok." alone is fine at 1).
        self.min_chars = min_chars
        self._buf = ""
        self._base = 0  # offset of _buf[0] in the whole stream
        self._scan = 0  # position in _buf from which a terminator has not been looked for

    @property
    def pending(self) -> str:
        return self._buf

    def push(self, delta: str) -> list[Sentence]:
        self._buf += delta
        out: list[Sentence] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                break
            sentence = self._take(cut)
            if sentence is not None:
                out.append(sentence)
        return out

    def finish(self) -> list[Sentence]:
        """The rest of the text as a last sentence (none if it is only whitespace)."""
        sentence = self._take(len(self._buf))
        return [sentence] if sentence is not None else []

    # ------------------------------------------------------------------------------------------

    def _next_cut(self) -> int | None:
        limit = self.max_chars + (len(self._buf) - len(self._buf.lstrip()))
        for match in _END.finditer(self._buf, self._scan):
            end = match.end()
            if match.start() >= limit:
                break
            ends = match.group().startswith("\n") or not self._is_abbreviation(match.start())
            if ends and len(self._buf[:end].strip()) >= self.min_chars:
                return end
            self._scan = end
        if len(self._buf) > limit:
            return self._soft_cut(limit)
        # Keep the tail un-scanned: a terminator at the very end waits for the whitespace after it.
        self._scan = max(self._scan, len(self._buf) - 4)
        return None

    def _is_abbreviation(self, dot: int) -> bool:
        if self._buf[dot] != ".":
            return False
        before = self._buf[:dot]
        word = re.search(r"([A-Za-z][A-Za-z.]*)$", before)
        if word is None:
            return False
        token = word.group(1).lower()
        # Single capital letters are initials ("J. R. R. Tolkien").
        return token in ABBREVIATIONS or (len(token) == 1 and word.group(1).isupper())

    def _soft_cut(self, limit: int) -> int:
        window = self._buf[:limit]
        for sep in (", ", "; ", ": ", " \u2013 ", " - ", " "):
            at = window.rfind(sep)
            if at > limit // 3:
                return at + len(sep)
        return limit

    def _take(self, cut: int) -> Sentence | None:
        raw, self._buf = self._buf[:cut], self._buf[cut:]
        start_base = self._base
        self._base += cut
        self._scan = 0
        lead = len(raw) - len(raw.lstrip())
        text = raw.strip()
        if not text:
            return None
        start = start_base + lead
        return Sentence(text=text, start=start, end=start + len(text))


def split_text(text: str, *, max_chars: int = 250) -> list[Sentence]:
    """A whole text at once (the same sentences as streaming it)."""
    splitter = SentenceSplitter(max_chars=max_chars)
    return [*splitter.push(text), *splitter.finish()]
