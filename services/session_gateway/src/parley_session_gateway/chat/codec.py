"""The session's output as chat frames: a pure function of the output stream (no socket).

Text deltas become one streamed response (`response-start`, `response-chunk`s, `response-end` at
the turn's end), a whole text is a response of one chunk, the runtime's errors `message-error`, and
the end `session-closed` (the reason mapped to the chat status). Every frame made here is numbered
with `seq` (1, 2, … per session): a connection always reads the output from its start, so a resumed
one numbers exactly as the first did and sends only what follows the client's `last_event`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from parley_common import session_contract as sc
from parley_common.conversation_contract import ConversationEndReason
from parley_session_gateway.chat.frames import (
    MessageError,
    ResponseChunk,
    ResponseEnd,
    ResponseStart,
    SessionClosed,
    SessionFrame,
)

_STATUS: dict[ConversationEndReason, Literal["completed", "timeout", "failed"]] = {
    ConversationEndReason.TIMEOUT: "timeout",
    ConversationEndReason.ERROR: "failed",
}


class ChatOutput:
    def __init__(self, session_id: str, started_at: datetime, seen: int = 0) -> None:
        self.session_id = session_id
        self.started_at = started_at
        self.seen = seen  # the client's `last_event`: frames up to it are not sent again
        self.seq = 0  # session frames made so far (sent, or skipped as seen before a resume)
        self.turn: list[str] | None = None  # text of the response being streamed

    def frames(self, event: sc.ServerEvent) -> list[SessionFrame]:
        """The frames to send for one output event (numbered; those seen before a resume left out)."""
        made = self._make(event)
        out: list[SessionFrame] = []
        for frame in made:
            self.seq += 1
            frame.seq = self.seq
            # Seen before a resume: skipped, except the end (a resume after it gets it again).
            if self.seq > self.seen or isinstance(frame, SessionClosed):
                out.append(frame)
        return out

    def _make(self, event: sc.ServerEvent) -> list[SessionFrame]:
        frames: list[SessionFrame] = []
        if isinstance(event, sc.ServerTextDelta):
            if self.turn is None:
                self.turn = []
                frames.append(ResponseStart())
            self.turn.append(event.chunk)
            frames.append(ResponseChunk(content=event.chunk))
        elif isinstance(event, sc.ServerTextFull):
            if self.turn is None:  # a whole message without deltas
                frames += [ResponseStart(), ResponseChunk(content=event.content)]
            self.turn = [event.content]
        elif isinstance(event, sc.ServerTurnComplete | sc.ServerSessionClosed) and self.turn is not None:
            frames.append(self.end_of_turn())
            self.turn = None
        elif isinstance(event, sc.ServerError):
            frames.append(MessageError(error=f"{event.code}: {event.message}"))
        if isinstance(event, sc.ServerSessionClosed):
            frames.append(self.closed(event.reason))
        return frames

    def end_of_turn(self) -> ResponseEnd:
        return ResponseEnd(content="".join(self.turn or []))

    def closed(self, reason: ConversationEndReason) -> SessionClosed:
        now = datetime.now(UTC)
        return SessionClosed(
            session_id=self.session_id,
            status=_STATUS.get(reason, "completed"),
            reason=reason.value,
            duration=round((now - self.started_at).total_seconds(), 3),
            timestamp=now,
        )
