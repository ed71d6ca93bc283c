"""Parley WebRTC media workers (docs/webrtc.md): each answers browsers' SDP offers with aiortc and
bridges the peer to a voice session on the gateway's `/realtime` WebSocket."""
