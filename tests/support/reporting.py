"""Lines in the test output that are no assertion: scenario durations on the real clusters."""

from __future__ import annotations

import pytest


def say(config: pytest.Config, text: str) -> None:
    """A line in the test output even under -q and output capture (scenario durations)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(text)
