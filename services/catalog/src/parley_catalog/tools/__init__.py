"""Tool catalogue in the OpenAI function format, and webhook execution."""
