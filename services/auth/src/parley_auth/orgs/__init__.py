"""Organizations and memberships with the owner > admin > member > viewer hierarchy."""
