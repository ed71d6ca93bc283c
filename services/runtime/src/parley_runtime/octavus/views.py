"""The stored session as each client reads it, and back: internal `ChatMessage`s (`get`), UI
messages (`?format=ui`), and a session rebuilt from UI messages (`restore`)."""

from __future__ import annotations

import json
from typing import Any, Literal

from parley_common.octavus import sessions as wire
from parley_runtime.llm import ChatMessage as LLMMessage
from parley_runtime.llm import ToolCall
from parley_runtime.octavus.state import MAIN, Message, Part, Session, ToolCallPart

_INTERNAL_STATUS: dict[str, wire.ToolCallStatus] = {
    "pending": "pending",
    "done": "available",
    "error": "error",
}


def _tool_info(tool: ToolCallPart) -> wire.ToolCallInfo:
    return wire.ToolCallInfo(
        id=tool.id,
        name=tool.name,
        description=tool.description,
        arguments=tool.args,
        status=_INTERNAL_STATUS[tool.status],
        result=tool.result,
        error=tool.error,
    )


def _internal_part(part: Part) -> wire.MessagePart | None:
    common: dict[str, Any] = {"type": part.type, "visible": part.visible, "thread": part.thread}
    if part.type in ("text", "reasoning"):
        return wire.MessagePart(**common, content=part.text)
    if part.type == "tool-call" and part.tool is not None:
        return wire.MessagePart(**common, tool_call=_tool_info(part.tool))
    if part.type == "object":
        obj = {"id": part.object_id or "", "typeName": part.type_name or "", "value": part.value}
        return wire.MessagePart(**common, content=part.text, object=obj)
    if part.type == "source":
        return wire.MessagePart(**common, source=part.raw)
    if part.type == "file":
        return wire.MessagePart(**common, file=part.raw)
    return None  # operations are UI-only


def internal_message(message: Message) -> wire.ChatMessage:
    parts = [p for p in (_internal_part(part) for part in message.parts) if p is not None]
    main = [p for p in message.parts if p.thread is None]
    tools = [_tool_info(p.tool) for p in main if p.tool is not None]
    reasoning = "".join(p.text for p in main if p.type == "reasoning")
    signature = next((p.signature for p in main if p.signature), None)
    return wire.ChatMessage(
        id=message.id,
        role=message.role,
        parts=parts,
        created_at=message.created_at,
        visible=message.visible,
        content="".join(p.text for p in main if p.type == "text"),
        tool_calls=tools or None,
        reasoning=reasoning or None,
        reasoning_signature=signature,
    )


def state_body(session: Session) -> wire.SessionState:
    return wire.SessionState(
        id=session.id,
        agent_id=session.agent_id,
        input=session.input,
        variables=session.variables,
        resources=session.resources,
        messages=[internal_message(m) for m in session.messages],
        created_at=session.created_at,
        updated_at=session.updated_at,
    )


# --- UI messages ------------------------------------------------------------------------------


def _ui_part(
    part: Part,
) -> wire.UITextPart | wire.UIToolCallPart | wire.UIOperationPart | wire.UIOtherPart | None:
    if not part.visible:
        return None
    if part.type in ("text", "reasoning"):
        return wire.UITextPart(type=part.type, text=part.text, thread=part.thread)
    if part.type == "tool-call" and part.tool is not None:
        t = part.tool
        return wire.UIToolCallPart(
            type="tool-call",
            tool_call_id=t.id,
            tool_name=t.name,
            display_name=t.display_name,
            args=t.args,
            result=t.result,
            error=t.error,
            status=t.status,
            thread=part.thread,
        )
    if part.type == "operation":
        return wire.UIOperationPart(
            type="operation",
            operation_id=part.operation_id or "",
            name=part.operation_name or "",
            operation_type=part.operation_type or "",
            status="done",
            thread=part.thread,
        )
    if part.type == "object":
        return wire.UIOtherPart.model_validate(
            {"type": "object", "id": part.object_id or "", "typeName": part.type_name or "",
             "object": part.value, "status": "done", "thread": part.thread}
        )  # fmt: skip
    if part.raw is not None:
        return wire.UIOtherPart.model_validate({**part.raw, "type": part.type, "thread": part.thread})
    return None


def ui_messages(session: Session) -> list[wire.UIMessage]:
    out: list[wire.UIMessage] = []
    for message in session.messages:
        if message.role == "system" or not message.visible:
            continue
        parts = [p for p in (_ui_part(part) for part in message.parts) if p is not None]
        if parts:
            out.append(
                wire.UIMessage(id=message.id, role=message.role, parts=parts, created_at=message.created_at)
            )
    return out


def ui_body(session: Session) -> wire.UISessionState:
    return wire.UISessionState(
        session_id=session.id, agent_id=session.agent_id, messages=ui_messages(session)
    )


# --- restore ----------------------------------------------------------------------------------


def _stored_part(part: wire.UIPart) -> Part:
    thread = part.thread
    if isinstance(part, wire.UITextPart):
        return Part(type=part.type, text=part.text, thread=thread)
    if isinstance(part, wire.UIToolCallPart):
        status: Literal["pending", "done", "error"] = (
            "done"
            if part.status == "done"
            else "error"
            if part.status in ("error", "cancelled")
            else "pending"
        )
        error = part.error or ("cancelled" if part.status == "cancelled" else None)
        tool = ToolCallPart(
            id=part.tool_call_id,
            name=part.tool_name,
            display_name=part.display_name,
            args=part.args,
            result=part.result,
            error=error,
            status=status,
        )
        return Part(type="tool-call", tool=tool, thread=thread)
    if isinstance(part, wire.UIOperationPart):
        return Part(
            type="operation",
            operation_id=part.operation_id,
            operation_name=part.name,
            operation_type=part.operation_type,
            thread=thread,
        )
    raw = part.model_dump(by_alias=True, exclude_none=True)
    if part.type == "object":
        return Part(
            type="object",
            object_id=str(raw.get("id", "")),
            type_name=str(raw.get("typeName", "")),
            value=raw.get("object"),
            text=json.dumps(raw.get("object"), ensure_ascii=False),
            thread=thread,
        )
    raw.pop("thread", None)
    return Part(type=part.type, raw=raw, thread=thread)


def _history(message: Message) -> list[LLMMessage]:
    """What the LLM saw of a message: text, and tool calls answered by tool messages."""
    if message.role == "user":
        text = "".join(p.text for p in message.parts if p.type == "text" and p.thread is None)
        return [LLMMessage(role="user", content=text)] if text else []
    out: list[LLMMessage] = []
    text = ""
    calls: list[ToolCall] = []
    results: list[LLMMessage] = []
    for part in message.parts:
        if part.thread is not None:
            continue
        if part.type in ("text", "object"):
            if calls:
                out.append(LLMMessage(role="assistant", content=text, tool_calls=calls))
                out.extend(results)
                text, calls, results = "", [], []
            text += part.text
        elif part.type == "tool-call" and part.tool is not None and part.tool.status != "pending":
            t = part.tool
            calls.append(ToolCall(id=t.id, name=t.name, arguments=t.args))
            results.append(tool_message(t.id, t.name, t.result, t.error if t.status == "error" else None))
    if text or calls:
        out.append(LLMMessage(role="assistant", content=text, tool_calls=calls))
        out.extend(results)
    return out


def tool_message(call_id: str, name: str, result: Any, error: str | None) -> LLMMessage:
    """What the LLM is told of a tool's outcome: its result as text (JSON unless a string)."""
    if error is not None:
        content = f"Error: {error}"
    else:
        content = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
    return LLMMessage(role="tool", tool_call_id=call_id, name=name, content=content)


def restore_messages(session: Session, messages: list[wire.UIMessage]) -> None:
    """Replace the session's messages and main-thread history with the client's UI messages."""
    session.messages = [
        Message(id=m.id, role=m.role, created_at=m.created_at, parts=[_stored_part(p) for p in m.parts])
        for m in messages
    ]
    history: list[LLMMessage] = []
    for message in session.messages:
        history.extend(_history(message))
    session.threads = {MAIN: session.thread(MAIN).model_copy(update={"history": history})}
