"""The dev clusters' process bookkeeping without a cluster: a pid file per daemon, and stop
signals only a pid that still runs the program it recorded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from qhpc_lab.hpc.devcluster.processes import Services, running, wait_until


def test_stop_ends_what_was_spawned_and_forgets_it(tmp_path: Path) -> None:
    services = Services(tmp_path, {"sleeper": "time.sleep"})
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    process = services.spawn("sleeper", command, tmp_path / "sleeper.log")
    # just after exec the kernel may show an empty command line for a moment
    wait_until(lambda: services.pid("sleeper"), 10, "the sleeper's command line")
    assert services.pids() == {"sleeper": process.pid}

    assert services.stop() == ["sleeper"]
    assert process.wait(10) is not None
    assert services.pids() == {"sleeper": None}
    assert not services.pid_file("sleeper").exists()


def test_a_recorded_pid_now_running_another_program_is_left_alone(tmp_path: Path) -> None:
    services = Services(tmp_path, {"munged": "/usr/sbin/munged"})
    services.record("munged", os.getpid())  # this test's process: not munged

    assert services.pid("munged") is None
    assert services.stop() == []
    assert running(os.getpid(), "pytest")
    assert not services.pid_file("munged").exists()
