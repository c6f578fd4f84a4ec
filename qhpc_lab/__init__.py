"""qhpc-lab."""
