"""Scheduler settings: defaults, then a TOML file, then ``QHPC_*`` variables, then CLI flags."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qhpc_lab.scheduler.policy import JOB_CLASSES


def state_dir() -> Path:
    """Where the scheduler keeps its database and token secret unless told otherwise."""
    return Path(os.environ.get("QHPC_STATE_DIR") or Path.home() / ".local/state/qhpc")


@dataclass
class SchedulerConfig:
    host: str = "127.0.0.1"
    port: int = 8006
    db: str = ""
    """SQLAlchemy URL; empty means SQLite in the state directory."""
    device: str = "test"
    """Device profile: a shipped name or a JSON file."""
    auth: tuple[str, ...] = ("token",)
    admin_uids: tuple[str, ...] = ("0",)
    token_secret: str = ""
    """Empty means read (or create) ``token.secret`` in the state directory."""
    munge_socket: str = ""
    max_payload_bytes: int = 1_048_576
    max_connections: int = 1000
    """Open connections served at once; a request over the cap is answered 503 (Retry-After)."""
    header_timeout_s: float = 10.0
    """A connection that has not sent complete request headers by then is closed (408)."""
    body_timeout_s: float = 30.0
    """A request body not complete this long after its headers is answered 408."""
    keep_alive_timeout_s: float = 5.0
    """An idle keep-alive connection is closed after this."""
    require_session: bool | None = None
    """Jobs need an X-Warden-Session; None means: when MUNGE auth is on (HPC), not otherwise."""
    default_job_class: str = "production"
    class_priority: dict[str, int] = field(
        default_factory=lambda: {"development": 30, "test": 20, "production": 10}
    )
    aging_per_chunk: float = 1.0
    """Priority points a class gains per chunk duration it waits unserved (docs/policy.md)."""
    usage_half_life_s: float = 600.0
    """Half-life of the QPU usage that fair share between sessions weighs."""
    min_calibration_age_s: float = 60.0
    """Floor on a job's max_calibration_age_s, so no job can keep the QPU calibrating."""
    max_queued_jobs_per_user: int = 5000
    """Jobs one user may have waiting or running (0: no limit); more is refused with 429.
    A parameter sweep is thousands of jobs: the default lets one through and stops a runaway
    loop before it buries everyone else's work."""
    max_queued_shots_per_user: int = 10_000_000
    """Shots one user may have queued (0: no limit)."""
    max_queued_jobs_per_session: int = 5000
    """Jobs one session (one Slurm job) may have queued (0: no limit)."""
    max_queued_shots_per_session: int = 10_000_000
    """Shots one session may have queued (0: no limit)."""

    def __post_init__(self) -> None:
        if isinstance(self.auth, str):
            self.auth = tuple(m.strip() for m in self.auth.split(",") if m.strip())
        if isinstance(self.admin_uids, str | int):
            self.admin_uids = tuple(u.strip() for u in str(self.admin_uids).split(",") if u.strip())
        self.admin_uids = tuple(str(u) for u in self.admin_uids)
        if self.default_job_class not in JOB_CLASSES:
            raise ValueError(
                f"default_job_class must be one of {', '.join(JOB_CLASSES)}, "
                f"got {self.default_job_class!r}"
            )

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{state_dir() / 'scheduler.db'}"

    @property
    def sessions_required(self) -> bool:
        return "munge" in self.auth if self.require_session is None else self.require_session

    @classmethod
    def load(cls, path: str | None = None, **overrides: Any) -> SchedulerConfig:
        """Merge the sources; ``overrides`` (CLI flags) win, None values are ignored."""
        values: dict[str, Any] = {}
        path = path or os.environ.get("QHPC_CONFIG")
        if path:
            data = tomllib.loads(Path(path).read_text())
            values.update(data.get("scheduler", data))
        names = {f.name: f for f in dataclasses.fields(cls)}
        for name, spec in names.items():
            raw = os.environ.get(f"QHPC_{name.upper()}")
            if raw is not None:
                values[name] = _from_env(name, str(spec.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"unknown scheduler settings: {', '.join(sorted(unknown))}")
        return cls(**values)


def _from_env(name: str, kind: str, raw: str) -> Any:
    """A setting's value from its ``QHPC_*`` variable, by the field's declared type."""
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind.startswith("bool"):
        return raw.lower() in ("1", "true", "yes")
    if kind.startswith("dict"):
        return dict(
            (key.strip(), int(value)) for key, value in (p.split("=") for p in raw.split(","))
        )
    return raw
