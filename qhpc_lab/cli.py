"""The ``qhpc`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from qhpc_lab.scheduler.config import SchedulerConfig, state_dir


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from qhpc_lab.qpu import DeviceProfile
    from qhpc_lab.scheduler import create_app

    config = SchedulerConfig.load(
        args.config,
        host=args.host,
        port=args.port,
        db=args.db,
        device=args.device,
        auth=args.auth,
    )
    profile = DeviceProfile.load(config.device)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(
        f"qhpc scheduler: device {profile.spec.name}, profile {profile.name}"
        f"\n  {profile.description}"
        f"\n  database {config.db_url}\n  auth {', '.join(config.auth)}"
        f"\n  listening on http://{config.host}:{config.port} (API docs at /docs)",
        flush=True,
    )
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
    return 0


def _token(args: argparse.Namespace) -> int:
    from qhpc_lab.scheduler.auth import load_or_create_secret, make_token

    config = SchedulerConfig.load(args.config)
    secret = config.token_secret or load_or_create_secret(state_dir() / "token.secret")
    print(make_token(secret, args.uid, args.admin))
    return 0


def _profiles(_args: argparse.Namespace) -> int:
    from qhpc_lab.qpu import DeviceProfile, profiles

    for name in profiles():
        profile = DeviceProfile.load(name)
        print(f"{name:14} {profile.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qhpc", description="qhpc-lab: a QPU from Jupyter on HPC")
    commands = parser.add_subparsers(dest="command", required=True)

    scheduler = commands.add_parser("scheduler", help="the second-level scheduler daemon")
    sub = scheduler.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", help="TOML settings file (also $QHPC_CONFIG)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--db", help="SQLAlchemy URL (default: SQLite in $QHPC_STATE_DIR)")
    serve.add_argument("--device", help="device profile name or JSON file (default: test)")
    serve.add_argument("--auth", help="munge, token, or munge,token (default: token)")
    serve.set_defaults(run=_serve)
    token = sub.add_parser("token", help="print a bearer token for token auth")
    token.add_argument("--uid", required=True)
    token.add_argument("--admin", action="store_true")
    token.add_argument("--config")
    token.set_defaults(run=_token)
    sub.add_parser("profiles", help="list the shipped device profiles").set_defaults(run=_profiles)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as err:
        print(f"qhpc: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
