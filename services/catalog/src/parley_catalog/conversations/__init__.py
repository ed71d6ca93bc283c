"""Conversation history persisted from runtime events, served with cursor pagination."""
