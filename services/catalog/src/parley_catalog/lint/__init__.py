"""Blueprint lint: every structural problem, with the node or edge it concerns."""
