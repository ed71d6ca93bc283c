"""Octavus agent sessions over HTTP + SSE (`/api/agent-sessions*`)."""
