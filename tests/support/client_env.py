"""The environment a Slurm job's kernel gets: what the client discovers its targets from."""

from __future__ import annotations

import pytest

from qhpc_lab.client import Client, _client
from qhpc_lab.scheduler.auth import make_token
from tests.support.identities import SECRET, USER


def lab_env(url: str, **extra: str) -> dict[str, str]:
    """The variables our Slurm hooks (or QRMI's plugin) give a job with one QPU share."""
    return {
        "QRMI_JOB_QPU_RESOURCES": "lab",
        "QRMI_JOB_QPU_TYPES": "pasqal-local",
        "lab_QRMI_WARDEN_URL": url,
        "QHPC_TOKEN": make_token(SECRET, USER),
        **extra,
    }


def make_default(monkeypatch: pytest.MonkeyPatch, client: Client) -> Client:
    """``client`` as the process's default (``qhpc_lab.submit``, the magics) for one test.

    The one reach into the client's private modules: the default client has no public setter,
    a kernel discovers it from its environment on first use."""
    monkeypatch.setattr(_client, "_default", client)
    return client
