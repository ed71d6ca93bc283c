"""The Kivox blueprint interpreter: runs an agent's workflow graph turn by turn."""
