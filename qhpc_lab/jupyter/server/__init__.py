"""Jupyter server extension: the REST API and event stream behind the JupyterLab QPU sidebar.

Enabled by ``jupyter-config/server-config/qhpc_lab.json``, which the package installs into
``etc/jupyter/jupyter_server_config.d``; settings are ``c.QHPCLab.*`` (see :class:`QHPCLab`).
"""

from __future__ import annotations

from typing import Any

from qhpc_lab.jupyter.server.app import QHPCLab


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "qhpc_lab.jupyter.server", "app": QHPCLab}]


__all__ = ["QHPCLab"]
