"""`sse.lines`: a body's lines, whole and decoded, however the network splits the bytes."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from parley_runtime.llm.sse import lines


class Chunks:
    """What `lines` reads of a response: its body, in the given pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


async def read(pieces: list[bytes]) -> list[str]:
    return [line async for line in lines(cast(Any, Chunks(pieces)))]


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    return [body[a:b] for a, b in itertools.pairwise(points)]


TEXT = st.lists(st.sampled_from(["a", "é", "🎉", ":", " ", "\r", "\n", "\r\n"]), max_size=40).map("".join)


@given(TEXT, st.lists(st.integers(min_value=0, max_value=200), max_size=12))
async def test_any_split_gives_the_lines_of_the_whole_body(text: str, cuts: list[int]) -> None:
    body = text.encode()
    assert await read(split(body, cuts)) == text.splitlines()


async def test_a_crlf_split_between_two_reads_is_one_line_end() -> None:
    assert await read([b"data: 1\r", b"\n\r", b"\ndata: 2"]) == ["data: 1", "", "data: 2"]


async def test_a_character_split_between_two_reads_is_whole() -> None:
    body = "data: Köln 🎉\n".encode()
    assert await read([body[:9], body[9:13], body[13:]]) == ["data: Köln 🎉"]
