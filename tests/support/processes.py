"""What a process is doing, read from outside it: for waits on a worker that says nothing."""

from __future__ import annotations

import psutil


def cpu_seconds(pid: int | None) -> float:
    """The CPU time (user and system) process ``pid`` has used so far; 0 without one."""
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system
