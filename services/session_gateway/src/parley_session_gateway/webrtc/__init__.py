"""The browser voice edge of the ServiceAi contract: realtime tokens, CSRF tokens and the WebRTC
offer (docs/webrtc.md). The media side (aiortc answering the offer) plugs in as a `MediaEdge`."""
