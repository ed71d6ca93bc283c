"""API keys: raw value shown once, stored as a keyed hash, with scopes and expiry."""
