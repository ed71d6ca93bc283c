"""Credential primitives: password hashing, token generation and keyed hashes, rate limits, Turnstile."""
