"""The Kivox realtime WebSocket (`/realtime`): frames in and out, bridged to the session bus."""
