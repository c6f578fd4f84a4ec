"""MUNGE daemon fixture (filled in by the MUNGE tests)."""
