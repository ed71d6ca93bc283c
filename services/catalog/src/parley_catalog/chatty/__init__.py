"""The ServiceAi "Chatty Voice" routes of an agent (docs/webrtc.md)."""
