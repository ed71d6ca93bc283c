"""HTTP plumbing shared by the HTTP providers: client, timeouts, retries before the first byte,
and a tracing span around each stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from opentelemetry import trace
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from parley_common.errors import Codes
from parley_runtime.llm.errors import LLMError, error_from_status, transport_error
from parley_runtime.llm.types import ChatRequest, Finish, LLMEvent, TextDelta, Usage

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("parley_runtime.llm")


@dataclass(frozen=True)
class HttpOptions:
    connect_timeout_s: float = 5.0
    # Longest silence between two bytes of an answer (also the wait for the first one).
    read_timeout_s: float = 60.0
    write_timeout_s: float = 10.0
    max_attempts: int = 3
    retry_initial_s: float = 0.5
    retry_max_s: float = 8.0
    # A provider asking for a longer wait than this fails at once instead of holding the turn.
    retry_after_cap_s: float = 30.0
    max_error_body_bytes: int = 65_536

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_timeout_s,
            read=self.read_timeout_s,
            write=self.write_timeout_s,
            pool=self.connect_timeout_s,
        )


def new_client(options: HttpOptions | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=(options or HttpOptions()).timeout, follow_redirects=False)


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    build: Callable[[], httpx.Request],
    *,
    provider: str,
    options: HttpOptions,
) -> AsyncIterator[httpx.Response]:
    """Send the request and yield the 2xx response, body unread; close it on exit.

    Attempts are repeated (tenacity) only while nothing has been received: connection failures
    and retryable statuses (429, 5xx). Once this yields, the caller is streaming output and a
    failure is final, so a reply can never be produced twice.
    """

    def retry_wanted(exc: BaseException) -> bool:
        if not (isinstance(exc, LLMError) and exc.retryable):
            return False
        return exc.retry_after is None or exc.retry_after <= options.retry_after_cap_s

    backoff = wait_exponential_jitter(
        multiplier=options.retry_initial_s, max=options.retry_max_s, jitter=options.retry_initial_s
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, LLMError) and exc.retry_after is not None:
            return exc.retry_after
        return float(backoff(state))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "llm.retry",
            provider=provider,
            attempt=state.attempt_number,
            error=str(exc),
            wait_s=round(state.upcoming_sleep, 3),
        )

    response: httpx.Response | None = None
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(options.max_attempts),
        wait=wait,
        retry=retry_if_exception(retry_wanted),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            response = await _attempt(client, build(), provider, options)
    assert response is not None  # reraise=True: the loop either set it or raised
    try:
        yield response
    finally:
        await response.aclose()


async def _attempt(
    client: httpx.AsyncClient, request: httpx.Request, provider: str, options: HttpOptions
) -> httpx.Response:
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise transport_error(provider, exc, before_response=True) from exc
    if response.status_code < 400:
        return response
    try:
        body = await read_capped(response, options.max_error_body_bytes)
    except httpx.HTTPError:
        body = b""
    finally:
        await response.aclose()
    raise error_from_status(provider, response.status_code, response.headers, body)


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body[:limit])


async def traced(
    provider: str, model: str, events: AsyncGenerator[LLMEvent, None]
) -> AsyncGenerator[LLMEvent, None]:
    """Wrap a provider stream in a `gen_ai` span, with a `first_token` event at the first text (the
    moment `parley_llm_time_to_first_token_seconds` measures). The span is never made current: the
    generator may be finalized from another task, where detaching a context token would fail."""
    span = tracer.start_span(
        "llm.stream", attributes={"gen_ai.system": provider, "gen_ai.request.model": model}
    )
    first = True
    try:
        async with aclosing(events) as stream:
            async for event in stream:
                if first and isinstance(event, TextDelta) and event.text:
                    first = False
                    span.add_event("first_token")
                _annotate(span, event)
                yield event
    except LLMError as exc:
        span.set_status(trace.StatusCode.ERROR, exc.code.code)
        span.record_exception(exc)
        raise
    finally:
        span.end()


def _annotate(span: Any, event: LLMEvent) -> None:
    if isinstance(event, Usage):
        span.set_attribute("gen_ai.usage.input_tokens", event.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", event.output_tokens)
    elif isinstance(event, Finish):
        span.set_attribute("gen_ai.response.finish_reasons", [event.raw_reason or event.reason])


class HttpProvider:
    """What every HTTP provider shares: its name, base URL, default model, key and client (its own
    unless one is given, then closed by its owner), `stream` traced per request, `aclose`."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: str | None,
        default_model: str | None,
        options: HttpOptions | None,
        client: httpx.AsyncClient | None,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.default_model = default_model
        self.options = options or HttpOptions()
        self._api_key = api_key
        self._own_client = client is None
        self._client = client or new_client(self.options)

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    def stream(self, request: ChatRequest) -> AsyncGenerator[LLMEvent, None]:
        model = request.model or self.default_model or ""
        return traced(self.name, model, self._events(request, model))

    def _events(self, request: ChatRequest, model: str) -> AsyncGenerator[LLMEvent, None]:
        raise NotImplementedError

    def _build(self, request: ChatRequest, model: str) -> httpx.Request:
        raise NotImplementedError

    @asynccontextmanager
    async def _open(self, request: ChatRequest, model: str) -> AsyncIterator[httpx.Response]:
        """The streaming response to `request` (retried as `open_stream` says); no model is a 400."""
        if not model:
            raise LLMError(Codes.LLM_BAD_REQUEST, self.name, "no model named and no default model configured")
        build = lambda: self._build(request, model)  # noqa: E731 - rebuilt for each attempt
        async with open_stream(self._client, build, provider=self.name, options=self.options) as response:
            yield response

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()
