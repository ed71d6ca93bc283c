"""The sentence splitter: streamed deltas give the same sentences as the whole text, with offsets."""

from __future__ import annotations

import pytest

from parley_common.sentences import SentenceSplitter, split_text

TEXT = (
    'Hello there! Dr. Smith paid 3.14 dollars, e.g. for tea. What? "Yes." '
    "Then a very long run on sentence without any stops that keeps going and going and going on forever\n"
    "New line… 終わり。 last bit"
)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 50, 10_000])
def test_streaming_in_any_pieces_gives_the_whole_texts_sentences(step: int) -> None:
    splitter = SentenceSplitter(max_chars=60)
    out = []
    for i in range(0, len(TEXT), step):
        out += splitter.push(TEXT[i : i + step])
    out += splitter.finish()
    assert [s.text for s in out] == [s.text for s in split_text(TEXT, max_chars=60)]
    for s in out:
        assert TEXT[s.start : s.end] == s.text
        assert len(s.text) <= 60


def test_sentence_ends_abbreviations_numbers_and_quotes() -> None:
    texts = [s.text for s in split_text(TEXT, max_chars=60)]
    assert texts[:4] == ["Hello there!", "Dr. Smith paid 3.14 dollars, e.g. for tea.", "What?", '"Yes."']
    assert texts[-3:] == ["New line…", "終わり。", "last bit"]


def test_a_long_sentence_is_cut_at_a_comma_or_space_before_the_limit() -> None:
    texts = [s.text for s in split_text(TEXT, max_chars=60)]
    long = [t for t in texts if t.startswith("Then")]
    assert long == ["Then a very long run on sentence without any stops that"]


def test_a_sentence_is_given_as_soon_as_it_is_complete() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("Hi there.") == []  # the end mark may be "...": wait for what follows
    first = splitter.push(" How")
    assert [s.text for s in first] == ["Hi there."]
    assert splitter.push(" are you") == []
    assert [(s.text, s.start, s.end) for s in splitter.finish()] == [("How are you", 10, 21)]
    assert splitter.finish() == []


def test_whitespace_only_and_min_chars() -> None:
    assert split_text("   \n\n  ") == []
    splitter = SentenceSplitter(min_chars=10)
    assert splitter.push("Ok. ") == []  # too short alone: joined to the next
    assert [s.text for s in splitter.push("That works for me. ")] == ["Ok. That works for me."]
    with pytest.raises(ValueError):
        SentenceSplitter(max_chars=5)
