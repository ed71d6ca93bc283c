"""Talk to a Parley agent by voice over `/realtime`: speak a WAV file, save the answer as a WAV file.

    python docs/examples/voice_client.py --agent <agent id> --token <API key or client token> \
        --wav question.wav [--out answer.wav] [--url ws://127.0.0.1:8080/realtime] [--upload]

The WAV must be 16-bit PCM. A mono file at 8, 16, 24, 44.1 or 48 kHz is streamed like a live
microphone (`input_audio_stream` + one binary frame per 20 ms, at real-time pace, then a second of
silence so the end of the turn is heard), declaring its rate in the handshake's `render_directive`
(`audio_in=pcm16/<rate>`). Any other WAV, or `--upload`, is sent whole as one utterance
(`input_audio` + the file; the server recognises WAV, WebM/Opus and Ogg/Opus by their header).

It prints the signals (`audio_format`, `speech_started`, `transcript`, …) and the answer's text as
it streams, and writes the answer's audio (PCM16 24 kHz mono, the default output) to `--out`. Only
`websockets` is needed (`pip install websockets`). See docs/voice.md and docs/realtime.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import wave
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect

STREAM_RATES = (8000, 16000, 24000, 44100, 48000)
FRAME_MS = 20


def read_wav(path: str) -> tuple[bytes, int, int, bool]:
    """(the whole file, its rate, its channels, whether it can be streamed as raw PCM16)."""
    with open(path, "rb") as f:
        data = f.read()
    with wave.open(path) as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
    if width != 2:
        raise SystemExit("the WAV must be 16-bit PCM")
    return data, rate, channels, channels == 1 and rate in STREAM_RATES


async def stream_pcm(ws: ClientConnection, path: str, rate: int) -> None:
    with wave.open(path) as w:
        pcm = w.readframes(w.getnframes())
    step = rate * FRAME_MS // 1000 * 2  # bytes per 20 ms frame
    pcm += b"\x00" * (rate * 2)  # a second of silence: the end of the turn
    started = time.monotonic()
    for i, offset in enumerate(range(0, len(pcm), step)):
        delay = started + i * FRAME_MS / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await ws.send(json.dumps({"type": "input_audio_stream"}))
        await ws.send(pcm[offset : offset + step])


async def talk(url: str, token: str, agent_id: str, wav_path: str, out_path: str, upload: bool) -> None:
    data, rate, _channels, streamable = read_wav(wav_path)
    stream = streamable and not upload
    hello = {"type": "handshake", "agent_id": agent_id, "channel": "web-voice"}
    if stream:
        hello["render_directive"] = f"audio_in=pcm16/{rate};audio_out=pcm16/24000"
    answer = bytearray()
    async with connect(f"{url}?{urlencode({'token': token})}", max_size=None) as ws:
        await ws.send(json.dumps(hello))
        reply = json.loads(await ws.recv())
        if reply["type"] != "handshake_ok":
            raise SystemExit(f"refused: {reply}")
        turns = 0  # the greeting's turn, then the answer's
        sender: asyncio.Task[None] | None = None
        while turns < 2:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                continue  # audio comes right after its audio_delta header, read there
            event = json.loads(raw)
            kind = event["type"]
            if kind == "audio_delta":
                audio = await ws.recv()
                assert isinstance(audio, bytes) and len(audio) == event["size"]
                if turns == 1:
                    answer += audio  # the answer's audio (the greeting's is skipped)
            elif kind == "signal":
                print(f"[{event['name']}] {json.dumps(event['data'])}")
            elif kind in ("text_delta", "text_full"):
                print(event.get("chunk") or event.get("content"), end="", flush=True)
            elif kind == "error":
                print(f"\n[error] {event['code']}: {event['message']}")
            elif kind == "turn_complete":
                print()
                turns += 1
                if turns == 1:  # the greeting is over: speak
                    if stream:
                        sender = asyncio.create_task(stream_pcm(ws, wav_path, rate))
                    else:
                        await ws.send(json.dumps({"type": "input_audio"}))
                        for i in range(0, len(data), 200_000):  # binary frames up to 256 KiB
                            await ws.send(data[i : i + 200_000])
            elif kind == "session_closed":
                break
        if sender is not None:
            sender.cancel()
        await ws.send(json.dumps({"type": "end"}))
    with wave.open(out_path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(bytes(answer))
    print(f"saved {len(answer) / 48000:.1f} s of the answer to {out_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/realtime")
    parser.add_argument("--token", required=True, help="an API key or a client token")
    parser.add_argument("--agent", required=True, help="the live agent's id")
    parser.add_argument("--wav", required=True, help="what to say: a 16-bit PCM WAV file")
    parser.add_argument("--out", default="answer.wav", help="where to save the answer's audio")
    parser.add_argument("--upload", action="store_true", help="send the file whole instead of streaming")
    args = parser.parse_args()
    asyncio.run(talk(args.url, args.token, args.agent, args.wav, args.out, args.upload))


if __name__ == "__main__":
    main()
