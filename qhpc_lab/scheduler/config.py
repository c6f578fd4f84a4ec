"""Scheduler settings: defaults, then a TOML file, then ``QHPC_*`` variables, then CLI flags.

Each setting is one field of :class:`SchedulerConfig` (a policy setting, one of
:class:`~qhpc_lab.scheduler.policy.PolicyConfig`); the ``qhpc scheduler serve`` flags, the
variables and the file's keys follow from it (:mod:`qhpc_lab.settings`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import ipaddress
import json
import os
import pwd
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    InstanceOf,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import NoDecode, SettingsConfigDict

from qhpc_lab import tracing
from qhpc_lab.scheduler.logs import LOG_FORMATS
from qhpc_lab.scheduler.policy import JOB_CLASSES, PolicyConfig
from qhpc_lab.settings import SettingsModel, did_you_mean, problems, wrong_type


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


def _names(value: Any) -> Any:
    """A list setting from a file's array, a number (``admin_uids = 0``) or text ``a,b``."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        return (str(value),)
    if isinstance(value, list | tuple):
        return tuple(str(item) for item in value)
    return value


def _pairs(value: Any) -> Any:
    """A mapping setting from text ``key=value,key=value`` (a variable, a flag); a table as it
    is, its values whole numbers."""
    if isinstance(value, str):
        pairs = [pair.partition("=") for pair in value.split(",") if pair.strip()]
        if not all(sep for _, sep, _ in pairs):
            raise ValueError(f"expected key=value,key=value, got {value!r}")
        return {key.strip(): int(number) for key, _, number in pairs}
    if isinstance(value, Mapping):
        for key, number in value.items():
            if isinstance(number, bool) or not isinstance(number, int):
                raise ValueError(f"{key} must be a whole number, not {number!r}")
    return value


def _class_limits(value: Any) -> Any:
    """Class limits from a file's tables or JSON text (``QHPC_CLASS_LIMITS``), each checked."""
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise ValueError("class_limits must be a table of [class_limits.<class>] tables")
    return {job_class: ClassLimit.read(job_class, table) for job_class, table in value.items()}


Names = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_names)]
"""A list: a TOML array, or text with commas (a variable, a flag, or the file)."""


def _flag(**argparse: Any) -> dict[str, Any]:
    """A field's mark that ``qhpc scheduler serve`` takes it as a flag (``metavar``,
    ``choices`` as argparse has them)."""
    return {"flag": True, **argparse}


class SchedulerConfig(BaseModel):
    """The daemon's settings. Built directly, exactly the values given (tests, benchmarks);
    :meth:`load` reads them from the file, the variables and the flags."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        "127.0.0.1", description="the address to listen on", json_schema_extra=_flag()
    )
    port: int = Field(8006, description="the TCP port to listen on", json_schema_extra=_flag())
    db: str = Field(
        "",
        description="SQLAlchemy URL (default: SQLite in $QHPC_STATE_DIR)",
        json_schema_extra=_flag(),
    )
    device: str = Field(
        "test",
        description="emulated QPU: device profile name or JSON file (default: test)",
        json_schema_extra=_flag(),
    )
    """Unused with ``qpu_url``."""
    qpu_url: str = Field(
        "",
        description="drive the device behind this QPU API (e.g. qhpc qpu serve's "
        "http://127.0.0.1:8090) instead of the emulated QPU in process",
        json_schema_extra=_flag(metavar="URL"),
    )
    """Pasqal's on-premises API, ``/api/v1`` below it; ``qhpc qpu serve`` serves the emulated
    one over it."""
    qpu_time_per_shot_s: float = 0.2
    """QPU API: a shot's device time until the device's own job times are measured."""
    qpu_chunk_seconds: float = 10.0
    """QPU API: device time of one chunk (one QPU job; the preemption point)."""
    qpu_calibrates_when_down: bool = False
    """QPU API: the device calibrates while DOWN, so each return to UP is a new calibration
    (a device that says so in ``GET /system``, as ``qhpc qpu serve`` does, needs no setting).
    Off: only ``qhpc admin calibrate`` (an operator's mark) starts one."""
    qpu_start_wait_s: float = 300.0
    """QPU API: how long a starting scheduler waits for the QPU API to answer before it gives
    up. Long: a QPU API started beside it (``make lab``, a dev cluster, a host's boot) may
    still be loading its SDK, which takes minutes on a loaded machine."""
    qpu_overhead_share: float = 0.10
    """QPU API: chunks grow until the measured setup time (QPU job creation → start) is at most
    this share of one (10 %: the policy frontier's knee, docs/policy.md)."""
    auth: Names = Field(
        ("token",),
        description="munge, token, or munge,token (default: token)",
        json_schema_extra=_flag(),
    )
    admin_uids: Names = ("0",)
    admin_unbound_hosts: Names = ("127.0.0.1", "::1")
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
    max_connections: int = Field(
        1000,
        description="open connections served at once; a request over the cap is answered 503 "
        "(Retry-After)",
        json_schema_extra=_flag(),
    )
    max_requests_per_user: int = Field(
        64,
        description="requests one user may have in flight at once, event streams included "
        "(429 over it; 0: no cap)",
        json_schema_extra=_flag(),
    )
    max_streams_per_user: int = Field(
        8,
        description="event streams one user may have open at once (429 over it; 0: no cap)",
        json_schema_extra=_flag(),
    )
    anonymous_rate_per_second: float = Field(
        5.0,
        description="anonymous requests a second served per client address, /health aside "
        "(429 over it; 0: no limit)",
        json_schema_extra=_flag(),
    )
    anonymous_burst: int = Field(
        20,
        description="anonymous requests a client address may send at once before "
        "anonymous_rate_per_second applies",
        json_schema_extra=_flag(),
    )
    header_timeout_s: float = Field(
        10.0,
        description="seconds a client has to send complete request headers (408 after)",
        json_schema_extra=_flag(),
    )
    body_timeout_s: float = Field(
        30.0,
        description="seconds a client has to send a request body after its headers (408 after)",
        json_schema_extra=_flag(),
    )
    keep_alive_timeout_s: float = Field(
        5.0,
        description="seconds an idle keep-alive connection stays open",
        json_schema_extra=_flag(),
    )
    require_session: bool | None = None
    """Jobs need an X-Warden-Session; None means: when MUNGE auth is on (HPC), not otherwise."""
    policy: InstanceOf[PolicyConfig] = Field(default_factory=PolicyConfig)
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
    max_sweep_sets: int = 10_000
    """Sets one sweep (one job of many ``(shots, variables)`` sets) may hold (0: no limit);
    more is refused with 422, rule ``sweep``."""
    max_sweep_shots: int = 10_000_000
    """Shots one sweep may ask for in all (0: no limit); its sets' shots also count against
    the queued-shots limits and the quotas."""
    sweep_sets_per_page: Annotated[int, Field(ge=1)] = 1000
    """Sets one ``GET /jobs/{id}/sets`` answer holds at most; a longer sweep's results come in
    pages, each linking the next (a 10 000-set sweep is not one response of many megabytes)."""
    class_limits: Annotated[
        dict[str, InstanceOf[ClassLimit]], NoDecode, BeforeValidator(_class_limits)
    ] = Field(default_factory=dict)
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
    log_format: str = Field(
        "text",
        description="text lines, or one JSON object per line with a job's ids",
        json_schema_extra=_flag(choices=LOG_FORMATS),
    )
    otlp_endpoint: str = Field(
        "",
        description="send OpenTelemetry traces to this OTLP/HTTP endpoint (e.g. "
        "http://collector:4318/v1/traces; default off)",
        json_schema_extra=_flag(metavar="URL"),
    )
    trace_sampling_ratio: float = Field(
        tracing.DEFAULT_SAMPLING_RATIO,
        ge=0.0,
        le=1.0,
        description="the share of jobs traced whose caller sends no traceparent (0 to 1); "
        "a caller's sampled trace is always continued",
        json_schema_extra=_flag(metavar="RATIO"),
    )
    ha: bool = Field(
        False,
        description="one of several replicas on one PostgreSQL --db; the lease holder dispatches",
        json_schema_extra=_flag(),
    )
    """docs/operations.md, "High availability". Off: the single daemon (SQLite by default)."""
    lease_renew_s: float = Field(
        0.5,
        description="HA: seconds between lease renewals (and followers' tries to take it)",
        json_schema_extra=_flag(),
    )
    lease_ttl_s: float = Field(
        2.5,
        description="HA: seconds a lease lasts unrenewed before another replica takes over",
        json_schema_extra=_flag(),
    )
    """A leader that could not renew it for this long stops dispatching."""

    @model_validator(mode="after")
    def _within_bounds(self) -> SchedulerConfig:
        for host in self.admin_unbound_hosts:
            try:
                ipaddress.ip_network(host, strict=False)
            except ValueError as err:
                raise ValueError(f"admin_unbound_hosts: {err}") from None
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
        return self

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{state_dir() / 'scheduler.db'}"

    @property
    def sessions_required(self) -> bool:
        return "munge" in self.auth if self.require_session is None else self.require_session

    @classmethod
    def load(cls, path: str | None = None, **flags: Any) -> SchedulerConfig:
        """Merge the sources (:class:`SchedulerSettings`); ``flags`` win, None values are
        ignored. ValueError names each refused setting.

        Policy settings go by their own names everywhere (flat keys of ``[scheduler]``, a
        ``[policy]`` or ``[scheduler.policy]`` table, ``QHPC_AGING_PER_CHUNK``, ...).
        """
        path = path or os.environ.get("QHPC_CONFIG")
        from_file = _from_file(tomllib.loads(Path(path).read_text())) if path else None
        try:
            values = dict(SchedulerSettings.read(from_file, **flags))
        except ValidationError as err:
            raise ValueError("; ".join(_refusals(err))) from None
        given = {name: value for name in setting_kinds() if (value := values.pop(name)) is not None}
        try:
            return cls(**values, policy=PolicyConfig().changed(**given).checked())
        except ValidationError as err:
            raise ValueError("; ".join(problems(err.errors()))) from None


def _policy_field(spec: dataclasses.Field[Any], hint: Any) -> tuple[Any, FieldInfo]:
    """A policy setting as a field of :class:`SchedulerSettings`: None until a source gives
    it (the policy's default then stays, and a mapping changes only the keys given)."""
    mapping = typing.get_origin(hint) is Mapping
    optional = hint | None
    annotation = Annotated[optional, NoDecode, BeforeValidator(_pairs)] if mapping else optional
    extra = _flag(choices=spec.metadata.get("choices"), metavar="K=V,..." if mapping else None)
    return annotation, Field(None, description=spec.metadata["help"], json_schema_extra=extra)


def _settings_fields() -> dict[str, Any]:
    """The fields of :class:`SchedulerSettings`: the daemon's (but ``policy``) and the
    policy's, flat."""
    fields: dict[str, Any] = {
        name: (info.annotation, copy.copy(info))  # its metadata keeps the validators
        for name, info in SchedulerConfig.model_fields.items()
        if name != "policy"
    }
    hints = typing.get_type_hints(PolicyConfig)
    for spec in dataclasses.fields(PolicyConfig):
        fields[spec.name] = _policy_field(spec, hints[spec.name])
    return fields


class _SchedulerSources(SettingsModel):
    model_config = SettingsConfigDict(env_prefix="QHPC_", extra="forbid")


SchedulerSettings = create_model(
    "SchedulerSettings",
    __base__=_SchedulerSources,
    __doc__="Every key the daemon reads, as the file, the variables and the flags give it: "
    "SchedulerConfig's, and the policy's flat (their cross-checks run in SchedulerConfig).",
    **_settings_fields(),
)


def _refusals(error: ValidationError) -> list[str]:
    """What the sources gave that the daemon refuses: the unknown keys together, each with the
    key likely meant, then each value refused."""
    errors = error.errors()
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    known = SchedulerSettings.model_fields
    named = [f"{key} ({did_you_mean(key, known)})" for key in unknown]
    found = [f"unknown scheduler settings: {', '.join(named)}"] if unknown else []
    return found + problems(e for e in errors if e["type"] != "extra_forbidden")


def setting_kinds() -> dict[str, str]:
    """Each policy setting's name and declared type (as written in :class:`PolicyConfig`)."""
    return {spec.name: str(spec.type) for spec in dataclasses.fields(PolicyConfig)}


def parse_setting(kind: str, raw: str) -> Any:
    """A policy setting's value from text (``qhpc admin policy --set``), by its declared type;
    a mapping is written ``key=value,key=value``."""
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind.startswith(("dict", "Mapping")):
        return _pairs(raw)
    return raw


def flag_of(name: str) -> str:
    """A setting's ``qhpc scheduler serve`` flag: ``aging_per_chunk`` is
    ``--aging-per-chunk``; a ``_s`` suffix is dropped (``--usage-half-life``)."""
    return f"--{name.removesuffix('_s').replace('_', '-')}"


def flagged() -> dict[str, FieldInfo]:
    """The settings ``qhpc scheduler serve`` takes as flags, by name."""
    return {
        name: info
        for name, info in SchedulerSettings.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("flag")
    }


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One option per flagged setting, its help the field's description. The text is read
    as a variable's is, by the setting's type (:meth:`SchedulerConfig.load`)."""
    for name, info in flagged().items():
        extra = typing.cast(dict[str, Any], info.json_schema_extra)
        options: dict[str, Any] = {"dest": name, "help": f"{info.description} (setting {name})"}
        if info.annotation is bool:
            options.update(action="store_true", default=None)
        else:
            choices = extra.get("choices")
            metavar = extra.get("metavar") or flag_of(name)[2:].replace("-", "_").upper()
            options.update(metavar=None if choices else metavar, choices=choices)
        parser.add_argument(flag_of(name), **options)


def setting_flags(args: argparse.Namespace) -> dict[str, Any]:
    """What :func:`add_setting_flags` parsed, as :meth:`SchedulerConfig.load`'s flags."""
    return {name: getattr(args, name, None) for name in flagged()}


def _from_file(data: dict[str, Any]) -> dict[str, Any]:
    """The flat settings of a TOML document: its ``[scheduler]`` table (or the whole file), with
    a ``[policy]`` or ``[scheduler.policy]`` table's keys beside the others. Beside a
    ``[scheduler]`` table, other tables are other programs' (a shared file); a bare key there
    is a mistake (it would be ignored), and so is a value of the wrong type."""
    known = SchedulerSettings.model_fields
    if "scheduler" in data:
        stray = [
            key
            for key, value in data.items()
            if key not in ("scheduler", "policy") and (key in known or not isinstance(value, dict))
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
    values = {**section, **nested}
    for name, value in values.items():
        if name in known and (words := wrong_type(known[name], value)) is not None:
            raise ValueError(
                f"{name} must be {words}, not {value!r} (numbers and booleans unquoted)"
            )
    return values
