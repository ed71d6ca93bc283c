# One piece (690 lines): the local fake LLM servers share one HTTP/1.1 server core (h11) and
# differ only in the wire format each speaks.
"""Local fake LLM servers that speak the real wire formats, for tests of the provider code and
end-to-end tests of the runtime. Nothing here calls a real provider.

Each fake is a real HTTP/1.1 server (asyncio + h11, keep-alive, chunked bodies) on a free
127.0.0.1 port, running its own event loop in a thread, so it works from sync and async tests:

    with FakeOpenAI([openai_text("Hello there")], api_key="sk-test") as fake:
        provider = OpenAICompatProvider(name="openai", base_url=fake.base_url, api_key="sk-test")
        ...
        assert fake.requests[0].json["stream"] is True

A script is a list of `Reply`s, one per request in order (an exhausted script answers 500, so an
unexpected extra request shows), or a function of the recorded request returning a `Reply`.
A reply's `steps` are written one by one: `bytes` (one write each, so a stream can be split at
any byte), `Pause(s)`, `Stall()` (send nothing more until the client goes away) and `Cut()`
(close the connection in the middle of the body). Every request is recorded as a `Seen`, which
also tells whether and when the client disconnected before the reply was complete.

The fakes check what a real provider checks and answer like it on failure: the API key (401),
`anthropic-version` (400), and the shape of the body (roles, tool-call pairing, Anthropic's
alternation and thinking budget rules: 400), so a test against them exercises real requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import h11

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Stall:
    """Write nothing more; wait until the client disconnects (or the fake stops)."""


@dataclass(frozen=True)
class Cut:
    """Close the connection without finishing the body."""


Step = bytes | Pause | Stall | Cut


@dataclass
class Reply:
    status: int = 200
    steps: list[Step] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream"


@dataclass
class Seen:
    """A request the fake received, and what became of its reply."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int] = ("", 0)  # client address: equal for requests on one connection
    received_at: float = field(default_factory=time.monotonic)
    disconnected: threading.Event = field(default_factory=threading.Event)
    disconnected_at: float | None = None  # time.monotonic() when the client went away early
    completed: threading.Event = field(default_factory=threading.Event)
    cut: bool = False

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Script = Sequence[Reply] | Callable[[Seen], Reply]


class FakeServer:
    """Base of the fakes: the HTTP server, the script and the request log."""

    path = "/"
    base_path = ""

    def __init__(self, script: Script | None = None, *, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[Seen] = []
        self._responder = script if callable(script) else None
        self._queue: deque[Reply] = deque([] if script is None or callable(script) else script)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    # lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a provider is configured with."""
        return self.root_url + self.base_path

    def start(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name=f"{type(self).__name__}", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(timeout=5)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _listen(self) -> asyncio.Server:
        self._stopping = asyncio.Event()
        return await asyncio.start_server(self._connection, LOOPBACK, 0)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        assert self._server is not None and self._stopping is not None
        self._stopping.set()
        self._server.close()
        # Every task of this loop serves a connection (or is about to): finish them all, also
        # those accepted just before the close, so nothing outlives the loop.
        for _ in range(10):
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # scripting

    def push(self, *replies: Reply) -> None:
        """Queue more replies (thread-safe enough for tests: deque appends are atomic)."""
        self._queue.extend(replies)

    def _next_reply(self, seen: Seen) -> Reply:
        if self._responder is not None:
            return self._responder(seen)
        if self._queue:
            return self._queue.popleft()
        return json_reply(500, {"error": {"message": "fake script exhausted", "type": "fake_error"}})

    def check(self, seen: Seen) -> Reply | None:
        """What the real provider would refuse, answered like it does; None to accept."""
        return None

    # HTTP

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                seen = await self._read_request(conn, reader)
                if seen is None:
                    return
                seen.peer = writer.get_extra_info("peername")[:2]
                self.requests.append(seen)
                if seen.path != self.path:
                    reply = json_reply(
                        404, {"error": {"message": f"no route {seen.path}", "type": "not_found"}}
                    )
                else:
                    reply = self.check(seen) or self._next_reply(seen)
                await self._respond(conn, reader, writer, seen, reply)
                if seen.cut or seen.disconnected.is_set() or conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Seen | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                return Seen(request.method.decode(), request.target.decode(), headers, bytes(body))
            else:  # ConnectionClosed, PAUSED
                return None

    async def _respond(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        seen: Seen,
        reply: Reply,
    ) -> None:
        assert self._stopping is not None
        gone = asyncio.Event()

        async def watch() -> None:
            # Reading while we write is how a server notices the client leave (EOF or reset).
            # Bytes of a next request on the connection are handed to h11, not lost.
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionError:
                    data = b""
                conn.receive_data(data)
                if not data:
                    if not seen.completed.is_set():
                        seen.disconnected_at = time.monotonic()
                        seen.disconnected.set()
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())
        try:
            headers = [("content-type", reply.content_type), *reply.headers.items()]
            writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
            await writer.drain()
            for step in reply.steps:
                if gone.is_set():
                    return
                if isinstance(step, bytes):
                    writer.write(conn.send(h11.Data(data=step)))
                    await writer.drain()
                elif isinstance(step, Pause):
                    await _first(gone.wait(), timeout=step.seconds)
                elif isinstance(step, Stall):
                    await _first(gone.wait(), self._stopping.wait())
                else:  # Cut
                    seen.cut = True
                    writer.close()
                    return
            if gone.is_set():
                return
            seen.completed.set()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        finally:
            watcher.cancel()
            # wait() instead of `await watcher`: a cancellation of this task must not be swallowed.
            await asyncio.wait([watcher])


async def _first(*aws: Any, timeout: float | None = None) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, [json.dumps(payload).encode()], headers or {}, "application/json")


def rechunk(reply: Reply, size: int, pause: float = 0.0) -> Reply:
    """The same bytes, re-split into writes of `size` bytes (mid-line, mid-JSON, mid-UTF-8),
    optionally with a pause between writes so the client reads them separately."""
    data = b"".join(s for s in reply.steps if isinstance(s, bytes))
    steps: list[Step] = []
    for i in range(0, len(data), size):
        if pause and steps:
            steps.append(Pause(pause))
        steps.append(data[i : i + size])
    return Reply(reply.status, steps, reply.headers, reply.content_type)


def truncate(reply: Reply, keep: int, then: Step) -> Reply:
    """The first `keep` byte steps of a reply, then `then` (a `Cut()` or a `Stall()`)."""
    byte_steps = [s for s in reply.steps if isinstance(s, bytes)][:keep]
    return Reply(reply.status, [*byte_steps, then], reply.headers, reply.content_type)


# OpenAI Chat Completions ---------------------------------------------------------------------


def openai_chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    usage: tuple[int, int] | None = None,
    model: str = "fake-model",
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [],
    }
    if delta is not None or finish_reason is not None:
        chunk["choices"] = [
            {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
        ]
    if usage is not None:
        prompt, completion = usage
        chunk["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    return chunk


def sse_data(payload: Any) -> bytes:
    """One `data:` event; a str is sent as is (e.g. `[DONE]`)."""
    return b"data: " + (payload if isinstance(payload, str) else json.dumps(payload)).encode() + b"\n\n"


def openai_stream(chunks: Iterable[dict[str, Any]], *, done: bool = True) -> Reply:
    steps: list[Step] = [sse_data(c) for c in chunks]
    if done:
        steps.append(sse_data("[DONE]"))
    return Reply(steps=steps)


def openai_text(
    text: str | Sequence[str],
    *,
    finish: str = "stop",
    usage: tuple[int, int] | None = (12, 7),
    reasoning: Sequence[str] = (),
) -> Reply:
    """A text answer as OpenAI streams it: role chunk, (reasoning_content chunks as DeepSeek
    sends them), content chunks, the finish chunk, the usage chunk, `[DONE]`."""
    pieces = [text] if isinstance(text, str) else list(text)
    chunks = [openai_chunk({"role": "assistant", "content": ""})]
    chunks += [openai_chunk({"reasoning_content": r, "content": None}) for r in reasoning]
    chunks += [openai_chunk({"content": p}) for p in pieces]
    chunks.append(openai_chunk({}, finish))
    if usage is not None:
        chunks.append(openai_chunk(usage=usage))
    return openai_stream(chunks)


def openai_tool_calls(
    calls: Sequence[tuple[str, str, str]],
    *,
    split: int = 5,
    text: str | None = None,
    finish: str = "tool_calls",
    usage: tuple[int, int] | None = (20, 9),
) -> Reply:
    """(id, name, arguments JSON) calls streamed as OpenAI does: a first fragment with index,
    id, type and name, then the arguments in `split`-character fragments (index only)."""
    chunks = [openai_chunk({"role": "assistant", "content": text})]
    for index, (call_id, name, arguments) in enumerate(calls):
        first = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        chunks.append(openai_chunk({"tool_calls": [first]}))
        for i in range(0, len(arguments), split):
            fragment = {"index": index, "function": {"arguments": arguments[i : i + split]}}
            chunks.append(openai_chunk({"tool_calls": [fragment]}))
    chunks.append(openai_chunk({}, finish))
    if usage is not None:
        chunks.append(openai_chunk(usage=usage))
    return openai_stream(chunks)


def openai_error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    return json_reply(
        status, {"error": {"message": message, "type": type, "param": None, "code": code}}, headers
    )


class FakeOpenAI(FakeServer):
    """`POST /v1/chat/completions`; configure providers with `base_url` (ends in `/v1`)."""

    path = "/v1/chat/completions"
    base_path = "/v1"

    def check(self, seen: Seen) -> Reply | None:
        if self.api_key is not None and seen.headers.get("authorization") != f"Bearer {self.api_key}":
            return openai_error(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            body = seen.json
        except ValueError:
            return openai_error(400, "We could not parse the JSON body of your request.")
        problem = openai_body_problem(body)
        return openai_error(400, problem) if problem else None


def openai_body_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    if body.get("stream") is not True:
        return "the fake only streams: 'stream' must be true"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    pending: set[str] = set()  # calls of the last assistant message still without a result
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return f"messages[{i}].role is invalid"
        if role == "tool":
            if m.get("tool_call_id") not in pending:
                return (
                    "messages with role 'tool' must be a response to a preceeding message with 'tool_calls'"
                )
            pending.discard(m["tool_call_id"])
            continue
        if pending:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                f"{sorted(pending)}"
            )
        if role == "assistant":
            for call in m.get("tool_calls") or []:
                if call.get("type") != "function" or not isinstance(call["function"].get("arguments"), str):
                    return f"messages[{i}].tool_calls: arguments must be a JSON string"
                pending.add(call["id"])
        if not (isinstance(m.get("content"), str) or (role == "assistant" and m.get("tool_calls"))):
            return f"messages[{i}].content must be a string"
        if "reasoning_content" in m:
            return f"messages[{i}]: reasoning_content is not accepted in input messages"
    if pending:
        return f"tool_call_ids without response messages: {sorted(pending)}"
    for t in body.get("tools") or []:
        if t.get("type") != "function" or not t.get("function", {}).get("name"):
            return "tools must be {type: function, function: {name, parameters}}"
    return None


# Anthropic Messages ----------------------------------------------------------------------------


def anthropic_event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


def anthropic_stream(events: Iterable[dict[str, Any]]) -> Reply:
    return Reply(steps=[anthropic_event(e) for e in events])


def anthropic_message_start(input_tokens: int = 12, model: str = "claude-fake") -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    }


def anthropic_end(stop_reason: str, output_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
        {"type": "message_stop"},
    ]


def anthropic_text(
    text: str | Sequence[str],
    *,
    stop_reason: str = "end_turn",
    usage: tuple[int, int] = (12, 7),
    thinking: Sequence[str] = (),
    signature: str = "sig-fake",
) -> Reply:
    """A text answer (optionally after a thinking block) as the Messages API streams it."""
    pieces = [text] if isinstance(text, str) else list(text)
    events = [anthropic_message_start(usage[0])]
    index = 0
    if thinking:
        events.append(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}
        )
        events += [
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": t}}
            for t in thinking
        ]
        events.append(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": signature},
            }
        )
        events.append({"type": "content_block_stop", "index": 0})
        index = 1
    events.append(
        {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
    )
    events.append({"type": "ping"})
    events += [
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}}
        for p in pieces
    ]
    events.append({"type": "content_block_stop", "index": index})
    events += anthropic_end(stop_reason, usage[1])
    return anthropic_stream(events)


def anthropic_tool_use(
    calls: Sequence[tuple[str, str, str]],
    *,
    split: int = 5,
    text: str | None = None,
    usage: tuple[int, int] = (30, 11),
) -> Reply:
    """(id, name, arguments JSON) tool_use blocks, arguments as `input_json_delta` fragments."""
    events = [anthropic_message_start(usage[0])]
    index = 0
    if text:
        events += [
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
            {"type": "content_block_stop", "index": 0},
        ]
        index = 1
    for call_id, name, arguments in calls:
        events.append(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}},
            }
        )
        events += [
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": arguments[i : i + split]},
            }
            for i in range(0, len(arguments), split)
        ]
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    events += anthropic_end("tool_use", usage[1])
    return anthropic_stream(events)


def anthropic_error(status: int, type: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return json_reply(status, {"type": "error", "error": {"type": type, "message": message}}, headers)


class FakeAnthropic(FakeServer):
    """`POST /v1/messages`; configure providers with `base_url` (the root, as for the real API)."""

    path = "/v1/messages"

    def check(self, seen: Seen) -> Reply | None:
        if self.api_key is not None and seen.headers.get("x-api-key") != self.api_key:
            return anthropic_error(401, "authentication_error", "invalid x-api-key")
        if not seen.headers.get("anthropic-version"):
            return anthropic_error(400, "invalid_request_error", "anthropic-version: header is required")
        try:
            body = seen.json
        except ValueError:
            return anthropic_error(400, "invalid_request_error", "the body is not valid JSON")
        problem = anthropic_body_problem(body)
        return anthropic_error(400, "invalid_request_error", problem) if problem else None


def anthropic_body_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or not body.get("model"):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    if body.get("stream") is not True:
        return "the fake only streams: 'stream' must be true"
    thinking = body.get("thinking")
    if thinking is not None:
        budget = thinking.get("budget_tokens")
        if thinking.get("type") != "enabled" or not isinstance(budget, int) or budget < 1024:
            return "thinking.budget_tokens: must be at least 1024"
        if budget >= body["max_tokens"]:
            return "max_tokens must be greater than thinking.budget_tokens"
        if "temperature" in body:
            return "temperature may only be set to 1 when thinking is enabled"
    if not 0 <= body.get("temperature", 0) <= 1:
        return "temperature: must be between 0 and 1"
    if "system" in body and not isinstance(body["system"], str | list):
        return "system: must be a string or a list of text blocks"
    for t in body.get("tools") or []:
        if not t.get("name") or not isinstance(t.get("input_schema"), dict):
            return "tools: each tool needs name and input_schema"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    previous_tool_uses: set[str] = set()
    for i, m in enumerate(messages):
        if previous_tool_uses and not _answers(m, previous_tool_uses):
            return (
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{', '.join(sorted(previous_tool_uses))}"
            )
        role = m.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i == 0 and role != "user":
            return "messages: first message must use the 'user' role"
        if i > 0 and messages[i - 1]["role"] == role:
            return "messages: roles must alternate between 'user' and 'assistant'"
        content = m.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not content:
            return f"messages.{i}: content must be non-empty"
        tool_uses: set[str] = set()
        seen_other = False
        for block in content:
            kind = block.get("type")
            if kind == "text" and not block.get("text"):
                return f"messages.{i}: text content blocks must be non-empty"
            if kind == "tool_use":
                tool_uses.add(block.get("id"))
            if kind == "tool_result":
                if role != "user" or block.get("tool_use_id") not in previous_tool_uses:
                    return f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks"
                if seen_other:
                    return f"messages.{i}: tool_result blocks must come first in the content"
            else:
                seen_other = True
            if kind == "thinking" and not block.get("signature"):
                return f"messages.{i}: thinking blocks need their signature"
        previous_tool_uses = tool_uses
    if previous_tool_uses:
        return "the last assistant message has tool_use blocks without tool_result blocks"
    return None


def _answers(message: dict[str, Any], tool_uses: set[str]) -> bool:
    content = message.get("content")
    results = (
        {b.get("tool_use_id") for b in content if b.get("type") == "tool_result"}
        if isinstance(content, list)
        else set()
    )
    return message.get("role") == "user" and tool_uses <= results
