"""The QRMI job variables: what the batch system's hooks write and the kernel's discovery reads.

Names as QRMI's own Slurm plugin sets them (qiskit-community/spank-plugins), so a job works
with that plugin or ours; docs/client.md lists them.
"""

from __future__ import annotations

from collections.abc import Mapping

RESOURCES = "QRMI_JOB_QPU_RESOURCES"
"""The job's QPU resources' names, separated by :data:`LIST_DELIMITER`."""
TYPES = "QRMI_JOB_QPU_TYPES"
"""Their QRMI types, in the same order (``pasqal-local``: a Warden, ours)."""
LIST_VARIABLES = (RESOURCES, TYPES)
LIST_DELIMITER = "QRMI_LIST_DELIMITER"
"""The variable naming the lists' separator (default :data:`DEFAULT_DELIMITER`)."""
DEFAULT_DELIMITER = ","
JOB_ID = "QRMI_JOB_ID"
"""The batch job the variables were set for (a job inside a job inherits its parent's)."""
JOB_UID = "QRMI_JOB_UID"
SLURM_RESOURCES = "SLURM_JOB_QPU_RESOURCES"
"""Slurm's aliases of the two lists, read when QRMI's are not set."""
SLURM_TYPES = "SLURM_JOB_QPU_TYPES"
SLURM_LIST_VARIABLES = (SLURM_RESOURCES, SLURM_TYPES)


def warden_url(resource: str) -> str:
    """The scheduler's URL (or its replicas', comma-separated) for ``resource``."""
    return f"{resource}_QRMI_WARDEN_URL"


def acquisition_token(resource: str) -> str:
    """The session id ``resource``'s requests carry (``X-Warden-Session``)."""
    return f"{resource}_QRMI_JOB_ACQUISITION_TOKEN"


def timeout_seconds(resource: str) -> str:
    """How long a job on ``resource`` may take, in seconds."""
    return f"{resource}_QRMI_JOB_TIMEOUT_SECONDS"


def delimiter(environ: Mapping[str, str]) -> str:
    """The lists' separator in the job's environment."""
    return environ.get(LIST_DELIMITER) or DEFAULT_DELIMITER
