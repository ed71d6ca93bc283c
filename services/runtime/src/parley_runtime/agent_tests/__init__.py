"""Agent tests: runs of adversarial tests against agents (see docs/agent-tests.md)."""
