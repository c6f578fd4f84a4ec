"""The allocation layer every first-level scheduler shares: a job's QPU share becomes a session.

A scheduler side (``slurm``, ``gridengine``) says how many QPU slots a job holds and how its
environment is changed; this module does the rest the same way for all of them: open a session
on the second-level scheduler for the job's user with a root MUNGE credential, keep a root-only
record of it under ``{run_dir}/private`` for the job-end hook, work out the QRMI variables of
the job's environment, revoke the session when the job ends (the scheduler cancels the job's
queued programs), and retry a revocation that could not reach the scheduler.

A hook never fails a job: each error is one log line, requests have short timeouts and a hook
run a hard deadline. A job whose session could not be opened still runs, and its environment
says why (the client then uses the emulator).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from pydantic import ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from qhpc_lab.settings import SettingsModel, did_you_mean, problems, toml_type, wrong_type
from qhpc_lab.wire import qrmi
from qhpc_lab.wire.documents import read_error

RESOURCE_TYPE = "pasqal-local"
"""QRMI's type for a Warden-compatible second-level scheduler (ours)."""
QRMI_LIST_VARIABLES = qrmi.LIST_VARIABLES
"""QRMI's resource names and types, as lists separated by QRMI_LIST_DELIMITER (default ,)."""
STALE_RETRIES = 20
"""At most this many earlier failed revocations are retried per hook run."""
HOOK_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
"""The environment a root hook runs with (plus the batch system's own facts): fixed, so that
nothing a job's owner set (PATH, proxies, MUNGE_SOCKET, QHPC_*) changes what root does."""

log = logging.getLogger("qhpc.hpc")
_LABEL = {"side": "", "hook": ""}
"""What log lines name besides the job (log_to)."""
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
Settings = TypeVar("Settings", bound="HookSettings")


class HookError(Exception):
    """A step of a hook failed; ``status`` is the scheduler's HTTP status when it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SettingsError(ValueError):
    """A settings file the hooks refuse. ``problems`` names every mistake in it, each with its
    remedy, so that one run of ``qhpc slurm check`` (or one log line) shows them all."""

    def __init__(self, file: Path, problems: Sequence[str]) -> None:
        super().__init__(f"{file}: {'; '.join(problems)}")
        self.problems = list(problems)


class HookSettings(SettingsModel):
    """Settings every scheduler side has: defaults, then a TOML file (top-level keys or a
    ``[{SECTION}]`` table). A side subclasses it with its own section, default file and fields.

    The file is the only source (the model names no variables): a root hook runs in a job's
    context, where the environment is the user's to write (Grid Engine hands a root prolog the
    job's ``qsub -v`` variables), so no variable may point the hooks elsewhere, and the file
    must be one only root can change.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    SECTION: ClassVar[str] = ""
    DEFAULT_CONFIG: ClassVar[str] = ""

    scheduler_url: str = "http://127.0.0.1:8006"
    """The scheduler as compute nodes reach it; exported as ``{resource}_QRMI_WARDEN_URL``.
    Root's MUNGE credentials go there and nowhere else."""
    resource: str = "qpu"
    """QRMI resource name: the entry in QRMI_JOB_QPU_RESOURCES and the variables' prefix."""
    run_dir: str = "/run/qhpc"
    """Per-job session records (root-owned, mode 0711)."""
    log_file: str = "/var/log/qhpc/hooks.log"
    timeout_s: float = 5.0
    """Per request to the scheduler, and for the first-level scheduler's commands."""
    deadline_s: float = 20.0
    """Hard limit for one hook run; keep it below the first-level scheduler's own limit."""
    default_job_timeout_s: int = 86400
    """``{resource}_QRMI_JOB_TIMEOUT_SECONDS`` for a job without a time limit."""
    munge_socket: str = ""
    """munged's socket; empty: libmunge's default."""

    TABLES: ClassVar[Mapping[str, frozenset[str]]] = {}
    """Settings written as arrays of tables (``[[name]]``), with the string keys each takes."""

    @model_validator(mode="after")
    def _usable(self) -> Self:
        if not _VARIABLE_NAME.match(self.resource):
            raise ValueError(
                f"resource {self.resource!r} must be usable as an environment variable prefix "
                "(letters, digits and _, not starting with a digit)"
            )
        if not self.scheduler_url.startswith(("http://", "https://")):
            raise ValueError(
                f"scheduler_url must be an http(s) address, not {self.scheduler_url!r}"
            )
        return self

    def replaced(self, **changes: Any) -> Self:
        """A copy with ``changes``, checked as the file's values are."""
        return type(self)(**{**dict(self), **changes})

    def qpu_configs(self) -> list[Self]:
        """One settings per QPU these serve (resource, scheduler and records its own): this
        one, unless a side takes several QPUs in one file (Slurm's ``[[qpus]]``)."""
        return [self]

    @classmethod
    def load(cls, path: str | None = None) -> Self:
        """Settings from ``path`` (default DEFAULT_CONFIG), a file that must exist and that
        only root (or this process's user) can change: without it no hook runs, rather than
        send root's credential to a default URL someone else may listen on."""
        file = Path(path or cls.DEFAULT_CONFIG)
        if not file.is_file():
            raise FileNotFoundError(f"{cls.SECTION} hook settings file {file} does not exist")
        check_trusted_file(file)
        return cls.parse(file.read_text(), file)

    @classmethod
    def parse(cls, text: str, file: Path) -> Self:
        """Settings from ``text``, the TOML of ``file``; else SettingsError naming every
        unknown key at any level (with the key likely meant), every key the hooks would not
        read, every value of the wrong type and every value the settings refuse: a typo must
        stop the check (and the hooks, loudly), never leave a default in its place."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SettingsError(file, [f"not valid TOML: {err}"]) from None
        accepted, found = cls._from_file(data)
        try:
            settings = cls.read(accepted)
        except ValidationError as err:
            found += problems(err.errors())
        if found:
            raise SettingsError(file, found)
        return settings

    @classmethod
    def _from_file(cls, data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The settings of a TOML document that have their type, and what is wrong in it."""
        settings = cls.model_fields
        found: list[str] = []
        section = data.get(cls.SECTION)
        if isinstance(section, dict):  # other tables are other programs' (a shared file)
            values, prefix = section, f"{cls.SECTION}."
            for key, value in data.items():
                if key == cls.SECTION or isinstance(value, dict):
                    continue
                if key in cls.TABLES:
                    found.append(
                        f"the [[{key}]] tables are outside the [{cls.SECTION}] table, where the "
                        f"hooks read their settings: write them [[{cls.SECTION}.{key}]]"
                    )
                elif key in settings:
                    found.append(
                        f"`{key}` is outside the [{cls.SECTION}] table, where the hooks read "
                        f"their settings: move it below the [{cls.SECTION}] line"
                    )
                else:
                    found.append(_unknown(key, settings, f" (outside [{cls.SECTION}])"))
        else:
            values, prefix = data, ""
        accepted: dict[str, Any] = {}
        for key, value in values.items():
            setting = settings.get(key)
            if setting is None:
                place = f" in [{cls.SECTION}]" if prefix else ""
                also = () if prefix else (cls.SECTION,)  # a misspelt [slurm] table
                found.append(_unknown(key, settings, place, also))
            elif key in cls.TABLES:
                entries, wrong = _tables(f"{prefix}{key}", value, cls.TABLES[key])
                found += wrong
                accepted[key] = entries
            elif (words := wrong_type(setting, value)) is not None:
                found.append(f"`{prefix}{key}` must be {words}, not {toml_type(value)} ({value!r})")
            else:
                accepted[key] = value
        return accepted, found


def _unknown(key: str, known: Iterable[str], place: str, also: Iterable[str] = ()) -> str:
    """An unknown key's problem, with the known one (or one of ``also``) it likely misspells."""
    return f"unknown key `{key}`{place}: {did_you_mean(key, known, also)}"


def _tables(
    name: str, value: object, keys: frozenset[str]
) -> tuple[tuple[dict[str, str], ...], list[str]]:
    """The ``[[name]]`` tables of ``value`` with their string ``keys``, and what is wrong
    with them (unknown keys, values that are no string: those are left out)."""
    if not isinstance(value, list):
        problem = f"`{name}` must be [[{name}]] tables (an array of tables), not {toml_type(value)}"
        return (), [problem]
    entries: list[dict[str, str]] = []
    found: list[str] = []
    for number, entry in enumerate(value, 1):
        if not isinstance(entry, dict):
            found.append(f"`{name}` must hold [[{name}]] tables, not {toml_type(entry)}")
            continue
        accepted = {}
        for key, item in entry.items():
            if key not in keys:
                found.append(_unknown(key, keys, f" in [[{name}]] table {number}"))
            elif not isinstance(item, str):
                found.append(
                    f"`{name}.{key}` must be a string, not {toml_type(item)} ({item!r}) "
                    f"(table {number})"
                )
            else:
                accepted[key] = item
        entries.append(accepted)
    return tuple(entries), found


def check_trusted_file(path: Path, owner: str = "") -> None:
    """HookError unless ``path``, the file it links to and every directory above either belong
    to root, to this process's user or to ``owner`` (a user name), and no one else can write
    them (a sticky directory like /tmp excepted): nobody else can have put or changed what
    it says, or replaced it."""
    owners = {0, os.geteuid()}
    if owner:
        try:
            owners.add(pwd.getpwnam(owner).pw_uid)
        except KeyError:
            raise HookError(f"no user {owner!r} (the owner {path} should have)") from None
    given, real = Path(os.path.abspath(path)), Path(os.path.realpath(path))
    for item in {given, real, *given.parents, *real.parents}:
        try:
            info = item.lstat()
        except OSError as err:
            raise HookError(f"cannot check {path}: {err}") from None
        link = stat.S_ISLNK(info.st_mode)  # a link's mode means nothing, its folder's does
        folder = not link and item not in (given, real)
        writable = (
            not link and info.st_mode & 0o022 and not (folder and info.st_mode & stat.S_ISVTX)
        )
        if info.st_uid not in owners or writable:
            raise HookError(
                f"{path} is not trusted: {item} must belong to root and be writable by it "
                "alone (root's hooks act on what it says)"
            )


@dataclass
class JobRecord:
    """What the job-start hook leaves for the job's environment and the job-end hook."""

    job_id: str
    uid: int
    resource: str
    url: str
    slots: int
    timeout_s: int
    session: str | None = None
    error: str | None = None
    """Why the job holds QPU slots but no session (the scheduler was unreachable, ...)."""


@dataclass
class JobEnvironment:
    """How a job's environment changes: variables to set (in order), to unset, and a notice
    for the job's output when it holds QPU slots but got no session."""

    set: dict[str, str] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)
    notice: str | None = None


# -- the scheduler -------------------------------------------------------------------------


def request(config: HookSettings, method: str, path: str, **kwargs: Any) -> Any:
    """One call to the configured scheduler with a fresh MUNGE credential of this process,
    bound to the request (the scheduler refuses replays, and takes root's for an admin's only
    so). No proxy or certificate setting of the environment applies: it may be the job's."""
    import httpx

    from qhpc_lab import munge

    def bound_credential(outgoing: httpx.Request) -> httpx.Request:
        try:
            outgoing.headers["X-Munge-Cred"] = munge.encode_for_request(
                outgoing.method,
                outgoing.url.raw_path,
                outgoing.read(),
                socket=config.munge_socket or None,
            )
        except munge.MungeError as err:
            raise HookError(f"no MUNGE credential: {err} (is munged running?)") from None
        return outgoing

    url = config.scheduler_url.rstrip("/") + path
    try:
        with httpx.Client(timeout=config.timeout_s, trust_env=False) as client:
            response = client.request(method, url, auth=bound_credential, **kwargs)
    except httpx.HTTPError as err:
        reason = str(err) or type(err).__name__
        raise HookError(f"scheduler unreachable at {config.scheduler_url}: {reason}") from None
    if response.status_code >= 400:
        error = read_error(response.content)
        detail = error.detail if error is not None else response.text.strip()
        raise HookError(
            f"scheduler refused {method} {path} ({response.status_code}): {detail}",
            response.status_code,
        )
    return response.json()


def _revoke(config: HookSettings, session: str, reason: str) -> None:
    request(config, "DELETE", f"/sessions/{session}", params={"reason": reason})


# -- session records -------------------------------------------------------------------------


def secure_dir(path: Path, mode: int) -> Path:
    """A directory owned by this user that nobody else can write to (no planted files)."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise HookError(f"{path} must be owned by uid {os.geteuid()} and writable only by it")
    return path


def private_file(config: HookSettings, job_id: str, stale: bool = False) -> Path:
    return Path(config.run_dir) / "private" / f"{'stale-' if stale else ''}job-{job_id}.json"


def write_record(path: Path, record: JobRecord, uid: int, gid: int) -> None:
    """Atomically, mode 0600, owned by ``uid``."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchown(handle.fileno(), uid, gid)
        json.dump(dataclasses.asdict(record), handle)
    os.replace(partial, path)


def read_record(path: Path) -> JobRecord | None:
    """The record at ``path``; None when there is none (the job holds no QPU share)."""
    try:
        return JobRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def _retry_stale(config: HookSettings, reason: str) -> None:
    """Revoke sessions an earlier job-end hook could not (the scheduler answers again now)."""
    folder = Path(config.run_dir) / "private"
    for path in sorted(folder.glob("stale-job-*.json"))[:STALE_RETRIES]:
        record = read_record(path)
        try:
            if record is not None and record.session:
                _revoke(config, record.session, reason)
        except HookError as err:
            if err.status != 404:
                log.warning("still cannot revoke job %s's session: %s", record.job_id, err)
                return
        log.info("revoked the session of ended job %s (left over)", record and record.job_id)
        path.unlink(missing_ok=True)


# -- open and close ---------------------------------------------------------------------------


def open_session(
    config: HookSettings,
    job_id: str,
    uid: int,
    slots: int,
    timeout_s: int | None,
    reason: str,
    account: str | None = None,
) -> JobRecord:
    """The job-start step: a session of ``slots`` for ``uid`` (charged to the job's Slurm
    ``account``, which reservations can be for and account quotas budget), recorded for the
    job-end hook.

    A scheduler that refuses or does not answer leaves a record with ``error`` (the job still
    runs, on the emulator). ``reason`` is what earlier failed revocations are retried with.
    """
    run_dir = secure_dir(Path(config.run_dir), 0o711)
    secure_dir(run_dir / "private", 0o700)
    limit = timeout_s or config.default_job_timeout_s
    record = JobRecord(job_id, uid, config.resource, config.scheduler_url, slots, limit)
    body: dict[str, object] = {"user_id": str(uid), "scheduler_job_id": job_id, "qpu_slots": slots}
    if account:
        body["slurm_account"] = account
    try:
        record.session = str(request(config, "POST", "/sessions", json=body)["id"])
    except HookError as err:
        record.error = str(err)
        log.error("no QPU session for uid %d (%d slot(s)): %s", uid, slots, err)
    else:
        log.info("opened QPU session %s for uid %d, %d slot(s)", record.session, uid, slots)
    write_record(private_file(config, job_id), record, os.geteuid(), os.getegid())
    if record.session:
        _retry_stale(config, reason)
    return record


def close_session(config: HookSettings, job_id: str, reason: str) -> JobRecord | None:
    """The job-end step: revoke the job's session (its queued programs are cancelled with
    ``reason``) and drop its record; one the scheduler did not take is kept and retried by
    the next hook that reaches it. The job's record, or None when it held no share."""
    private = private_file(config, job_id)
    record = read_record(private)
    if record is None or not record.session:
        private.unlink(missing_ok=True)
        return record
    try:
        _revoke(config, record.session, reason)
    except HookError as err:
        if err.status != 404:
            log.error("could not revoke QPU session %s (retried later): %s", record.session, err)
            private.rename(private_file(config, job_id, stale=True))
            return record
        log.warning("QPU session %s was already gone: %s", record.session, err)
    else:
        log.info("revoked QPU session %s (%s)", record.session, reason)
    private.unlink(missing_ok=True)
    _retry_stale(config, reason)
    return record


# -- the job's environment --------------------------------------------------------------------


def job_environment(
    config: HookSettings,
    environ: Mapping[str, str],
    record: JobRecord | None,
    job_id: str,
    list_variables: tuple[str, ...] = QRMI_LIST_VARIABLES,
    uid: str = "",
) -> JobEnvironment:
    """The QRMI variables of a job from its record, given the environment it would start with.

    ``list_variables`` are (resource names, types) pairs: QRMI's, plus aliases a side exports
    too (Slurm's SLURM_JOB_QPU_*). Resources that something else (QRMI's SPANK plugin) set for
    *this* job (QRMI_JOB_ID is ``job_id``) are kept; values inherited from an enclosing job (a
    submission inside a job) are dropped, so a job never uses a session that is not its own.
    """
    name = config.resource
    per_resource = (
        qrmi.warden_url(name),
        qrmi.acquisition_token(name),
        qrmi.timeout_seconds(name),
    )
    delimiter = qrmi.delimiter(environ)
    pairs: list[tuple[str, str]] = []
    if environ.get(qrmi.JOB_ID) == job_id:
        names, kinds = (
            [item for item in environ.get(v, "").split(delimiter) if item]
            for v in list_variables[:2]
        )
        if len(names) == len(kinds):
            pairs = [(n, k) for n, k in zip(names, kinds, strict=True) if n != name]
    change = JobEnvironment()
    if record is not None and record.session:
        pairs.append((name, RESOURCE_TYPE))
        values = (record.url, record.session, str(record.timeout_s))
        change.set.update(zip(per_resource, values, strict=True))
    else:
        change.unset += [var for var in per_resource if var in environ]
        if record is not None and record.error:
            change.notice = (
                f"qhpc: this job holds {record.slots} QPU slot(s) but got no scheduler "
                f"session ({record.error}); programs run on the local emulator"
            )
    if pairs:
        resources = delimiter.join(n for n, _ in pairs)
        kinds_text = delimiter.join(k for _, k in pairs)
        for resources_var, types_var in zip(list_variables[::2], list_variables[1::2], strict=True):
            change.set[resources_var] = resources
            change.set[types_var] = kinds_text
        change.set[qrmi.JOB_UID] = str(record.uid) if record else uid
        change.set[qrmi.JOB_ID] = job_id
    else:
        stale = (*list_variables, qrmi.JOB_UID, qrmi.JOB_ID)
        change.unset += [var for var in stale if var in environ]
    return change


def qpus_environment(
    qpus: Sequence[tuple[HookSettings, JobRecord | None]],
    environ: Mapping[str, str],
    job_id: str,
    list_variables: tuple[str, ...] = QRMI_LIST_VARIABLES,
    uid: str = "",
) -> JobEnvironment:
    """:func:`job_environment` for several QPUs (each settings with the job's record there):
    each QPU's change applies to the environment the previous ones left, so the lists name
    every QPU the job holds, in order, and one QPU's session never hides another's."""
    current = dict(environ)
    change = JobEnvironment()
    notices = []
    for config, record in qpus:
        step = job_environment(config, current, record, job_id, list_variables, uid)
        for var in step.unset:
            current.pop(var, None)
        current.update(step.set)
        change.set.update(step.set)
        change.unset += [var for var in step.unset if var not in change.unset]
        notices += [step.notice] if step.notice else []
    change.unset = [var for var in change.unset if var not in current]
    change.set = {var: value for var, value in change.set.items() if var in current}
    change.notice = "\n".join(notices) or None
    return change


# -- the hook scripts -------------------------------------------------------------------------


def runnable_by_everyone(path: str | Path) -> bool:
    """Every user can run ``path`` (:func:`why_not_runnable`)."""
    return why_not_runnable(path) is None


def why_not_runnable(path: str | Path) -> str | None:
    """Why some user cannot run ``path``, naming the file or directory that keeps them out and
    its mode; None when every user can: x on each directory on the way to it and to the file a
    symlink chain ends at (a venv made by a pyenv under /root points into /root), r+x on it."""
    given = Path(os.path.abspath(path))
    real = Path(os.path.realpath(given))
    try:
        mode = real.stat().st_mode
        if mode & 0o005 != 0o005:
            return f"{real} is mode {mode & 0o777:04o}, not readable and executable by others"
        for folder in sorted({*given.parents, *real.parents}):
            mode = folder.stat().st_mode
            if not mode & 0o001:
                return f"directory {folder} is mode {mode & 0o777:04o}, not searchable by others"
    except OSError as err:
        return f"cannot check {path}: {err}"
    return None


def check_job_python(python: str) -> None:
    """PermissionError unless only root can change ``python`` (root runs it), every user can
    run it and, tried as ``nobody`` when we are root, import the hooks with it: the hooks run
    as job users or daemon users too."""
    try:
        check_trusted_file(Path(python))
    except HookError as err:
        raise PermissionError(f"the hooks run {python} as root: {err}") from None
    why = why_not_runnable(python)
    if why is not None:
        raise PermissionError(
            f"{python} (really {os.path.realpath(python)}) is not executable by other users "
            f"({why}): the hooks would fail with 'Permission denied'. Make the venv with a "
            "system Python (/usr/bin/python3.11 -m venv), not one under a home directory, or "
            "open that path to all (chmod o+x on the directory, o+rx on the file)"
        )
    runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if os.geteuid() != 0 or runuser is None:
        return
    imports = "import qhpc_lab.hpc.gridengine, qhpc_lab.hpc.slurm"
    check = subprocess.run(
        [runuser, "-u", "nobody", "--", python, "-I", "-c", imports],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check.returncode:
        raise PermissionError(
            f"other users cannot import qhpc_lab with {python} (tried as nobody): "
            f"{(check.stderr.strip().splitlines() or ['?'])[-1][-1000:]}. Install qhpc-lab in "
            "that venv, readable by all"
        )


def write_hook_scripts(
    directory: Path, python: str, config: str, side: str, hooks: Mapping[str, str]
) -> dict[str, Path]:
    """One wrapper script per hook: the first-level scheduler runs a program path without
    arguments. ``side`` is the ``qhpc`` sub-command, ``hooks`` maps each of its hooks to the
    setting that runs it. ``python`` must be runnable by every user (check_job_python); ``-I``
    keeps a job's working directory and PYTHON* variables out of the hook's imports."""
    check_job_python(python)
    directory.mkdir(parents=True, exist_ok=True)
    scripts: dict[str, Path] = {}
    for hook, setting in hooks.items():
        path = directory / hook
        path.write_text(
            f"#!/bin/sh\n# {setting} of qhpc-lab (written by qhpc; see docs/hpc-deployment.md)\n"
            f"exec {shlex.quote(python)} -I -m qhpc_lab.cli {side} {hook} "
            f"--config {shlex.quote(config)}\n"
        )
        path.chmod(0o755)
        scripts[hook] = path
    return scripts


# -- running a hook ---------------------------------------------------------------------------


class _HookTimeout(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Abort the hook after ``seconds`` whatever it is blocked on (SIGALRM)."""

    def expire(_signum: int, _frame: object) -> None:
        raise _HookTimeout(f"gave up after {seconds:g} s (deadline_s)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def log_to(
    name: str, hook: str, job_id: str, log_file: str | None, stderr_level: int = logging.INFO
) -> None:
    """Log lines name the side, the hook and the job; to stderr from ``stderr_level`` on, and
    to ``log_file`` when writable."""
    handlers: list[logging.Handler] = []
    if not log.handlers:
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(stderr_level)
        handlers.append(console)
    if log_file:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(log_file))
        except OSError as err:
            log.warning("cannot write the log file %s: %s", log_file, err)
    for handler in handlers:
        log.addHandler(handler)
    _LABEL.update(side=name, hook=hook)
    name_job(job_id)
    log.setLevel(logging.INFO)
    log.propagate = False


def name_job(job_id: str) -> None:
    """Name ``job_id`` in the log lines from now on (a side that learns it late)."""
    job = f" job {job_id}" if job_id else ""
    text = f"%(asctime)s qhpc-{_LABEL['side']} {_LABEL['hook']}{job} %(levelname)s: %(message)s"
    for handler in log.handlers:
        handler.setFormatter(logging.Formatter(text))


def isolate(keep: Mapping[str, str]) -> dict[str, str]:
    """Make this process's environment :data:`HOOK_ENVIRONMENT` plus ``keep`` (the facts the
    batch system itself set, chosen by the side) and return it: nothing else of the job's
    environment reaches a library or a command the hook runs."""
    os.environ.clear()
    os.environ.update(HOOK_ENVIRONMENT)
    os.environ.update(keep)
    return dict(os.environ)


def run_guarded(
    settings: type[Settings],
    hook: str,
    job_id: str,
    config_path: str | None,
    step: Callable[[Settings], object],
    stderr_level: int = logging.INFO,
) -> int:
    """Load the settings and run ``step`` under the deadline, logging instead of raising.

    Always 0: a failing job-start hook drains the node (Slurm) or sets the queue in error
    (Grid Engine) and holds the job. ``stderr_level``: where stderr is the job's own output
    (Grid Engine), only warnings and errors go there.
    """
    log_to(settings.SECTION, hook, job_id, None, stderr_level)
    try:
        config = settings.load(config_path)
        log_to(settings.SECTION, hook, job_id, config.log_file)
        with deadline(config.deadline_s):
            step(config)
    except Exception as err:  # logged, never raised: see the docstring
        log.error("%s", err)
    return 0
