"""What ``qhpc run`` asks the batch system for: the ``[runs]`` table of the targets file."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping

from pydantic import Field, ValidationError

from qhpc_lab.client import targets_file_path
from qhpc_lab.settings import SettingsModel, problems


class RunSettings(SettingsModel):
    """A site's (or user's) choices for notebook runs; docs/notebook-runs.md, "Settings"."""

    licence: str = "qpu"
    """The licence (Slurm) or consumable (Grid Engine) that ``--qpu N`` requests N of: the
    name the site's QPU hooks count a job's QPU slots by."""
    licences: dict[str, str] = Field(default_factory=dict)
    """QPU resource → its licence, for ``--qpu RESOURCE=N`` where they differ (a resource
    not listed is its own licence's name, as in the dev clusters' ``qpu_a``)."""
    partition: str | None = None
    """Slurm's partition, Grid Engine's queue (default: the batch system's)."""
    account: str | None = None
    """Slurm's account, Grid Engine's project."""
    time_limit: str | None = None
    """A run's time limit when ``--time`` is not given (``30m``, ``2h``, ``1:30:00``)."""
    output_dir: str | None = None
    """Where executed notebooks go (default: beside the notebook)."""
    extra: tuple[str, ...] = ()
    """Further options for sbatch or qsub, as they are."""

    def licence_of(self, resource: str | None) -> str:
        """The licence counting ``resource``'s slots (None: the default QPU)."""
        return self.licence if resource is None else self.licences.get(resource, resource)


def run_settings(environ: Mapping[str, str]) -> RunSettings:
    """The ``[runs]`` table of the targets file; the defaults without one. ValueError, naming
    the file, for a table that does not read."""
    path = targets_file_path(environ)
    try:
        data = tomllib.loads(path.read_text()) if path.is_file() else {}
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"targets file {path} is unreadable: {err}") from None
    table = data.get("runs", {}) if isinstance(data, dict) else {}
    try:
        return RunSettings.read(table)
    except ValidationError as err:
        raise ValueError(f"{path} [runs]: {'; '.join(problems(err.errors()))}") from None
