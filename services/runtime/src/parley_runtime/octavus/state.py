"""What an Octavus agent session keeps between triggers (stored as JSON in Redis, see store.py).

One record holds everything a trigger reads and writes: input, resources and variables; the
messages as the user sees them (`messages`, served by both GETs); per thread, the history the LLM
sees; and, while client or server tools run, the paused execution (`pending`).
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from parley_common.octavus.blocks import Thinking
from parley_runtime.llm import ChatMessage as LLMMessage

MAIN = "main"


class ThreadConfig(BaseModel):
    """A named thread's LLM settings (start-thread, with the agent's for what it leaves unset)."""

    model: str
    system: str
    input: list[tuple[str, str]] = Field(default_factory=list)  # (name in the prompt, variable)
    tools: list[str] = Field(default_factory=list)
    agentic: bool = False
    max_steps: int = 10
    temperature: float | None = None
    thinking: Thinking | None = None


class Thread(BaseModel):
    config: ThreadConfig | None = None  # None: the main thread, configured by `agent:`
    history: list[LLMMessage] = Field(default_factory=list)


class ToolCallPart(BaseModel):
    id: str
    name: str
    display_name: str | None = None
    description: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None
    status: Literal["pending", "done", "error"] = "pending"


class Part(BaseModel):
    """One part of a stored message; `visible` False parts are for the LLM (and `get`) only."""

    type: Literal["text", "reasoning", "tool-call", "operation", "object", "source", "file"]
    visible: bool = True
    thread: str | None = None  # None: the main thread
    text: str = ""
    signature: str | None = None  # reasoning
    tool: ToolCallPart | None = None
    operation_id: str | None = None
    operation_name: str | None = None
    operation_type: str | None = None
    object_id: str | None = None  # object parts (structured output)
    type_name: str | None = None
    value: Any = None
    raw: dict[str, Any] | None = None  # source and file parts, kept as the client sent them


class Message(BaseModel):
    id: str
    role: Literal["user", "assistant", "system"]
    created_at: str
    visible: bool = True
    parts: list[Part] = Field(default_factory=list)


class PendingCall(BaseModel):
    id: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    source: Literal["llm", "block"]
    output_variable: str | None = None


class Pending(BaseModel):
    """An execution paused on a `tool-request`, waiting for `toolResults`."""

    execution_id: str
    message_id: str
    trigger: str
    trigger_input: dict[str, Any] = Field(default_factory=dict)
    block_index: int
    thread: str = MAIN
    steps: int = 0  # LLM tool rounds used by the paused next-message block
    scratch: list[LLMMessage] = Field(default_factory=list)  # its exchange so far
    calls: list[PendingCall]


class Session(BaseModel):
    id: str
    agent_id: str
    owner_user_id: UUID | None = None
    owner_org_id: UUID | None = None
    created_at: str
    updated_at: str
    input: dict[str, Any] = Field(default_factory=dict)
    variables: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    threads: dict[str, Thread] = Field(default_factory=lambda: {MAIN: Thread()})
    messages: list[Message] = Field(default_factory=list)
    pending: Pending | None = None

    def thread(self, name: str | None) -> Thread:
        return self.threads.setdefault(name or MAIN, Thread())

    def message(self, message_id: str) -> Message | None:
        return next((m for m in reversed(self.messages) if m.id == message_id), None)


class Tombstone(BaseModel):
    """Kept longer than the session, so an expired session reads as `status: expired`."""

    agent_id: str
    created_at: str
    owner_user_id: UUID | None = None
    owner_org_id: UUID | None = None
