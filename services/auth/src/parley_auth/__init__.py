"""Parley auth service: accounts, sessions, API keys, orgs and roles, scoped client tokens."""
