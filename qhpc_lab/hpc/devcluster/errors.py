"""The one error the dev clusters raise."""

from __future__ import annotations


class DevClusterError(Exception):
    """The cluster cannot start; the message says why and what to do."""
