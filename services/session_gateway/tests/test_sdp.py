"""The offer check of `POST /api/realtime/webrtc`: browser offers (Chromium's and Firefox's shape,
and one aiortc makes) pass and are read by aiortc; every way an offer can be broken is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc import RTCPeerConnection

from parley_common.errors import ParleyError
from parley_session_gateway.webrtc.sdp import MAX_SDP_BYTES, parse_offer

HERE = Path(__file__).parent / "sdp"


def _crlf(name: str) -> str:
    """The sample as a browser sends it: every line ends in CRLF."""
    return "".join(line + "\r\n" for line in (HERE / name).read_text().splitlines())


CHROMIUM = _crlf("chromium-offer.sdp")
FIREFOX = _crlf("firefox-offer.sdp")


@pytest.mark.parametrize(
    "sdp", [CHROMIUM, FIREFOX, CHROMIUM.replace("\r\n", "\n")], ids=["chromium", "firefox", "lf"]
)
def test_browser_offers_pass(sdp: str) -> None:
    offer = parse_offer(sdp)
    (audio,) = offer.description.media
    assert audio.kind == "audio" and audio.profile == "UDP/TLS/RTP/SAVPF"
    assert any(c.mimeType.lower() == "audio/opus" for c in audio.rtp.codecs)
    assert audio.ice is not None and audio.dtls is not None
    assert audio.ice.usernameFragment and audio.dtls.fingerprints
    assert offer.sdp.endswith("\r\n") and "\n" not in offer.sdp.replace("\r\n", "")


async def test_an_aiortc_offer_passes() -> None:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        offer = parse_offer(pc.localDescription.sdp)
    finally:
        await pc.close()
    assert [m.kind for m in offer.description.media] == ["audio"]


def _without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


BROKEN = {
    "empty": ("", "must start with v=0"),
    "garbage": ("hello world", "line 1 is not <letter>=<value>"),
    "json": ('{"type": "offer"}', "line 1 is not"),
    "version": (CHROMIUM.replace("v=0", "v=1", 1), "must start with v=0"),
    "order": (
        CHROMIUM.replace("s=-\r\n", "", 1).replace("v=0\r\n", "v=0\r\ns=-\r\n", 1),
        "must start with v=0",
    ),
    "origin": (CHROMIUM.replace(" IN IP4 127.0.0.1", " XX", 1), "the o= line"),
    "timing": (_without(CHROMIUM, "t="), "one t= line"),
    "blank line": (CHROMIUM.replace("a=mid:0\r\n", "a=mid:0\r\n\r\n", 1), "is not <letter>=<value>"),
    "control char": (CHROMIUM.replace("a=mid:0", "a=mid:\x07", 1), "is not <letter>=<value>"),
    "no media": (CHROMIUM.split("m=audio")[0], "no m= section"),
    "video only": (CHROMIUM.replace("m=audio", "m=video", 1), "no active audio m= section"),
    "rejected audio": (CHROMIUM.replace("m=audio 9", "m=audio 0", 1), "no active audio m= section"),
    "bad m line": (CHROMIUM.replace("m=audio 9 UDP/TLS/RTP/SAVPF", "m=audio nine", 1), "m= line 1"),
    "plain rtp": (CHROMIUM.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP", 1), "not UDP/TLS/RTP/SAVPF"),
    "payload type": (CHROMIUM.replace("SAVPF 111 63", "SAVPF 111 300", 1), "payload type"),
    "no ufrag": (_without(CHROMIUM, "a=ice-ufrag"), "a=ice-ufrag"),
    "short pwd": (CHROMIUM.replace("a=ice-pwd:T7b0cvd8VqJ2s4mGk1pNw9aZ", "a=ice-pwd:short", 1), "a=ice-pwd"),
    "no fingerprint": (_without(CHROMIUM, "a=fingerprint"), "a=fingerprint"),
    "bad fingerprint": (CHROMIUM.replace("sha-256 3A:96", "md5 3A:96", 1), "a=fingerprint"),
    "no setup": (_without(CHROMIUM, "a=setup"), "a=setup"),
    "bad setup": (CHROMIUM.replace("a=setup:actpass", "a=setup:whatever", 1), "a=setup"),
    "no opus": (CHROMIUM.replace("opus/48000/2", "speex/48000", 1), "does not offer Opus"),
    "opus not offered": (CHROMIUM.replace("SAVPF 111 63", "SAVPF 63", 1), "does not offer Opus"),
    "too large": (CHROMIUM + "a=x:" + "y" * MAX_SDP_BYTES + "\r\n", "larger than"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_offers_are_named(case: str) -> None:
    sdp, detail = BROKEN[case]
    with pytest.raises(ParleyError) as err:
        parse_offer(sdp)
    assert err.value.code.code == "webrtc.invalid_sdp" and err.value.status == 400
    assert detail in str(err.value.params), err.value.params


def test_what_aiortc_cannot_read_is_invalid_too() -> None:
    # Passes the line checks, but an fmtp names a payload type with no rtpmap.
    sdp = CHROMIUM.replace("a=fmtp:111 minptime", "a=fmtp:99 minptime", 1)
    with pytest.raises(ParleyError) as err:
        parse_offer(sdp)
    assert "unreadable" in str(err.value.params)
