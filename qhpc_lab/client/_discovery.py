"""Where a kernel finds its targets: the QRMI job variables (docs/client.md), then a targets file.

The variables are read the way QRMI's Slurm plugin sets them, so a job works with that plugin
or ours. A ``pasqal-local`` resource is a second-level scheduler and gets the scheduler target
(queue position, ETA, events); every other type goes through the ``qrmi`` package. Mistakes in
the variables or the file become one-line ``problems``; they never stop discovery.
"""

from __future__ import annotations

import tomllib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from qhpc_lab.client._target import Target
from qhpc_lab.settings import SettingsModel, problems, toml_type, wrong_type
from qhpc_lab.wire import qrmi

DEFAULT_TARGETS_FILE = "~/.config/qhpc/targets.toml"
EMULATOR = "emulator"
SCHEDULER_TYPES = ("scheduler", "pasqal-local")
"""Types served by our scheduler target: ``pasqal-local`` is QRMI's name for a Warden."""


class TargetsFile(SettingsModel):
    """The targets file's top-level keys (docs/configuration.md, "The client's targets file")."""

    default: str | None = None
    """The target a submission that names none goes to (after the job's QRMI resources)."""
    targets: dict[str, Any] = Field(default_factory=dict)
    """One table per target, ``[targets.NAME]``, read by its type's :class:`TargetSettings`."""
    runs: dict[str, Any] = Field(default_factory=dict)
    """``[runs]``: what ``qhpc run`` asks the batch system for (docs/notebook-runs.md), read
    by :mod:`qhpc_lab.runs`."""


def targets_file_path(environ: Mapping[str, str], explicit: str | Path | None = None) -> Path:
    """The targets file: ``explicit``, else ``$QHPC_TARGETS_FILE``, else
    :data:`DEFAULT_TARGETS_FILE` (``~`` from ``environ``'s HOME)."""
    chosen = explicit or environ.get("QHPC_TARGETS_FILE")
    return _expand(str(chosen or DEFAULT_TARGETS_FILE), environ)


class TargetSettings(SettingsModel, ABC):
    """A ``[targets.NAME]`` table; a subclass per kind of target says what else it takes."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    type: str

    @abstractmethod
    def target(
        self,
        name: str,
        origin: str,
        environ: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Target:
        """The target these settings describe, named ``name``, found in ``origin``;
        ``transport`` is what a scheduler target sends its requests through (the others speak
        no HTTP through httpx)."""


class SchedulerTargetSettings(TargetSettings):
    """Our scheduler or a plain Warden (``scheduler``, ``pasqal-local``)."""

    url: str | list[str]
    """The scheduler's URL, or its replicas' (:func:`scheduler_urls`)."""
    token: str | None = None
    token_file: str | None = None
    """A file holding the bearer token (``~`` is the user's home), read when the client starts."""
    auth: str = "auto"
    session: str | None = None
    job_timeout_s: float | None = None

    def target(
        self,
        name: str,
        origin: str,
        environ: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Target:
        from qhpc_lab.client._scheduler import SchedulerTarget

        token = self.token
        if token is None and self.token_file is not None:
            token = _expand(self.token_file, environ).read_text().strip()
        return SchedulerTarget(
            name,
            scheduler_urls(self.url),
            type=self.type,
            origin=origin,
            token=token or environ.get("QHPC_TOKEN"),
            auth=self.auth,
            session=self.session,
            job_timeout_s=self.job_timeout_s,
            transport=transport,
        )


class EmulatorTargetSettings(TargetSettings):
    """A local emulator checking programs against a device profile."""

    device: str | None = None

    def target(
        self,
        name: str,
        origin: str,
        environ: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Target:
        from qhpc_lab.client._emulator import EmulatorTarget

        return EmulatorTarget(name, origin, device=self.device)


class QRMITargetSettings(TargetSettings):
    """Any other QRMI resource type."""

    config: dict[str, Any] | None = None
    """Settings for QRMI's ``QuantumResource.from_config``, as text."""
    job_timeout_s: float | None = None

    def target(
        self,
        name: str,
        origin: str,
        environ: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Target:
        from qhpc_lab.client._qrmi import QRMITarget

        config = None if self.config is None else {str(k): str(v) for k, v in self.config.items()}
        return QRMITarget(
            name, self.type, origin=origin, config=config, job_timeout_s=self.job_timeout_s
        )


TARGET_SETTINGS: dict[str, type[TargetSettings]] = {
    "scheduler": SchedulerTargetSettings,
    "emulator": EmulatorTargetSettings,
    "qrmi": QRMITargetSettings,
}
"""Each group of target types (:data:`SCHEDULER_TYPES`, the emulator, QRMI's) → its table."""


@dataclass
class Discovery:
    targets: dict[str, Target] = field(default_factory=dict)
    """In order: the job's QRMI resources, the file's targets, the built-in emulator."""
    default: str | None = None
    """The target ``submit()`` uses when none is named; None: nothing found (the emulator)."""
    from_job: list[str] = field(default_factory=list)
    """The job's QRMI resources, in order: with two or more (several QPUs in one allocation),
    a submission that names no target chooses among them, per program (docs/client.md)."""
    problems: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    """What was looked at, for the message saying nothing was found."""

    def add(self, target: Target) -> None:
        if target.name in self.targets:
            kept = self.targets[target.name].origin
            self.problems.append(f"target {target.name!r} is defined twice; using {kept}'s")
        else:
            self.targets[target.name] = target


def discover(
    environ: Mapping[str, str],
    targets_file: str | Path | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Discovery:
    """Targets from ``environ`` (the QRMI variables) and the targets file.

    The file is ``targets_file``, else ``$QHPC_TARGETS_FILE``, else
    ``~/.config/qhpc/targets.toml``. The default target is the job's first QRMI resource,
    else the file's ``default``, else its first target. ``transport``: what the scheduler
    targets send their requests through (default: httpx's own).
    """
    found = Discovery()
    _from_environment(environ, found, transport)
    from_job = found.from_job = list(found.targets)
    explicit = targets_file or environ.get("QHPC_TARGETS_FILE")
    path = targets_file_path(environ, explicit)
    found.sources.append(str(path))
    file_default = _from_file(path, bool(explicit), environ, found, transport)
    from qhpc_lab.client._emulator import EmulatorTarget

    if EMULATOR in found.targets:
        found.problems.append(f"the name {EMULATOR!r} is reserved for the built-in emulator")
        del found.targets[EMULATOR]
    found.targets[EMULATOR] = EmulatorTarget()
    from_file = [n for n in found.targets if n not in from_job and n != EMULATOR]
    if file_default is not None and file_default not in found.targets:
        found.problems.append(f"{path}: default {file_default!r} is not a target")
        file_default = None
    found.default = next(iter(from_job), None) or file_default or next(iter(from_file), None)
    return found


def _expand(path: str, environ: Mapping[str, str]) -> Path:
    """``~`` from ``environ``'s HOME: discovery reads the environment it is given, only."""
    if path.startswith("~"):
        path = (environ.get("HOME") or str(Path.home())) + path[1:]
    return Path(path)


def _env_list(environ: Mapping[str, str], names: tuple[str, str]) -> tuple[str, list[str]] | None:
    """The first variable that is set (QRMI's, then Slurm's) and its items."""
    delimiter = qrmi.delimiter(environ)
    for name in names:
        if name in environ:
            return name, [item.strip() for item in environ[name].split(delimiter) if item.strip()]
    return None


def _from_environment(
    environ: Mapping[str, str], found: Discovery, transport: httpx.AsyncBaseTransport | None
) -> None:
    resources = _env_list(environ, (qrmi.RESOURCES, qrmi.SLURM_RESOURCES))
    types = _env_list(environ, (qrmi.TYPES, qrmi.SLURM_TYPES))
    found.sources.append(qrmi.RESOURCES)
    if resources is None and types is None:
        return
    variable, names = resources or (qrmi.RESOURCES, [])
    kinds = types[1] if types else []
    if len(names) != len(kinds):
        found.problems.append(
            f"{variable} names {len(names)} resources but its types variable {len(kinds)}: "
            "ignoring the job's QPU resources"
        )
        return
    origin = variable
    job, uid = environ.get(qrmi.JOB_ID), environ.get(qrmi.JOB_UID)
    if job or uid:
        origin += f" (Slurm job {job or '?'}, uid {uid or '?'})"
    from qhpc_lab.client._qrmi import QRMITarget
    from qhpc_lab.client._scheduler import SchedulerTarget

    for name, kind in zip(names, kinds, strict=True):
        timeout = _seconds(environ.get(qrmi.timeout_seconds(name)), name, found)
        url = environ.get(qrmi.warden_url(name))
        if kind == "pasqal-local" and url:
            target: Target = SchedulerTarget(
                name,
                scheduler_urls(url),
                type=kind,
                origin=origin,
                token=environ.get("QHPC_TOKEN"),
                session=environ.get(qrmi.acquisition_token(name)),
                job_timeout_s=timeout,
                transport=transport,
            )
        else:  # without a URL, qrmi itself says which variable is missing
            target = QRMITarget(name, kind, origin=origin, job_timeout_s=timeout)
        found.add(target)


def _seconds(text: str | None, name: str, found: Discovery) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        found.problems.append(f"{qrmi.timeout_seconds(name)}={text!r} is not a number; ignored")
        return None


def _from_file(
    path: Path,
    explicit: bool,
    environ: Mapping[str, str],
    found: Discovery,
    transport: httpx.AsyncBaseTransport | None,
) -> str | None:
    """Add the file's targets; return its ``default``."""
    if not path.is_file():
        if explicit:
            found.problems.append(f"targets file {path} does not exist")
        return None
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        found.problems.append(f"targets file {path} is unreadable: {err}")
        return None
    known = TargetsFile.model_fields
    unknown = set(data) - set(known)
    if unknown:
        found.problems.append(f"{path}: unknown top-level keys {', '.join(sorted(unknown))}")
    try:
        read = TargetsFile.read({key: value for key, value in data.items() if key in known})
    except ValidationError as err:
        found.problems.append(f"{path}: {'; '.join(problems(err.errors()))}")
        return None
    for name, table in read.targets.items():
        try:
            found.add(_file_target(name, table, path, environ, transport))
        except (ValueError, TypeError, KeyError, OSError) as err:
            found.problems.append(f"{path}: target {name!r} ignored: {err}")
    return read.default


def _file_target(
    name: str,
    table: Any,
    path: Path,
    environ: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None,
) -> Target:
    if not isinstance(table, dict) or "type" not in table:
        raise ValueError("a target is a table with a 'type'")
    kind = str(table["type"])
    group = "scheduler" if kind in SCHEDULER_TYPES else "emulator" if kind == EMULATOR else "qrmi"
    settings = TARGET_SETTINGS[group]
    unknown = set(table) - set(settings.model_fields)
    if unknown:
        raise ValueError(f"unknown keys {', '.join(sorted(unknown))} for type {kind!r}")
    for key, value in table.items():
        if (words := wrong_type(settings.model_fields[key], value)) is not None:
            raise ValueError(f"`{key}` must be {words}, not {toml_type(value)} ({value!r})")
    try:
        read = settings.read(table)
    except ValidationError as err:
        raise ValueError("; ".join(problems(err.errors()))) from None
    return read.target(name, str(path), environ, transport)


def scheduler_urls(value: Any) -> list[str]:
    """A scheduler's URL or its replicas': a list (``url = ["http://a:8006", ...]``) or one
    text with commas (``{name}_QRMI_WARDEN_URL=http://a:8006,http://b:8006``)."""
    items = value if isinstance(value, list) else str(value).split(",")
    urls = [str(item).strip() for item in items if str(item).strip()]
    if not urls:
        raise ValueError(f"url names no scheduler: {value!r}")
    return urls
