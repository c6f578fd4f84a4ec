"""The test harness: what tests share (factories, daemons, polling, clusters, stand-ins).

Tests import these modules; ``tests/conftest.py`` only registers fixtures built on them. No
test module imports another test module or the client's private modules (the import-linter
contracts on ``tests`` in pyproject.toml say so).
"""
