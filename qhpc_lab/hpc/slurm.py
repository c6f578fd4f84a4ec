"""Slurm Prolog, Epilog and TaskProlog hooks: a job's ``qpu`` share becomes a scheduler session.

Prolog (root, on the node; at allocation with ``PrologFlags=Alloc``, so salloc works too): read
the job's ``qpu`` licence/GRES count from ``scontrol show job``, open a session on the
second-level scheduler for the job's user with a root MUNGE credential, and leave
``{run_dir}/job-{id}.json`` (0600, owned by the user) for the TaskProlog plus a root-only copy
under ``{run_dir}/private`` for the Epilog (a user can rewrite a file they own, so the Epilog
must not trust theirs).
TaskProlog (as the user, before each task): print ``export`` lines for the QRMI variables of
DESIGN §3.1, exactly as QRMI's SPANK plugin would, so the kernel finds the QPU either way.
Epilog (root, at job end or scancel): revoke the session (the scheduler cancels its queued jobs
with the reason "Slurm job ended") and remove both files.

A hook never fails a job or drains a node: each error is one log line, the exit status is 0,
requests have short timeouts and the whole hook a hard deadline. A job whose Prolog could not
reach the scheduler still runs; its TaskProlog says why, and the client uses the emulator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESOURCE_TYPE = "pasqal-local"
"""QRMI's type for a Warden-compatible second-level scheduler (ours)."""
REVOKE_REASON = "Slurm job ended"
DEFAULT_CONFIG = "/etc/qhpc/slurm.toml"
HOOKS = {"prolog": "Prolog", "epilog": "Epilog", "task-prolog": "TaskProlog"}
"""``qhpc slurm`` sub-command → the slurm.conf parameter that runs it."""
SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin"
"""Slurm runs the Prolog and Epilog without PATH: where to find scontrol."""
STALE_RETRIES = 20
"""At most this many earlier failed revocations are retried per hook run."""
LIST_VARIABLES = (
    "QRMI_JOB_QPU_RESOURCES",
    "QRMI_JOB_QPU_TYPES",
    "SLURM_JOB_QPU_RESOURCES",
    "SLURM_JOB_QPU_TYPES",
)

log = logging.getLogger("qhpc.slurm")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class HookError(Exception):
    """A step of a hook failed; ``status`` is the scheduler's HTTP status when it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HookConfig:
    """Hook settings: defaults, then a TOML file (top-level keys or a ``[slurm]`` table), then
    ``QHPC_SLURM_<NAME>`` variables. Slurm gives the Prolog no environment of its own, so the
    wrapper scripts pass the file with ``--config``."""

    scheduler_url: str = "http://127.0.0.1:8006"
    """The scheduler as compute nodes reach it; exported as ``{resource}_QRMI_WARDEN_URL``."""
    resource: str = "qpu"
    """QRMI resource name: the entry in QRMI_JOB_QPU_RESOURCES and the variables' prefix."""
    licence: str = "qpu"
    """Slurm licence and/or GRES name whose count is the job's QPU slots."""
    run_dir: str = "/run/qhpc"
    """Per-job session files (root-owned, mode 0711: a user reads only their own file)."""
    log_file: str = "/var/log/qhpc/slurm-hooks.log"
    timeout_s: float = 5.0
    """Per request to the scheduler, and for scontrol."""
    deadline_s: float = 20.0
    """Hard limit for one Prolog or Epilog run; keep it below slurm.conf's PrologEpilogTimeout."""
    default_job_timeout_s: int = 86400
    """``{resource}_QRMI_JOB_TIMEOUT_SECONDS`` for a job without a time limit."""
    munge_socket: str = ""
    """munged's socket; empty: libmunge's default."""

    def __post_init__(self) -> None:
        if not _VARIABLE_NAME.match(self.resource):
            raise ValueError(
                f"resource {self.resource!r} must be usable as an environment variable prefix "
                "(letters, digits and _, not starting with a digit)"
            )

    @classmethod
    def load(cls, path: str | None = None, environ: Mapping[str, str] = os.environ) -> HookConfig:
        """Settings from ``path``, else $QHPC_SLURM_CONFIG, else /etc/qhpc/slurm.toml if present."""
        chosen = path or environ.get("QHPC_SLURM_CONFIG")
        file = Path(chosen or DEFAULT_CONFIG)
        values: dict[str, Any] = {}
        if file.is_file():
            data = tomllib.loads(file.read_text())
            values.update(data.get("slurm", data))
        elif chosen:
            raise FileNotFoundError(f"Slurm hook settings file {file} does not exist")
        names = [f.name for f in dataclasses.fields(cls)]
        for name in names:
            raw = environ.get(f"QHPC_SLURM_{name.upper()}")
            if raw is not None:
                values[name] = raw
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"unknown Slurm hook settings: {', '.join(sorted(unknown))}")
        return cls(**{k: type(getattr(cls, k))(v) for k, v in values.items()})


@dataclass
class JobRecord:
    """What the Prolog leaves for the TaskProlog and the Epilog."""

    job_id: str
    uid: int
    resource: str
    url: str
    slots: int
    timeout_s: int
    session: str | None = None
    error: str | None = None
    """Why the job holds QPU slots but no session (the scheduler was unreachable, ...)."""


# -- what Slurm says about the job ---------------------------------------------------------


def job_details(job_id: str, config: HookConfig, environ: Mapping[str, str]) -> str:
    """``scontrol show job -o`` (the Prolog's environment names no licence or GRES counts)."""
    scontrol = shutil.which("scontrol", path=environ.get("PATH") or SEARCH_PATH)
    if scontrol is None:
        raise HookError("scontrol not found: install slurm-client on the compute nodes")
    try:
        done = subprocess.run(
            [scontrol, "show", "job", "-o", job_id],
            capture_output=True,
            text=True,
            timeout=config.timeout_s,
            env=dict(environ),
        )
    except subprocess.TimeoutExpired:
        raise HookError(
            f"scontrol show job {job_id} took more than {config.timeout_s:g} s"
        ) from None
    if done.returncode:
        raise HookError(f"scontrol show job {job_id} failed: {done.stderr.strip()}")
    return done.stdout


def _field(details: str, key: str) -> str | None:
    match = re.search(rf"(?:^|\s){key}=(\S+)", details)
    return match.group(1) if match else None


def qpu_slots(details: str, licence: str) -> int:
    """The job's QPU share: its ``licence`` licence count or its GRES count, whichever is larger.

    Licences read ``qpu:2`` (``qpu*2`` in newer Slurm, ``qpu@server:2`` when remote); GRES
    ``gres:qpu:2``, ``gres/qpu:2`` or ``gres:qpu:type:2``; no count means 1.
    """
    slots = 0
    for key in ("Licenses", "TresPerNode", "TresPerJob"):
        for item in (_field(details, key) or "").split(","):
            if key != "Licenses":
                if not item.startswith(("gres:", "gres/")):
                    continue
                item = item[5:]
            parts = re.split(r"[:*=]", item)
            if parts[0].split("@")[0] != licence:
                continue
            count = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
            slots = max(slots, count)
    return slots


def time_limit_s(details: str) -> int | None:
    """The job's time limit in seconds (``[D-]HH:MM:SS``); None when UNLIMITED or unknown."""
    text = _field(details, "TimeLimit")
    if not text or not text[0].isdigit():
        return None
    days, _, clock = text.rpartition("-")
    try:
        hours, minutes, seconds = ([0, 0] + [int(p) for p in clock.split(":")])[-3:]
        return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    except ValueError:
        return None


# -- the scheduler -------------------------------------------------------------------------


def _request(config: HookConfig, method: str, path: str, **kwargs: Any) -> Any:
    """One call with a fresh root MUNGE credential (the scheduler refuses replays)."""
    import httpx

    from qhpc_lab import munge

    try:
        credential = munge.encode(socket=config.munge_socket or None)
    except munge.MungeError as err:
        raise HookError(f"no MUNGE credential: {err} (is munged running?)") from None
    url = config.scheduler_url.rstrip("/") + path
    try:
        response = httpx.request(
            method, url, headers={"X-Munge-Cred": credential}, timeout=config.timeout_s, **kwargs
        )
    except httpx.HTTPError as err:
        reason = str(err) or type(err).__name__
        raise HookError(f"scheduler unreachable at {config.scheduler_url}: {reason}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text.strip()
        raise HookError(
            f"scheduler refused {method} {path} ({response.status_code}): {detail}",
            response.status_code,
        )
    return response.json()


def _revoke(config: HookConfig, session: str) -> None:
    _request(config, "DELETE", f"/sessions/{session}", params={"reason": REVOKE_REASON})


# -- session files ---------------------------------------------------------------------------


def _secure_dir(path: Path, mode: int) -> Path:
    """A root-owned directory nobody else can write to (users must not plant files there)."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise HookError(f"{path} must be owned by uid {os.geteuid()} and writable only by it")
    return path


def user_file(config: HookConfig, job_id: str) -> Path:
    return Path(config.run_dir) / f"job-{job_id}.json"


def _private_file(config: HookConfig, job_id: str, stale: bool = False) -> Path:
    return Path(config.run_dir) / "private" / f"{'stale-' if stale else ''}job-{job_id}.json"


def _write(path: Path, record: JobRecord, uid: int, gid: int) -> None:
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


def _retry_stale(config: HookConfig) -> None:
    """Revoke sessions an earlier Epilog could not (the scheduler answers again now)."""
    folder = Path(config.run_dir) / "private"
    for path in sorted(folder.glob("stale-job-*.json"))[:STALE_RETRIES]:
        record = read_record(path)
        try:
            if record is not None and record.session:
                _revoke(config, record.session)
        except HookError as err:
            if err.status != 404:
                log.warning("still cannot revoke job %s's session: %s", record.job_id, err)
                return
        log.info("revoked the session of ended job %s (left over)", record and record.job_id)
        path.unlink(missing_ok=True)


# -- the hooks -------------------------------------------------------------------------------


def _job(environ: Mapping[str, str]) -> tuple[str, int, int]:
    job_id = environ.get("SLURM_JOB_ID", "")
    if not job_id.isdigit():
        raise HookError("SLURM_JOB_ID is missing: this hook runs under Slurm only")
    try:
        return job_id, int(environ["SLURM_JOB_UID"]), int(environ.get("SLURM_JOB_GID", "-1"))
    except (KeyError, ValueError):
        raise HookError("SLURM_JOB_UID is missing or not a number") from None


def prolog(config: HookConfig, environ: Mapping[str, str]) -> JobRecord | None:
    """Open the job's session if it holds QPU slots; the record written, or None."""
    job_id, uid, gid = _job(environ)
    details = job_details(job_id, config, environ)
    slots = qpu_slots(details, config.licence)
    if not slots:
        log.info("uid %d holds no %s licence or GRES: no QPU session", uid, config.licence)
        return None
    run_dir = _secure_dir(Path(config.run_dir), 0o711)
    _secure_dir(run_dir / "private", 0o700)
    limit = time_limit_s(details) or config.default_job_timeout_s
    record = JobRecord(job_id, uid, config.resource, config.scheduler_url, slots, limit)
    body = {"user_id": str(uid), "slurm_job_id": job_id, "qpu_slots": slots}
    try:
        record.session = str(_request(config, "POST", "/sessions", json=body)["id"])
    except HookError as err:
        record.error = str(err)
        log.error("no QPU session for uid %d (%s:%d): %s", uid, config.licence, slots, err)
    else:
        log.info("opened QPU session %s for uid %d, %d slot(s)", record.session, uid, slots)
    _write(_private_file(config, job_id), record, os.geteuid(), os.getegid())
    _write(user_file(config, job_id), record, uid, gid)
    if record.session:
        _retry_stale(config)
    return record


def epilog(config: HookConfig, environ: Mapping[str, str]) -> None:
    """Revoke the job's session (its queued jobs are cancelled) and remove its files."""
    job_id, _, _ = _job(environ)
    private = _private_file(config, job_id)
    record = read_record(private)
    user_file(config, job_id).unlink(missing_ok=True)
    if record is None or not record.session:
        return
    try:
        _revoke(config, record.session)
    except HookError as err:
        if err.status != 404:
            log.error("could not revoke QPU session %s (retried later): %s", record.session, err)
            private.rename(_private_file(config, job_id, stale=True))
            return
        log.warning("QPU session %s was already gone: %s", record.session, err)
    else:
        log.info("revoked QPU session %s (%s)", record.session, REVOKE_REASON)
    private.unlink(missing_ok=True)
    _retry_stale(config)


def task_lines(
    config: HookConfig, environ: Mapping[str, str], record: JobRecord | None
) -> list[str]:
    """The TaskProlog's output: ``export``, ``unset`` and ``print`` lines for Slurm.

    Resources that something else (QRMI's SPANK plugin) set for *this* job are kept; values
    inherited from an enclosing job (an sbatch run inside a job) are dropped, so a job never
    uses a session that is not its own.
    """
    name = config.resource
    per_resource = (
        f"{name}_QRMI_WARDEN_URL",
        f"{name}_QRMI_JOB_ACQUISITION_TOKEN",
        f"{name}_QRMI_JOB_TIMEOUT_SECONDS",
    )
    job_id = environ.get("SLURM_JOB_ID", "")
    delimiter = environ.get("QRMI_LIST_DELIMITER") or ","
    pairs: list[tuple[str, str]] = []
    if environ.get("QRMI_JOB_ID") == job_id:
        names, kinds = (
            [item for item in environ.get(v, "").split(delimiter) if item]
            for v in LIST_VARIABLES[:2]
        )
        if len(names) == len(kinds):
            pairs = [(n, k) for n, k in zip(names, kinds, strict=True) if n != name]
    lines: list[str] = []
    if record is not None and record.session:
        pairs.append((name, RESOURCE_TYPE))
        values = (record.url, record.session, str(record.timeout_s))
        lines += [f"export {var}={value}" for var, value in zip(per_resource, values, strict=True)]
    else:
        lines += [f"unset {var}" for var in per_resource if var in environ]
        if record is not None and record.error:
            lines.append(
                f"print qhpc: this job holds {record.slots} QPU slot(s) but got no scheduler "
                f"session ({record.error}); programs run on the local emulator"
            )
    if pairs:
        resources = delimiter.join(n for n, _ in pairs)
        kinds_text = delimiter.join(k for _, k in pairs)
        uid = str(record.uid) if record else environ.get("SLURM_JOB_UID", "")
        values = (resources, kinds_text, resources, kinds_text)
        lines += [
            f"export {var}={value}" for var, value in zip(LIST_VARIABLES, values, strict=True)
        ]
        lines += [f"export QRMI_JOB_UID={uid}", f"export QRMI_JOB_ID={job_id}"]
    else:
        stale = (*LIST_VARIABLES, "QRMI_JOB_UID", "QRMI_JOB_ID")
        lines += [f"unset {var}" for var in stale if var in environ]
    return lines


def task_prolog(config: HookConfig, environ: Mapping[str, str]) -> list[str]:
    """Runs as the job's user: read their session file and answer Slurm's TaskProlog protocol."""
    job_id = environ.get("SLURM_JOB_ID", "")
    record = read_record(user_file(config, job_id)) if job_id.isdigit() else None
    return task_lines(config, environ, record)


# -- entry points --------------------------------------------------------------------------


class _HookTimeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
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


def _log_to(hook: str, job_id: str, log_file: str | None) -> None:
    """Log lines name the hook and the job; to stderr, and to ``log_file`` when writable."""
    formatter = logging.Formatter(
        f"%(asctime)s qhpc-slurm {hook} job {job_id or '?'} %(levelname)s: %(message)s"
    )
    handlers: list[logging.Handler] = [] if log.handlers else [logging.StreamHandler(sys.stderr)]
    if log_file:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(log_file))
        except OSError as err:
            log.warning("cannot write the log file %s: %s", log_file, err)
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def run_hook(hook: str, config_path: str | None, environ: Mapping[str, str] = os.environ) -> int:
    """``qhpc slurm <hook>``. Always 0: a failing Prolog would drain the node and hold the job."""
    if hook == "task-prolog":
        try:
            lines = task_prolog(HookConfig.load(config_path, environ), environ)
        except Exception as err:  # the task must start whatever happened here
            lines = [f"print qhpc: the QPU task prolog failed ({err}); the emulator is used"]
        print("\n".join(lines), flush=True)
        return 0
    job_id = environ.get("SLURM_JOB_ID", "")
    _log_to(hook, job_id, None)
    try:
        config = HookConfig.load(config_path, environ)
        _log_to(hook, job_id, config.log_file)
        with _deadline(config.deadline_s):
            if hook == "prolog":
                prolog(config, environ)
            else:
                epilog(config, environ)
    except Exception as err:  # logged, never raised: see the docstring
        log.error("%s", err)
    return 0


def write_hook_scripts(directory: Path, python: str, config: str) -> dict[str, Path]:
    """One wrapper script per hook: slurm.conf runs a program path and passes no arguments.

    ``python`` must be executable by every job user (the TaskProlog runs as them); ``-I``
    keeps a job's working directory and PYTHON* variables out of the hook's imports.
    """
    directory.mkdir(parents=True, exist_ok=True)
    scripts: dict[str, Path] = {}
    for hook, parameter in HOOKS.items():
        path = directory / hook
        path.write_text(
            f"#!/bin/sh\n# Slurm {parameter} of qhpc-lab (written by qhpc; see "
            "docs/hpc-deployment.md)\n"
            f"exec {shlex.quote(python)} -I -m qhpc_lab.cli slurm {hook} "
            f"--config {shlex.quote(config)}\n"
        )
        path.chmod(0o755)
        scripts[hook] = path
    return scripts
