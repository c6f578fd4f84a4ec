"""The API's routes, one router per resource; ``app.py`` mounts :data:`ROUTERS` in order."""

from qhpc_lab.scheduler.routes import admin, device, events, health, jobs, sessions

ROUTERS = [device.router, sessions.router, jobs.router, events.router, health.router, admin.router]

__all__ = ["ROUTERS"]
