"""Scoped client tokens for end users (POST /chat/tokens, POST /voice/tokens)."""
