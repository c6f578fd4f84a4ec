"""The API's routes, one router per resource; ``app.py`` mounts :data:`ROUTERS` in order."""

from qhpc_lab.scheduler.routes import (
    accounting,
    admin,
    device,
    events,
    health,
    jobs,
    quotas,
    sessions,
    status,
)

ROUTERS = [
    device.router,
    sessions.router,
    jobs.router,
    events.router,
    health.router,
    status.router,
    accounting.router,
    admin.router,
    quotas.router,
]

__all__ = ["ROUTERS"]
