"""Scheduler settings: defaults, then a TOML file, then ``QHPC_*`` variables, then CLI flags."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import ipaddress
import json
import os
import pwd
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qhpc_lab.scheduler.logs import LOG_FORMATS
from qhpc_lab.scheduler.policy import JOB_CLASSES, PolicyConfig


def state_dir() -> Path:
    """Where the scheduler keeps its database and token secret unless told otherwise."""
    return Path(os.environ.get("QHPC_STATE_DIR") or Path.home() / ".local/state/qhpc")


@dataclass(frozen=True)
class ClassLimit:
    """A site's bounds on one job class (``[class_limits.<class>]``): who may use it, and how
    much (docs/policy.md, "Class limits"). Admins are not bound."""

    users: tuple[str, ...] = ()
    """Uids (login names are resolved when the settings load) allowed to use the class; with
    ``accounts`` both empty, everyone is."""
    accounts: tuple[str, ...] = ()
    """Slurm accounts whose jobs (their sessions) may use the class."""
    max_shots: int = 0
    """Shots one job of the class may ask for (0: no bound)."""
    max_queued_per_user: int = 0
    """Jobs of the class one user may have waiting or running (0: no bound)."""

    @classmethod
    def read(cls, job_class: str, table: Any) -> ClassLimit:
        """A ``[class_limits.<job_class>]`` table; ValueError naming what is wrong in it."""
        if isinstance(table, ClassLimit):
            return table
        where = f"class_limits.{job_class}"
        if job_class not in JOB_CLASSES:
            raise ValueError(f"{where}: no such job class; use one of {', '.join(JOB_CLASSES)}")
        if not isinstance(table, dict):
            raise ValueError(f"{where} must be a table of users, accounts, max_shots, ...")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(table) - known
        if unknown:
            keys = ", ".join(sorted(known))
            raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}; use {keys}")
        for bound in ("max_shots", "max_queued_per_user"):
            value = table.get(bound, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}.{bound} must be a whole number, 0 (no bound) or more")
        for names in ("users", "accounts"):
            if not isinstance(table.get(names, []), list):
                raise ValueError(f"{where}.{names} must be a list")
        return cls(
            users=tuple(_user(str(user), where) for user in table.get("users", [])),
            accounts=tuple(str(account) for account in table.get("accounts", [])),
            max_shots=table.get("max_shots", 0),
            max_queued_per_user=table.get("max_queued_per_user", 0),
        )

    def allows(self, user_id: str, account: str | None) -> bool:
        """Whether this user, submitting in a session of this Slurm account, may use the class."""
        if not self.users and not self.accounts:
            return True
        return user_id in self.users or (account is not None and account in self.accounts)


def uid_of(name: str) -> str:
    """A uid as it is, a login name this host knows as its uid (the scheduler names users by
    uid); ValueError otherwise."""
    if name.isdigit():
        return name
    try:
        return str(pwd.getpwnam(name).pw_uid)
    except KeyError:
        raise ValueError(f"no user {name!r} on this host: give the uid") from None


def _user(name: str, where: str) -> str:
    try:
        return uid_of(name)
    except ValueError as err:
        raise ValueError(f"{where}.users: {err}") from None


@dataclass
class SchedulerConfig:
    host: str = "127.0.0.1"
    port: int = 8006
    db: str = ""
    """SQLAlchemy URL; empty means SQLite in the state directory."""
    device: str = "test"
    """Device profile of the emulated QPU: a shipped name or a JSON file (unused with
    ``qpu_url``)."""
    qpu_url: str = ""
    """The QPU API (Pasqal's on-premises API, ``/api/v1`` below it) of the device to drive;
    empty: the emulated QPU in process. ``qhpc qpu serve`` serves the emulated one over it."""
    qpu_time_per_shot_s: float = 0.2
    """QPU API: a shot's device time until the device's own job times are measured."""
    qpu_chunk_seconds: float = 10.0
    """QPU API: device time of one chunk (one QPU job; the preemption point)."""
    qpu_calibrates_when_down: bool = False
    """QPU API: the device calibrates while DOWN, so each return to UP is a new calibration
    (a device that says so in ``GET /system``, as ``qhpc qpu serve`` does, needs no setting).
    Off: only ``qhpc admin calibrate`` (an operator's mark) starts one."""
    qpu_overhead_share: float = 0.05
    """QPU API: chunks grow until the measured setup time (QPU job creation → start) is at most
    this share of one."""
    auth: tuple[str, ...] = ("token",)
    admin_uids: tuple[str, ...] = ("0",)
    admin_unbound_hosts: tuple[str, ...] = ("127.0.0.1", "::1")
    """Addresses or networks (CIDR) from which an admin uid's MUNGE credential gives admin
    rights without being bound to its request; from anywhere else only a bound one does
    (qhpc's hooks and ``qhpc admin`` bind theirs). Loopback lets tools of the scheduler's own
    host, such as QRMI's, open sessions as root; add the compute nodes where a site runs
    third-party admin tools there. Empty: bound credentials only. docs/hpc-deployment.md,
    Security."""
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
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The scheduling policy's settings (``[policy]`` table, or their names as flat keys)."""
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
    class_limits: dict[str, ClassLimit] = field(default_factory=dict)
    """Per job class, who may use it and how much (``[class_limits.development]`` with
    ``users``, ``accounts``, ``max_shots``, ``max_queued_per_user``); a class without a table
    is open to all, unbounded. ``QHPC_CLASS_LIMITS`` takes the same as JSON."""
    qpu_slots_total: int = 0
    """QPU slots all open sessions may hold together (Warden's ``qpu.qpu_slots_total``): a
    session asking for more than are free is refused with 409. 0: slots are not managed (no
    limit, and ``GET /qpu-slots`` answers 404, as Warden does when it is unset)."""
    session_idle_timeout_s: float = 0.0
    """Warden's ``session.idle_timeout_s``: a session with no job submitted for this long and
    none still active is revoked (reason ``idle_timeout``). 0: no idle deadline."""
    session_max_lifetime_s: float = 0.0
    """Warden's ``session.max_lifetime_s``: a session this old is revoked, its queued jobs
    canceled (reason ``max_lifetime_expired``). 0: no lifetime deadline."""
    session_reaper_interval_s: float = 10.0
    """Warden's ``session.reaper_interval_s``: how often expired sessions are looked for."""
    log_format: str = "text"
    """``text`` for a terminal, ``json`` for one JSON object per line (a job's ids as fields)."""
    otlp_endpoint: str = ""
    """OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces); empty: no traces."""
    ha: bool = False
    """Run as one of several replicas of this QPU's scheduler on one PostgreSQL database
    (docs/operations.md, "High availability"): each serves the API, the one holding the
    dispatch lease dispatches. Off: the single daemon (SQLite by default)."""
    lease_renew_s: float = 0.5
    """HA: how often the leader renews its dispatch lease (and followers try to take it)."""
    lease_ttl_s: float = 2.5
    """HA: a lease not renewed for this long lapses and another replica takes over; a
    leader that could not renew it for this long stops dispatching."""

    def __post_init__(self) -> None:
        if isinstance(self.auth, str):
            self.auth = tuple(m.strip() for m in self.auth.split(",") if m.strip())
        if isinstance(self.admin_uids, str | int):
            self.admin_uids = tuple(u.strip() for u in str(self.admin_uids).split(",") if u.strip())
        self.admin_uids = tuple(str(u) for u in self.admin_uids)
        if isinstance(self.admin_unbound_hosts, str):
            self.admin_unbound_hosts = tuple(
                h.strip() for h in self.admin_unbound_hosts.split(",") if h.strip()
            )
        for host in self.admin_unbound_hosts:
            ipaddress.ip_network(host, strict=False)  # ValueError names a bad one
        self.class_limits = {
            job_class: ClassLimit.read(job_class, table)
            for job_class, table in self.class_limits.items()
        }
        if self.qpu_slots_total < 0:
            raise ValueError("qpu_slots_total must be 0 (unmanaged) or more")
        if min(self.session_idle_timeout_s, self.session_max_lifetime_s) < 0:
            raise ValueError("session deadlines must be 0 (none) or more seconds")
        if self.session_reaper_interval_s <= 0:
            raise ValueError("session_reaper_interval_s must be more than 0")
        if self.ha and not self.db_url.startswith("postgresql"):
            raise ValueError("ha needs a PostgreSQL database shared by the replicas (--db)")
        if not 0 < 2 * self.lease_renew_s <= self.lease_ttl_s:
            raise ValueError("lease_ttl_s must be at least twice lease_renew_s (> 0)")
        if self.qpu_url and not self.qpu_url.startswith(("http://", "https://")):
            raise ValueError(f"qpu_url must be an http(s) address, not {self.qpu_url!r}")
        if not 0 < self.qpu_overhead_share < 1:
            raise ValueError("qpu_overhead_share must be between 0 and 1")
        if min(self.qpu_time_per_shot_s, self.qpu_chunk_seconds) <= 0:
            raise ValueError("qpu_time_per_shot_s and qpu_chunk_seconds must be more than 0")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(
                f"log_format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}"
            )

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{state_dir() / 'scheduler.db'}"

    @property
    def sessions_required(self) -> bool:
        return "munge" in self.auth if self.require_session is None else self.require_session

    @classmethod
    def load(cls, path: str | None = None, **overrides: Any) -> SchedulerConfig:
        """Merge the sources; ``overrides`` (CLI flags) win, None values are ignored.

        Policy settings go by their own names everywhere (flat keys of ``[scheduler]``, a
        ``[policy]`` or ``[scheduler.policy]`` table, ``QHPC_AGING_PER_CHUNK``, ...).
        """
        values: dict[str, Any] = {}
        path = path or os.environ.get("QHPC_CONFIG")
        if path:
            values.update(_from_file(tomllib.loads(Path(path).read_text())))
        kinds = {**{f.name: str(f.type) for f in dataclasses.fields(cls)}, **setting_kinds()}
        del kinds["policy"]
        for name, kind in kinds.items():
            raw = os.environ.get(f"QHPC_{name.upper()}")
            if raw is not None:
                values[name] = parse_setting(kind, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - set(kinds)
        if unknown:
            raise ValueError(f"unknown scheduler settings: {', '.join(sorted(unknown))}")
        policy = {name: values.pop(name) for name in setting_kinds() if name in values}
        return cls(**values, policy=PolicyConfig().changed(**policy).checked())


def setting_kinds() -> dict[str, str]:
    """Each policy setting's name and declared type (as written in :class:`PolicyConfig`)."""
    return {spec.name: str(spec.type) for spec in dataclasses.fields(PolicyConfig)}


def parse_setting(kind: str, raw: str) -> Any:
    """A setting's value from text (a ``QHPC_*`` variable, a flag, ``--set``), by its declared
    type; a mapping is written ``key=value,key=value``."""
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind.startswith("bool"):
        return raw.lower() in ("1", "true", "yes")
    if "ClassLimit" in kind:
        return json.loads(raw)
    if kind.startswith(("dict", "Mapping")):
        pairs = [pair.partition("=") for pair in raw.split(",") if pair.strip()]
        if not all(sep for _, sep, _ in pairs):
            raise ValueError(f"expected key=value,key=value, got {raw!r}")
        return {key.strip(): int(value) for key, _, value in pairs}
    return raw


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One option per policy setting: ``aging_per_chunk`` is ``--aging-per-chunk``, a
    ``_s`` suffix is dropped (``--usage-half-life``), as the connection flags do."""
    for spec in dataclasses.fields(PolicyConfig):
        kind = str(spec.type)
        parser.add_argument(
            f"--{spec.name.removesuffix('_s').replace('_', '-')}",
            dest=spec.name,
            type=functools.partial(parse_setting, kind),
            choices=spec.metadata.get("choices"),
            metavar="K=V,..." if kind.startswith("Mapping") else None,
            help=f"{spec.metadata['help']} (setting {spec.name})",
        )


def setting_flags(args: argparse.Namespace) -> dict[str, Any]:
    """What :func:`add_setting_flags` parsed, as :meth:`SchedulerConfig.load` overrides."""
    return {name: getattr(args, name, None) for name in setting_kinds()}


def _from_file(data: dict[str, Any]) -> dict[str, Any]:
    """The flat settings of a TOML document: its ``[scheduler]`` table (or the whole file), with
    a ``[policy]`` or ``[scheduler.policy]`` table's keys beside the others. Beside a
    ``[scheduler]`` table, other tables are other programs' (a shared file); a bare key there
    is a mistake (it would be ignored), and so is a value of the wrong type."""
    if "scheduler" in data:
        ours = {spec.name for spec in dataclasses.fields(SchedulerConfig)}
        stray = [
            key
            for key, value in data.items()
            if key not in ("scheduler", "policy") and (key in ours or not isinstance(value, dict))
        ]
        if stray:
            raise ValueError(
                f"{', '.join(sorted(stray))}: outside the [scheduler] table, where the daemon "
                "reads its settings; move them below the [scheduler] line"
            )
    section = dict(data.get("scheduler", data))
    nested = {
        **(data.get("policy", {}) if "scheduler" in data else {}),
        **section.pop("policy", {}),
    }
    twice = set(nested) & set(section)
    if twice:
        raise ValueError(f"settings given both flat and in [policy]: {', '.join(sorted(twice))}")
    for spec in dataclasses.fields(SchedulerConfig):
        if spec.name in section and (wrong := _wrong_type(spec, section[spec.name])):
            raise ValueError(wrong)
    return {**section, **nested}


FILE_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"),
    "int": ((int,), "a whole number"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
    "bool | None": ((bool,), "true or false"),
    "tuple[str, ...]": ((str, int, list), "a list"),
}
"""What a settings file may give for each declared type (lists: an array or "a,b")."""


def _wrong_type(spec: dataclasses.Field[Any], value: Any) -> str | None:
    """Why a file's ``value`` cannot be the setting ``spec`` (a quoted number, say); None if
    it can."""
    allowed = FILE_TYPES.get(str(spec.type))
    if allowed is None:
        return None
    types, words = allowed
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        return f"{spec.name} must be {words}, not {value!r} (numbers and booleans unquoted)"
    return None
