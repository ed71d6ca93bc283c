"""Checking a browser's SDP offer before anything acts on it.

The checks are what every offer of a current browser holds (RFC 8866 syntax, JSEP RFC 8829): the
session lines `v=0`, `o=`, `s=`, `t=` in place; every line `<letter>=<value>` without control
characters; an audio `m=` section on `UDP/TLS/RTP/SAVPF` offering Opus (the codec WebRTC requires,
RFC 7874); ICE credentials, a DTLS fingerprint and a DTLS role for it. Then aiortc's own parser
reads it, so the media edge starts from an offer it can take. Each problem is named in
`webrtc.invalid_sdp` (400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc.sdp import SessionDescription

from parley_common.errors import Codes, ParleyError

MAX_SDP_BYTES = 64 * 1024
_LINE = re.compile(r"^([a-z])=([^\x00-\x08\x0a-\x1f\x7f]*)$")
_ORIGIN = re.compile(r"^\S+ \d+ \d+ IN IP[46] \S+$")
_TIMING = re.compile(r"^\d+ \d+$")
_MEDIA = re.compile(r"^(?P<kind>[a-z]+) (?P<port>\d+)(?:/\d+)? (?P<proto>\S+) (?P<fmt>\S+(?: \S+)*)$")
_ICE_CHARS = re.compile(r"^[A-Za-z0-9+/]+$")
_FINGERPRINT = re.compile(
    r"^(sha-1|sha-224|sha-256|sha-384|sha-512) [0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+$", re.I
)
_OPUS = re.compile(r"^(\d+) opus/48000(?:/2)?$", re.I)
WEBRTC_PROFILE = "UDP/TLS/RTP/SAVPF"


@dataclass(frozen=True)
class Offer:
    sdp: str  # as received, lines ending in CRLF
    description: SessionDescription  # as aiortc reads it


def invalid(detail: str) -> ParleyError:
    return ParleyError(Codes.WEBRTC_INVALID_SDP, params={"detail": detail})


def _attributes(lines: list[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for kind, value in lines:
        if kind == "a":
            name, _, rest = value.partition(":")
            found.setdefault(name, []).append(rest)
    return found


def parse_offer(text: str) -> Offer:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise invalid(f"larger than {MAX_SDP_BYTES} bytes")
    raw_lines = text.replace("\r\n", "\n").split("\n")
    while raw_lines and raw_lines[-1] == "":
        raw_lines.pop()
    lines: list[tuple[str, str]] = []
    for number, raw in enumerate(raw_lines, start=1):
        match = _LINE.match(raw)
        if match is None:
            raise invalid(f"line {number} is not <letter>=<value>")
        lines.append((match.group(1), match.group(2)))
    if [k for k, _ in lines[:3]] != ["v", "o", "s"] or lines[0][1] != "0":
        raise invalid("it must start with v=0, o= and s= lines")
    if not _ORIGIN.match(lines[1][1]):
        raise invalid("the o= line is not `<user> <id> <version> IN IP4|IP6 <address>`")
    first_media = next((i for i, (k, _) in enumerate(lines) if k == "m"), len(lines))
    session, rest = lines[:first_media], lines[first_media:]
    timing = [v for k, v in session if k == "t"]
    if len(timing) != 1 or not _TIMING.match(timing[0]):
        raise invalid("the session needs one t= line")
    sections: list[list[tuple[str, str]]] = []
    for line in rest:
        if line[0] == "m":
            sections.append([line])
        else:
            sections[-1].append(line)
    if not sections:
        raise invalid("no m= section")
    session_attrs = _attributes(session)
    audio = 0
    for index, section in enumerate(sections, start=1):
        media = _MEDIA.match(section[0][1])
        if media is None:
            raise invalid(f"m= line {index} is not `<media> <port> <proto> <formats>`")
        if media["kind"] != "audio" or media["port"] == "0":
            continue
        _check_audio(index, media["proto"], media["fmt"].split(), session_attrs, _attributes(section[1:]))
        audio += 1
    if audio == 0:
        raise invalid("no active audio m= section")
    sdp = "\r\n".join(raw_lines) + "\r\n"
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # a parser of untrusted input: whatever it raises means "not this"
        raise invalid(f"unreadable ({type(exc).__name__})") from exc
    return Offer(sdp=sdp, description=description)


def _check_audio(
    index: int, proto: str, formats: list[str], session: dict[str, list[str]], section: dict[str, list[str]]
) -> None:
    where = f"audio section {index}"
    if proto != WEBRTC_PROFILE:
        raise invalid(f"{where} uses {proto[:40]}, not {WEBRTC_PROFILE}")
    if not all(f.isdigit() and int(f) < 128 for f in formats):
        raise invalid(f"{where} has a payload type that is not a number below 128")

    def one(name: str) -> str | None:
        values = section.get(name) or session.get(name) or []
        return values[0] if values else None

    ufrag, pwd = one("ice-ufrag"), one("ice-pwd")
    if ufrag is None or not (4 <= len(ufrag) <= 256) or not _ICE_CHARS.match(ufrag):
        raise invalid(f"{where} has no valid a=ice-ufrag")
    if pwd is None or not (22 <= len(pwd) <= 256) or not _ICE_CHARS.match(pwd):
        raise invalid(f"{where} has no valid a=ice-pwd")
    fingerprint = one("fingerprint")
    if fingerprint is None or not _FINGERPRINT.match(fingerprint):
        raise invalid(f"{where} has no valid a=fingerprint")
    if one("setup") not in ("actpass", "active", "passive"):
        raise invalid(f"{where} has no a=setup of actpass, active or passive")
    opus = [m.group(1) for m in map(_OPUS.match, section.get("rtpmap", [])) if m is not None]
    if not any(pt in formats for pt in opus):
        raise invalid(f"{where} does not offer Opus")
