"""Parley catalog service: agents, templates, definitions, secrets, tools and conversation history."""
