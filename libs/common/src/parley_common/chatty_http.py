"""FastAPI declarations of the ServiceAi (Chatty) contract that more than one service serves.

The catalog (`/api/chatty-voice/*`) and the session gateway (`/api/realtime-token`,
`/api/csrf-token`, `/api/realtime/webrtc`) both bind a request to an agent the same way
(docs/webrtc.md#which-agent-a-caller-is-bound-to): `BoundAgent` is that header, declared once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

from parley_common.chatty_contract import AGENT_HEADER

BoundAgent = Annotated[
    str | None,
    Header(
        alias=AGENT_HEADER,
        max_length=200,
        description="Parley: the agent a session cookie or API key is bound to (docs/webrtc.md).",
    ),
]
