# SPDX-License-Identifier: GPL-3.0-or-later
"""espeak-ng behind a process boundary: `python -m parley_speech.engines.espeak_process`.

This module is the only code that loads libespeak-ng (GPL-3.0-or-later, from the
`espeakng-loader` wheel), and it is distributed under the GPL-3.0-or-later like the library it
links. It runs as its own long-lived process; the speech worker talks to it over stdin/stdout
only (engines/espeak.py), so no GPL code is loaded into the worker. See THIRD_PARTY_NOTICES.md.

Protocol. Requests are JSON lines on stdin:
    {"id": 7, "text": "Hello.", "voice": "en-us", "rate": 165}   speak
    {"cancel": 7}                                                  stop request 7 now
Replies are frames on stdout: a 9-byte header (type: 1 byte, request id: uint32, payload length:
uint32, big-endian) and the payload:
    R  ready, JSON {"sample_rate": 22050}, once at start (request id 0)
    A  audio: PCM16 little-endian mono at that rate
    W  a word starts: JSON {"start": char offset (0-based), "end": char offset, "ms": audio position}
    E  end of the request: JSON {"cancelled": bool}
    X  the request failed: JSON {"message": "..."}
"""

from __future__ import annotations

import ctypes
import json
import struct
import sys
import threading
from typing import BinaryIO

HEADER = struct.Struct(">cII")

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
ESPEAK_RATE = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
# Callback buffer length: 20 ms chunks, so the first audio leaves the process within milliseconds.
BUFFER_MS = 20


class EspeakEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(EspeakEvent)
)


class Speaker:
    def __init__(self, out: BinaryIO) -> None:
        import espeakng_loader

        self.out = out
        self.write_lock = threading.Lock()
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.sample_rate = self.lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, espeakng_loader.get_data_path().encode(), 0
        )
        if self.sample_rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        self._callback = SynthCallback(self._on_audio)
        self.lib.espeak_SetSynthCallback(self._callback)
        self.voice: str | None = None
        self.current = 0
        self.cancelled: set[int] = set()

    def send(self, kind: bytes, request_id: int, payload: bytes) -> None:
        with self.write_lock:
            self.out.write(HEADER.pack(kind, request_id, len(payload)) + payload)
            self.out.flush()

    def _on_audio(
        self, wav: ctypes._Pointer[ctypes.c_short], count: int, events: ctypes._Pointer[EspeakEvent]
    ) -> int:
        request_id = self.current
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == EVENT_WORD:
                start = max(event.text_position - 1, 0)
                word = {"start": start, "end": start + max(event.length, 0), "ms": event.audio_position}
                self.send(b"W", request_id, json.dumps(word).encode())
            i += 1
        if count > 0:
            self.send(b"A", request_id, ctypes.string_at(wav, count * 2))
        return 1 if request_id in self.cancelled else 0

    def speak(self, request: dict[str, object]) -> None:
        request_id = int(request["id"])  # type: ignore[call-overload]
        text = str(request.get("text", ""))
        voice = str(request.get("voice") or "en-us")
        try:
            if voice != self.voice:
                if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise ValueError(f"unknown espeak-ng voice {voice!r}")
                self.voice = voice
            rate = request.get("rate")
            if isinstance(rate, int):
                self.lib.espeak_SetParameter(ESPEAK_RATE, rate, 0)
            self.current = request_id
            data = text.encode("utf-8")
            status = self.lib.espeak_Synth(
                data, len(data) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None
            )
            cancelled = request_id in self.cancelled
            if status != 0 and not cancelled:
                raise RuntimeError(f"espeak_Synth returned {status}")
            self.send(b"E", request_id, json.dumps({"cancelled": cancelled}).encode())
        except (ValueError, RuntimeError) as exc:
            self.send(b"X", request_id, json.dumps({"message": str(exc)}).encode())
        finally:
            self.cancelled.discard(request_id)
            self.current = 0


def main() -> None:
    out = sys.stdout.buffer
    speaker = Speaker(out)
    speaker.send(b"R", 0, json.dumps({"sample_rate": speaker.sample_rate}).encode())
    work: list[dict[str, object]] = []
    ready = threading.Condition()

    def read_requests() -> None:
        # A reader thread, so a cancel reaches the synthesis callback while it runs.
        for line in sys.stdin.buffer:
            try:
                request = json.loads(line)
            except ValueError:
                continue
            with ready:
                if "cancel" in request:
                    target = int(request["cancel"])
                    queued = [w for w in work if w.get("id") == target]
                    if queued:
                        work[:] = [w for w in work if w.get("id") != target]
                        speaker.send(b"E", target, json.dumps({"cancelled": True}).encode())
                    elif target == speaker.current:
                        speaker.cancelled.add(target)
                else:
                    work.append(request)
                ready.notify()
        with ready:
            work.append({"exit": True})
            ready.notify()

    threading.Thread(target=read_requests, daemon=True).start()
    while True:
        with ready:
            while not work:
                ready.wait()
            request = work.pop(0)
        if request.get("exit"):
            return
        speaker.speak(request)


if __name__ == "__main__":
    main()
