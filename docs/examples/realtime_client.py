"""A browser-free client of Parley's realtime protocol (Kivox `/realtime`), with `websockets`.

    python docs/examples/realtime_client.py --agent <agent id> --token <API key or client token> \
        [--url ws://127.0.0.1:8080/realtime] [--say "Hello" --say "Bye"]

Without `--say` it reads one message per line from stdin (Ctrl-D ends the session). Answers are
printed as they stream. If the socket drops, it reconnects and resumes the conversation: it
counts the events it has received and asks for the ones after them (`?resume=…&last_event=…`),
so nothing is lost or printed twice. See docs/realtime.md for the protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class Conversation:
    def __init__(self, url: str, token: str, agent_id: str) -> None:
        self.url, self.token, self.agent_id = url, token, agent_id
        self.conversation_id: str | None = None
        self.received = 0  # events after handshake_ok, ticks excluded: the resume position
        self.ws: ClientConnection | None = None

    async def open(self) -> None:
        query = {"token": self.token}
        if self.conversation_id:
            query |= {"resume": self.conversation_id, "last_event": str(self.received)}
        self.ws = await connect(f"{self.url}?{urlencode(query)}", max_size=None)
        await self.ws.send(
            json.dumps({"type": "handshake", "agent_id": self.agent_id, "channel": "cli-text"})
        )
        reply = json.loads(await self.ws.recv())
        if reply["type"] != "handshake_ok":
            raise SystemExit(f"handshake refused: {reply.get('reason')}")
        self.conversation_id = reply["conversation_id"]

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(message))

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event of the conversation, across reconnects, until `session_closed`."""
        while True:
            assert self.ws is not None
            try:
                raw = await self.ws.recv()
            except ConnectionClosed:
                print("\n[connection lost, resuming]", file=sys.stderr)
                await asyncio.sleep(0.5)
                await self.open()
                continue
            if isinstance(raw, bytes):
                continue  # the audio of the audio_delta just received
            event = json.loads(raw)
            if event["type"] != "tick":
                self.received += 1
            yield event
            if event["type"] == "session_closed":
                return


class Printer:
    """Answers as they stream; one line per message."""

    def __init__(self) -> None:
        self.streaming = False  # inside a streamed answer (no newline yet)

    def show(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "text_delta":
            self.streaming = True
            print(event["chunk"], end="", flush=True)
            return
        if self.streaming:
            print()
            self.streaming = False
        if kind == "text_full":
            print(f"agent: {event['content']}")
        elif kind == "error":
            print(f"[error {event['code']}: {event['message']}]", file=sys.stderr)
        elif kind == "transfer":
            print(f"[transfer to agent {event['agent_id']}: {event['reason']}]")
        elif kind == "session_closed":
            print(f"[session closed: {event['reason']}]")


async def main(args: argparse.Namespace) -> None:
    conversation = Conversation(args.url, args.token, args.agent)
    await conversation.open()
    print(f"[conversation {conversation.conversation_id}]", file=sys.stderr)
    script: list[str] | None = list(args.say) if args.say else None
    loop = asyncio.get_running_loop()

    async def next_line() -> str | None:
        if script is not None:
            return script.pop(0) if script else None
        line = await loop.run_in_executor(None, sys.stdin.readline)
        return line.rstrip("\n") if line else None

    async def say_next() -> None:
        text = await next_line()
        if text is None:
            await conversation.send({"type": "end"})
        else:
            print(f"you: {text}")
            await conversation.send({"type": "input_text", "text": text})

    printer = Printer()
    async for event in conversation.events():
        printer.show(event)
        if event["type"] == "turn_complete":
            await say_next()  # the agent waits for us


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/realtime")
    parser.add_argument("--token", required=True, help="an API key (sk_live_…) or a client token")
    parser.add_argument("--agent", required=True, help="the agent's id")
    parser.add_argument("--say", action="append", help="a message to send (repeatable); default: stdin")
    asyncio.run(main(parser.parse_args()))
