"""Agents: owned by a user or an org, with config, secrets, a blueprint or protocol, and a status."""
