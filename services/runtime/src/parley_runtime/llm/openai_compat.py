"""OpenAI-compatible Chat Completions streaming: OpenAI, DeepSeek, Mistral, Gemini's OpenAI
endpoint, vLLM, Ollama, llama.cpp server. One class; an instance per engine (base URL, key,
default model, dialect)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing

import httpx

from parley_runtime.llm.errors import error_from_payload, protocol_error
from parley_runtime.llm.openai_wire import ChunkDecoder, OpenAIDialect, build_body
from parley_runtime.llm.sse import drain_rest, sse_events
from parley_runtime.llm.transport import HttpOptions, HttpProvider, read_capped
from parley_runtime.llm.types import ChatRequest, LLMEvent


class OpenAICompatProvider(HttpProvider):
    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: str | None = None,
        default_model: str | None = None,
        dialect: OpenAIDialect | None = None,
        options: HttpOptions | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            name=name,
            base_url=base_url.rstrip("/"),
            api_key=api_key,
            default_model=default_model,
            options=options,
            client=client,
        )
        self.dialect = dialect or OpenAIDialect()

    def _build(self, request: ChatRequest, model: str) -> httpx.Request:
        headers = {"accept": "text/event-stream"}
        if self._api_key:  # local servers (Ollama, llama.cpp) usually run without one
            headers["authorization"] = f"Bearer {self._api_key}"
        return self._client.build_request(
            "POST",
            f"{self.base_url}/chat/completions",
            json=build_body(request, model, self.dialect),
            headers=headers,
            timeout=self.options.timeout,
        )

    async def _events(self, request: ChatRequest, model: str) -> AsyncGenerator[LLMEvent, None]:
        async with self._open(request, model) as response:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                body = await read_capped(response, self.options.max_error_body_bytes)
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = None
                if isinstance(payload, dict) and payload.get("error"):
                    raise error_from_payload(self.name, payload)
                raise protocol_error(self.name, "expected an event stream: is the base URL right?")
            decoder = ChunkDecoder(self.name)
            saw_done = False
            async with aclosing(sse_events(response, self.name)) as events:
                async for sse in events:
                    if sse.data.strip() == "[DONE]":
                        saw_done = True
                        break
                    try:
                        chunk = json.loads(sse.data)
                    except ValueError as exc:
                        raise protocol_error(self.name, "a stream event is not JSON") from exc
                    for event in decoder.feed(chunk):
                        yield event
                for event in decoder.end(saw_done):
                    yield event
                await drain_rest(events)
