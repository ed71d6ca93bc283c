"""The chat WebSocket (`/chat/ws`): scoped client tokens, text in, streamed responses out."""
