"""Session lifecycle: claiming starts from the work queue, state in Redis, input and output streams."""
