"""``qhpc slurm check`` and ``qhpc gridengine check``: a site's hook setup, checked before it
is deployed.

A hook never fails a job, so a broken setup shows only as a line in the hooks' log at every
job start, while every job quietly runs on the emulator. The check runs what the hooks run
(the same settings loader, the same interpreter check as ``hook-scripts``) and asks each
configured scheduler's ``/health``, and names every problem with its remedy at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx

from qhpc_lab.hpc.gridengine import GridEngineConfig
from qhpc_lab.hpc.hooks import HookError, HookSettings, SettingsError, check_job_python
from qhpc_lab.hpc.slurm import HookConfig

SIDES: dict[str, type[HookSettings]] = {
    side.SECTION: side for side in (HookConfig, GridEngineConfig)
}
"""``qhpc <side> check`` → the settings its hooks load."""


@dataclass
class Report:
    """What the check found good (one line each) and what is wrong (each with its remedy)."""

    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_site(side: str, config_path: str, python: str, offline: bool = False) -> Report:
    """Check ``side``'s settings file ``config_path`` as its hooks load it, each configured
    scheduler's ``/health`` (unless ``offline``), and ``python``, the interpreter the hook
    scripts run (root, job users and daemon users alike)."""
    report = Report()
    config = _settings(SIDES[side], config_path, report)
    if config is None:
        report.checked.append("schedulers not checked: the settings are wrong")
    else:
        for qpu in config.qpu_configs():
            if offline:
                report.checked.append(f"{qpu.resource} → {qpu.scheduler_url} not asked (--offline)")
            else:
                _health(qpu, report)
    try:
        check_job_python(python)
    except OSError as err:  # PermissionError: who cannot run it, and the fix
        report.problems.append(f"interpreter: {err}")
    else:
        report.checked.append(f"interpreter {python} runnable by all users")
    return report


def _settings(side: type[HookSettings], path: str, report: Report) -> HookSettings | None:
    """The settings as the hooks would load them, or None with the problems reported."""
    try:
        config = side.load(path)
    except SettingsError as err:
        report.problems += [f"{path}: {problem}" for problem in err.problems]
        return None
    except FileNotFoundError as err:
        report.problems.append(f"{err}: write it as docs/hpc-deployment.md shows")
        return None
    except (HookError, OSError) as err:  # not trusted (its own remedy), or unreadable
        report.problems.append(str(err))
        return None
    qpus = config.qpu_configs()
    names = ", ".join(qpu.resource for qpu in qpus)
    count = f"{len(qpus)} QPU{'s' * (len(qpus) > 1)}"
    report.checked.append(f"settings {Path(path)}: owner, modes and keys ok; {count}: {names}")
    return config


def _health(config: HookSettings, report: Report) -> None:
    """Whether the scheduler answers ``GET /health`` within the hooks' own ``timeout_s``,
    without the environment's proxies (the hooks use none)."""
    url = config.scheduler_url.rstrip("/") + "/health"
    where = f"{config.resource} → {url}"
    try:
        with httpx.Client(timeout=config.timeout_s, trust_env=False) as client:
            response = client.get(url)
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        report.problems.append(
            f"scheduler {where} unreachable: {err or type(err).__name__}. Is `qhpc scheduler "
            "serve` running there, and does this node reach it? (--offline skips this check "
            "where it runs off the compute nodes)"
        )
        return
    if response.status_code != 200:
        report.problems.append(
            f"scheduler {where} answered HTTP {response.status_code}: {response.text[:200]!r}. "
            "Is scheduler_url the qhpc scheduler's, and is its dispatcher running (its log)?"
        )
        return
    report.checked.append(f"{where} ok")
