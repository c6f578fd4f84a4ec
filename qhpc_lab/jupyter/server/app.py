"""The extension application: settings, routes, and the service's lifetime."""

from __future__ import annotations

import os

from jupyter_server.extension.application import ExtensionApp
from traitlets import Unicode

from qhpc_lab.jupyter.server.handlers import (
    BatchCancelHandler,
    BatchHandler,
    BatchParametersHandler,
    CancelHandler,
    EventsHandler,
    JobsHandler,
    TargetsHandler,
)
from qhpc_lab.jupyter.server.service import QPUService

API = "/qhpc/api"


class QHPCLab(ExtensionApp):
    """Finds the user's QPU targets as a kernel would and serves them to JupyterLab."""

    name = "qhpc_lab"
    load_other_extensions = True

    targets_file = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Targets file for discovery (default: $QHPC_TARGETS_FILE, else "
        "~/.config/qhpc/targets.toml), read besides the job's QRMI variables.",
    )
    service: QPUService

    def initialize_settings(self) -> None:
        self.service = QPUService(
            os.environ, self.targets_file, self.log, root_dir=self.serverapp.root_dir
        )
        self.settings["qhpc_service"] = self.service

    def initialize_handlers(self) -> None:
        self.handlers.extend(
            [
                (f"{API}/targets", TargetsHandler),
                (f"{API}/jobs", JobsHandler),
                (rf"{API}/jobs/(\d+)/cancel", CancelHandler),
                (f"{API}/events", EventsHandler),
                (f"{API}/batch", BatchHandler),
                (f"{API}/batch/parameters", BatchParametersHandler),
                (rf"{API}/batch/([^/]+)/cancel", BatchCancelHandler),
            ]
        )

    async def stop_extension(self) -> None:
        await self.service.close()
