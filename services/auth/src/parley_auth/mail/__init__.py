"""Transactional mail through an outbox: SMTP when configured, else a local mail sink."""
