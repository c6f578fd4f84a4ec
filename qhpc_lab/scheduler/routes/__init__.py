"""The API's routes, one router per resource; ``app.py`` mounts :data:`ROUTERS` in order."""

from qhpc_lab.scheduler.routes import (
    accounting,
    admin,
    device,
    estimate,
    events,
    health,
    jobs,
    quotas,
    reservations,
    sessions,
    status,
)

ROUTERS = [
    device.router,
    sessions.router,
    jobs.router,
    estimate.router,
    events.router,
    health.router,
    status.router,
    accounting.router,
    admin.router,
    reservations.router,
    quotas.router,
]

__all__ = ["ROUTERS"]
