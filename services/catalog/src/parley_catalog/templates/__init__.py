"""Templates: reusable agent starting points owned by a user or an org."""
