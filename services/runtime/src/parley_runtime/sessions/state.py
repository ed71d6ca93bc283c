"""The live state of one session, as kept in Redis between turns.

A turn works on a copy and replaces the stored state in one write when it commits (see
store.py). Everything a turn produces for others goes into the commit too: transcript events in
`outbox`, the events that end the turn (`turn_complete`, `session_closed`) in `tail`. Both are
published after the commit and published again by whoever resumes the session after a crash,
under ids that make the second publication a no-op.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any, Literal, cast
from uuid import UUID

from pydantic import BaseModel, Field, PrivateAttr

from parley_common.conversation_contract import (
    ConversationEndReason,
    ConversationEvent,
    ConversationMessage,
    MessageRole,
)
from parley_common.session_contract import SessionOutput, SessionStart, stable_id
from parley_common.speech_contract import OutputFormat

Phase = Literal["new", "waiting", "closed"]
_EVENT_LISTS = {"history", "outbox", "tail"}  # the last fields: `encoded` writes the two after the rest


class HistoryItem(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class SessionState(BaseModel):
    conversation_id: UUID
    agent_id: str
    user_id: UUID | None = None
    channel: str | None = None
    render_directive: str | None = None
    started_at: datetime
    # new: the flow has not run yet; waiting: paused on a DIALOG node for user input.
    phase: Phase = "new"
    node_id: str | None = None
    node_turns: int = 0  # user turns taken in the current DIALOG node
    variables: dict[str, Any] = Field(default_factory=dict)
    # Appended only through `remember` (which counts it in `history_seq`), dropped only from the
    # front: the store saves only what a turn appended (sessions/store.py).
    history: list[HistoryItem] = Field(default_factory=list)
    history_seq: int = 0  # history items ever appended
    turn_no: int = 0  # committed turns, for deterministic ids of what a turn does
    msg_seq: int = 0  # transcript messages committed
    last_input_seq: int = 0  # SESSION_IN stream sequence of the last input fully processed
    out_index: int = 0  # highest `session.<id>.out` index this state accounts for (tail included)
    last_activity_at: datetime
    connection_id: str | None = None
    disconnected_at: datetime | None = None
    audio_warned: bool = False
    # A voice session: the agent's text is also spoken, in this format (sessions/voice.py).
    voice_output: OutputFormat | None = None
    end_reason: ConversationEndReason | None = None
    outbox: list[ConversationEvent] = Field(default_factory=list)
    tail: list[SessionOutput] = Field(default_factory=list)
    # `history_seq` as last saved or loaded (-1: unknown, the next save writes the whole history).
    # A turn's working copy carries it over from the committed state.
    _saved_seq: int = PrivateAttr(default=0)
    # At least the size of the history's JSON as last saved or read back (its items' JSON, summed):
    # what was saved, plus what a turn appends, bounds a save's history without measuring each item.
    _saved_bytes: int = PrivateAttr(default=0)
    # The size of each history item's JSON, by item (never edited), measured once, for when the
    # history is measured item by item. Shared with working copies (they share the items).
    _sizes: dict[int, tuple[HistoryItem, int]] = PrivateAttr(default_factory=dict)
    # The JSON of the outbox's events and the tail's outputs as last made (`events_json`), with the
    # objects it was made of: a commit saves them in the state and then publishes them.
    _events_json: tuple[list[Any], list[bytes], list[bytes]] | None = PrivateAttr(default=None)

    # Which fields were given or assigned (pydantic's `model_fields_set`) is never asked of a state:
    # it is saved whole. pydantic keeps that record in a set per object that grew with each field
    # a turn assigned, to ~2.2 KiB (a table of 128 slots once it held 19 names), kept for as long
    # as the session was held; a state loaded from Redis started with all 24. So the record is
    # emptied once a state is made, and an assignment does what pydantic's does for a field that
    # is not validated on assignment, without adding to it.

    def model_post_init(self, context: Any, /) -> None:
        self.__pydantic_fields_set__.clear()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FIELDS:
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    @classmethod
    def new(cls, start: SessionStart) -> SessionState:
        conv = str(start.conversation_id)
        variables: dict[str, Any] = {
            **start.variables,
            "conversation_id": conv,
            "agent_id": start.agent_id,
            "channel": start.channel or "",
        }
        return cls(
            conversation_id=start.conversation_id,
            agent_id=start.agent_id,
            user_id=start.principal.user_id,
            channel=start.channel,
            render_directive=start.render_directive,
            started_at=start.started_at,
            variables=variables,
            last_activity_at=start.started_at,
            connection_id=start.connection_id,
            voice_output=start.voice.output if start.voice is not None else None,
        )

    def working_copy(self) -> SessionState:
        """What a turn works on: this state as a copy the turn's changes leave this one untouched
        by, with an empty outbox and tail. Its containers are new; what they hold is shared where
        a turn never changes it in place: history items (appended and dropped, never edited),
        scalar variables and the other fields (replaced, never edited). A variable holding a list
        or a dict (a webhook's result, a node's default) is copied. Several times cheaper than
        `model_validate(model_dump())` (which builds every item again): ~7 against ~36 µs with
        20 history items."""
        variables = {
            name: copy.deepcopy(value) if isinstance(value, dict | list) else value
            for name, value in self.variables.items()
        }
        return self.model_copy(
            update={"history": list(self.history), "variables": variables, "outbox": [], "tail": []}
        )

    def read_back(self, items: list[bytes]) -> SessionState:
        """This state as read from Redis, its history from its own list (`items`, each an item's
        JSON). A state saved with its history inside (before the history had a list) has it
        already, and is saved whole next time."""
        if self.history:
            self.history_seq = max(self.history_seq, len(self.history))
            self._saved_seq = -1
            self._saved_bytes = self.history_bytes()
        else:
            self.history = [HistoryItem.model_validate_json(raw) for raw in items]
            self._sizes = {id(item): (item, len(raw)) for item, raw in zip(self.history, items, strict=True)}
            self._saved_seq = self.history_seq
            self._saved_bytes = sum(len(raw) for raw in items)
        return self

    def history_bytes(self) -> int:
        """The size of the history's items' JSON, summed (each item measured once)."""
        private = self._private()
        sizes, total = private["_sizes"], 0
        for item in self.history:
            known = sizes.get(id(item))
            if known is None or known[0] is not item:
                known = sizes[id(item)] = (item, len(item.model_dump_json().encode()))
            total += known[1]
        if len(sizes) > 2 * len(self.history) + 8:  # forget the items dropped since
            private["_sizes"] = {id(item): sizes[id(item)] for item in self.history}
        return total

    def history_to_save(self) -> tuple[int, int, list[HistoryItem] | None]:
        """`history_seq` as last saved or read back (by this state or the one its working copy was
        made from), the size of the history's JSON then, and the history items appended since
        (every item kept, when more were appended than are kept; None: not known, the whole
        history is to be saved)."""
        private = self._private()
        saved = private["_saved_seq"]
        appended = self.history_seq - saved
        if saved < 0 or appended < 0:
            return saved, private["_saved_bytes"], None
        return saved, private["_saved_bytes"], self.history[max(0, len(self.history) - appended) :]

    def saved(self, history_bytes: int) -> None:
        """Saved, with a history of at most `history_bytes` of JSON."""
        private = self._private()
        private["_saved_seq"], private["_saved_bytes"] = self.history_seq, history_bytes

    def events_json(self) -> tuple[list[bytes], list[bytes]]:
        """The JSON of each outbox event and each tail output, made once for the commit that saves
        them in the state (`encoded`) and publishes them after (~15 µs a turn made twice); made
        again when either list holds other objects since."""
        private = self._private()
        known = private["_events_json"]
        items = [*self.outbox, *self.tail]
        if known is not None and _same(known[0], items):
            return known[1], known[2]
        outbox = [event.model_dump_json().encode() for event in self.outbox]
        tail = [out.model_dump_json().encode() for out in self.tail]
        private["_events_json"] = (items, outbox, tail)
        return outbox, tail

    def published(self) -> None:
        """The outbox and the tail are out: both emptied, and their JSON let go (a held session
        keeps its state between turns: the last turn's events would stay in memory with it)."""
        self.outbox, self.tail = [], []
        self._private()["_events_json"] = None

    def encoded(self) -> bytes:
        """The state's JSON without its history, as `model_dump_json(exclude={"history"})` writes it
        (a test holds the two equal), its outbox and tail from `events_json`."""
        outbox, tail = self.events_json()
        head = self.model_dump_json(exclude=_EVENT_LISTS).encode()
        return b"".join((head[:-1], b',"outbox":[', b",".join(outbox), b'],"tail":[', b",".join(tail), b"]}"))

    def _private(self) -> dict[str, Any]:
        # Pydantic's private attributes, read without its `__getattr__` (~1.4 µs a read here): the
        # store reads them every save.
        return cast(dict[str, Any], self.__pydantic_private__)

    def message(self, role: MessageRole, content: str, at: datetime) -> ConversationMessage:
        """Append a transcript message to the outbox, numbered after the committed ones."""
        seq = self.msg_seq
        self.msg_seq += 1
        event = ConversationMessage(
            event_id=stable_id(self.conversation_id, f"message:{seq}"),
            conversation_id=self.conversation_id,
            at=at,
            message_id=stable_id(self.conversation_id, f"message-id:{seq}"),
            role=role,
            content=content[:200_000],
            seq=seq,
        )
        self.outbox.append(event)
        return event

    def remember(self, role: Literal["user", "assistant"], content: str, limit: int) -> None:
        self.history.append(HistoryItem(role=role, content=content))
        self.history_seq += 1
        if len(self.history) > limit:
            del self.history[: len(self.history) - limit]

    def deadline(self, max_duration: timedelta, max_silence: timedelta, *, idle: bool) -> datetime:
        """When the session times out: its maximum duration, or silence while it waits for input."""
        end = self.started_at + max_duration
        if idle and self.phase == "waiting":
            end = min(end, self.last_activity_at + max_silence)
        return end


_FIELDS = frozenset(SessionState.model_fields)  # assigned past pydantic's record (`__setattr__`)


def _same(these: list[Any], those: list[Any]) -> bool:
    return len(these) == len(those) and all(a is b for a, b in zip(these, those, strict=True))
