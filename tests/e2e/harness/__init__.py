"""The e2e harness: a whole stack per test module, people and agents made through the public APIs,
and a raw realtime protocol client. Modules import what they use from here; importing the `stack`
fixture gives a module a stack of its own."""

from tests.e2e.harness.client import Session, kinds, session, text_of
from tests.e2e.harness.people import (
    User,
    api_key,
    chat_agent,
    client_token,
    edge,
    eventually,
    make_agent,
    node,
    signup,
    transcript,
)
from tests.e2e.harness.stack import (
    ACK_WAIT_S,
    GRACE_S,
    LONG,
    NO_LIMIT,
    PACE_MS,
    Hooks,
    Stack,
    ready,
    stack,
    webhook_server,
)

__all__ = [
    "ACK_WAIT_S",
    "GRACE_S",
    "LONG",
    "NO_LIMIT",
    "PACE_MS",
    "Hooks",
    "Session",
    "Stack",
    "User",
    "api_key",
    "chat_agent",
    "client_token",
    "edge",
    "eventually",
    "kinds",
    "make_agent",
    "node",
    "ready",
    "session",
    "signup",
    "stack",
    "text_of",
    "transcript",
    "webhook_server",
]
