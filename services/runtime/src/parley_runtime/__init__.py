"""Parley runtime worker: executes agent sessions (definitions, LLM streaming, tools, events)."""
