"""Notebooks as batch jobs (``qhpc run NOTEBOOK``): see docs/notebook-runs.md."""
