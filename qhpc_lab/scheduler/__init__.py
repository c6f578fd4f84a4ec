"""The second-level scheduler daemon: one per QPU, multiplexing many Slurm jobs' work."""

from qhpc_lab.scheduler.app import build_authenticator, build_scheduler, create_app
from qhpc_lab.scheduler.config import SchedulerConfig
from qhpc_lab.scheduler.core import Scheduler, SchedulerError

__all__ = [
    "Scheduler",
    "SchedulerConfig",
    "SchedulerError",
    "build_authenticator",
    "build_scheduler",
    "create_app",
]
