"""Users, cookie sessions and password recovery."""
