"""The second-level scheduler daemon: one per QPU, multiplexing many Slurm jobs' work.

The names below load their module on first use, so that a command needing only the settings
(``qhpc slurm prolog`` builds the whole CLI) does not import the web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qhpc_lab.scheduler.app import (
        DriverFactory,
        build_authenticator,
        build_scheduler,
        create_app,
    )
    from qhpc_lab.scheduler.config import SchedulerConfig
    from qhpc_lab.scheduler.core import Scheduler
    from qhpc_lab.scheduler.refusal import SchedulerError

_HOMES = {
    "DriverFactory": "app",
    "build_authenticator": "app",
    "build_scheduler": "app",
    "create_app": "app",
    "SchedulerConfig": "config",
    "Scheduler": "core",
    "SchedulerError": "refusal",
}

__all__ = [
    "DriverFactory",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerError",
    "build_authenticator",
    "build_scheduler",
    "create_app",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
