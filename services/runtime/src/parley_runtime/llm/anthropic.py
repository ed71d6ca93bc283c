"""Anthropic Messages API streaming (`POST {base_url}/v1/messages`)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing

import httpx

from parley_runtime.llm.anthropic_wire import API_VERSION, EventDecoder, build_body
from parley_runtime.llm.errors import protocol_error
from parley_runtime.llm.sse import drain_rest, sse_events
from parley_runtime.llm.transport import HttpOptions, HttpProvider
from parley_runtime.llm.types import ChatRequest, LLMEvent

DEFAULT_BASE_URL = "https://api.anthropic.com"


class AnthropicProvider(HttpProvider):
    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        default_model: str | None = None,
        name: str = "anthropic",
        default_max_tokens: int = 4096,
        options: HttpOptions | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            name=name,
            # Accept the base with or without the version segment.
            base_url=base_url.rstrip("/").removesuffix("/v1"),
            api_key=api_key,
            default_model=default_model,
            options=options,
            client=client,
        )
        self.default_max_tokens = default_max_tokens

    def _build(self, request: ChatRequest, model: str) -> httpx.Request:
        return self._client.build_request(
            "POST",
            f"{self.base_url}/v1/messages",
            json=build_body(request, model, default_max_tokens=self.default_max_tokens),
            headers={
                "x-api-key": self._api_key or "",  # always given (the constructor requires it)
                "anthropic-version": API_VERSION,
                "accept": "text/event-stream",
            },
            timeout=self.options.timeout,
        )

    async def _events(self, request: ChatRequest, model: str) -> AsyncGenerator[LLMEvent, None]:
        async with self._open(request, model) as response:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise protocol_error(self.name, "expected an event stream: is the base URL right?")
            decoder = EventDecoder(self.name)
            async with aclosing(sse_events(response, self.name)) as events:
                async for sse in events:
                    try:
                        payload = json.loads(sse.data)
                    except ValueError as exc:
                        raise protocol_error(
                            self.name, f"the data of a {sse.event} event is not JSON"
                        ) from exc
                    for event in decoder.feed(payload):
                        yield event
                    if decoder.done:
                        break
                for event in decoder.end():
                    yield event
                await drain_rest(events)
