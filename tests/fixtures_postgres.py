"""PostgreSQL server fixture (filled in by the store tests)."""
