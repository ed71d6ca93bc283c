"""Agent tests: adversarial test suites, their runs and audit remarks, the publish gate."""
