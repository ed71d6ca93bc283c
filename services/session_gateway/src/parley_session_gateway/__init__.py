"""Parley session gateway: terminates WebSocket and SSE sessions and bridges them to the bus."""
