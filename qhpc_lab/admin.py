"""``qhpc admin``: the operator's controls over a running scheduler, as thin calls of its API.

Identity as for any client: a MUNGE credential of the calling uid (root, or one of the
scheduler's ``admin_uids``) when munged answers, else an admin bearer token (``--token`` or
``$QHPC_TOKEN``, from ``qhpc scheduler token --uid 0 --admin``).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

from qhpc_lab.scheduler.config import parse_setting, setting_kinds, uid_of
from qhpc_lab.vocabulary import QPU_SECONDS, QUOTA_KINDS, QUOTA_UNITS
from qhpc_lab.wire.times import iso_time, unix_time

DEFAULT_URL = "http://127.0.0.1:8006"
WHEN = "ISO date/time (UTC without an offset) or Unix time"
"""How the command line takes a time; every time it shows is UTC too."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    admin = commands.add_parser("admin", help="operate a running scheduler (admin identity)")
    admin.add_argument("--url", default=os.environ.get("QHPC_SCHEDULER_URL", DEFAULT_URL))
    admin.add_argument("--token", default=os.environ.get("QHPC_TOKEN"))
    admin.add_argument("--auth", choices=("auto", "munge", "token"), default="auto")
    admin.add_argument(
        "--json", action="store_true", help="the scheduler's answer as JSON, for scripts"
    )
    actions = admin.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="device state, calibration and queue")
    status.add_argument(
        "--watch",
        action="store_true",
        help="follow the event stream: one line per device or queue change, until Ctrl-C",
    )
    actions.add_parser("drain", help="let started jobs finish; queued ones wait")
    actions.add_parser("resume", help="end a drain")
    actions.add_parser("calibrate", help="calibrate now (after the chunk in flight)")
    maintenance = actions.add_parser("maintenance", help="close or reopen submissions")
    maintenance.add_argument("state", choices=("on", "off"))
    maintenance.add_argument("--message", help="what GET /accessible tells users")
    policy = actions.add_parser("policy", help="show or change policy settings")
    policy.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e.g. aging_per_chunk=2, default_job_class=test, class_priority.production=15",
    )
    cancel = actions.add_parser("cancel", help="cancel any user's job")
    cancel.add_argument("job_id", type=int)
    jobs = actions.add_parser("jobs", help="every user's jobs")
    jobs.add_argument("--status")
    jobs.add_argument("--limit", type=int, default=50)
    sessions = actions.add_parser("sessions", help="open sessions (one per Slurm job)")
    sessions.add_argument("--all", action="store_true", help="revoked ones too")
    accounting = actions.add_parser("accounting", help="usage per user or Slurm job")
    accounting.add_argument("--since", help=WHEN)
    accounting.add_argument("--until", help=WHEN)
    accounting.add_argument("--by", choices=("user", "slurm_job"), default="user")
    reserve = actions.add_parser(
        "reserve", help="keep the whole QPU for a user, a Slurm account or a Slurm job"
    )
    owner = reserve.add_mutually_exclusive_group(required=True)
    owner.add_argument("--user", help="a login name or uid")
    owner.add_argument("--account", help="a Slurm account")
    owner.add_argument("--slurm-job", help="a Slurm job id")
    reserve.add_argument("--start", help=f"{WHEN} (default: now)")
    reserve.add_argument("--end", required=True, help=WHEN)
    reservations = actions.add_parser("reservations", help="reservations not ended yet")
    reservations.add_argument("--ended", action="store_true", help="ended ones too")
    unreserve = actions.add_parser("unreserve", help="cancel a reservation")
    unreserve.add_argument("reservation_id", type=int)
    quota = actions.add_parser("quota", help="budgets per user or Slurm account (docs/policy.md)")
    quota_actions = quota.add_subparsers(dest="quota_action", required=True)
    quota_set = quota_actions.add_parser("set", help="set (or replace) a quota")
    quota_rm = quota_actions.add_parser("rm", help="remove a quota")
    for parser in (quota_set, quota_rm):
        parser.add_argument("kind", choices=QUOTA_KINDS)
        parser.add_argument("subject", help="a login name or uid, or a Slurm account")
        parser.add_argument("unit", choices=QUOTA_UNITS)
    quota_set.add_argument("budget", type=float)
    quota_set.add_argument(
        "--period", default="month", help="day, week, month (UTC) or <N>s (default month)"
    )
    quota_actions.add_parser("list", help="every quota and its use this period")
    admin.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qhpc_lab.client import ClientError, SchedulerTarget, call

    target = SchedulerTarget(
        "scheduler", args.url, origin="qhpc admin", token=args.token, auth=args.auth
    )
    try:
        if args.action == "status" and args.watch:
            return call(_watch(target))
        request = _request(args)
        answer = call(target.request(*request[:2], **request[2]))
        if args.action == "accounting":  # use against budget, below the usage
            answer["quotas"] = call(target.request("GET", "/admin/quotas"))["quotas"]
        if args.action == "status":  # what the device can run, beside its state
            answer["limits"] = _limits(call(target.request("GET", "/qpu/specs")))
    except ClientError as err:
        print(f"qhpc admin: {_said(err, args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        call(target.aclose())
    print(json.dumps(answer, indent=2) if args.json else _render(args.action, answer))
    return 0


def _said(err: Exception, args: argparse.Namespace) -> str:
    """A refused or unanswered admin call, and what to do about it from where the operator is."""
    from qhpc_lab.client import RefusedError, TargetError

    if isinstance(err, TargetError):
        why = str(err).rsplit(": ", 1)[-1]
        return (
            f"no scheduler answers at {args.url} ({why})\n  is it running there? Another "
            "address: --url URL or $QHPC_SCHEDULER_URL"
        )
    if isinstance(err, RefusedError) and err.status == 401:
        return f"{err}" + (
            "\n  run as root or an admin uid (admin_uids) where munged runs, or pass an admin "
            "token: --token $(qhpc scheduler token --uid 0 --admin), made with the secret of "
            "the scheduler's own state folder (QHPC_STATE_DIR) or its QHPC_TOKEN_SECRET"
        )
    if isinstance(err, RefusedError) and err.status == 403:
        return f"{err}\n  not an admin identity: root, a uid in admin_uids, or an admin token"
    return str(err)


async def _watch(target: Any) -> int:
    """Print the device and queue as the stream changes them; 1 once it is refused for good."""
    from qhpc_lab.eventstream import StreamState

    device: dict[str, Any] = {}
    queue: dict[str, Any] = {}
    shown = ""
    async with target.feed.subscribe() as items:
        while True:
            item = await items.get()
            if isinstance(item, StreamState):
                if item.phase != "connecting":
                    print(f"{_clock()} stream {item}", flush=True)
                if item.phase == "failed":
                    return 1
                continue
            if item.kind == "reset":
                device = await target.request("GET", "/device")
            elif item.kind == "device":
                device = item.data
            elif item.kind == "queue":
                queue = item.data
            line = _status_line(device, queue)
            if line != shown:
                shown = line
                print(f"{_clock()} {line}", flush=True)


LIMITS = (
    "max_atom_num",
    "max_runs",
    "max_sequence_duration",
    "min_atom_distance",
    "max_radial_distance",
)
"""The device's limits ``qhpc admin status`` shows (a check that the scheduler reads the real
device: docs/hpc-deployment.md)."""


def _limits(specs: dict[str, Any]) -> dict[str, Any]:
    device = json.loads(specs["specs"])
    return {
        **{name: device.get(name) for name in LIMITS},
        "channels": [channel["id"] for channel in device.get("channels", [])],
        "formats": specs["formats"],
    }


def _status_line(device: dict[str, Any], queue: dict[str, Any]) -> str:
    parts = [str(device.get("state", "?"))]
    if device.get("draining"):
        parts.append("draining")
    if device.get("calibration_age_s") is not None:
        parts.append(f"calibrated {device['calibration_age_s']:.0f} s ago")
    if queue:
        depth = ", ".join(f"{c} {n}" for c, n in (queue.get("depth") or {}).items())
        parts.append(f"{queue.get('waiting', 0)} waiting ({depth})")
        running = queue.get("running")
        if running:
            job = f" job {running['job_id']}" if running.get("job_id") is not None else ""
            eta = f", {running['eta_s']:.1f} s left" if running.get("eta_s") is not None else ""
            parts.append(f"running {running.get('job_class')}{job}{eta}")
    if device.get("message"):
        parts.append(str(device["message"]))
    return " · ".join(parts)


def _clock() -> str:
    """Now, as every time ``qhpc admin`` shows: UTC."""
    return iso_time(time.time(), timespec="seconds")


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    simple = {
        "status": ("GET", "/device"),
        "drain": ("POST", "/admin/drain"),
        "resume": ("POST", "/admin/resume"),
        "calibrate": ("POST", "/admin/calibrate"),
    }
    if args.action == "sessions":
        return "GET", "/sessions", {"params": {} if args.all else {"active": True}}
    if args.action in simple:
        method, path = simple[args.action]
        return method, path, {}
    if args.action == "maintenance":
        body: dict[str, Any] = {"is_accessible": args.state == "off"}
        if args.message is not None:
            body["message"] = args.message
        return "POST", "/accessible", {"json": body}
    if args.action == "policy":
        if not args.set:
            return "GET", "/admin/policy", {}
        return "PUT", "/admin/policy", {"json": _policy_changes(args.set)}
    if args.action == "cancel":
        return "POST", f"/jobs/{args.job_id}/cancel", {}
    if args.action == "jobs":
        params = {"limit": args.limit, **({"status": args.status} if args.status else {})}
        return "GET", "/jobs", {"params": params}
    if args.action == "reserve":
        return "POST", "/admin/reservations", {"json": _reservation(args)}
    if args.action == "reservations":
        return "GET", "/admin/reservations", {"params": {"ended": args.ended}}
    if args.action == "unreserve":
        return "DELETE", f"/admin/reservations/{args.reservation_id}", {}
    if args.action == "quota":
        return _quota_request(args)
    params = {"by": args.by}
    for bound in ("since", "until"):
        if getattr(args, bound):
            params[bound] = _timestamp(getattr(args, bound))
    return "GET", "/admin/accounting", {"params": params}


def _quota_request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    if args.quota_action == "list":
        return "GET", "/admin/quotas", {}
    subject = uid_of(args.subject) if args.kind == "user" else args.subject
    if args.quota_action == "rm":
        return "DELETE", f"/admin/quotas/{args.kind}/{quote(subject, safe='')}/{args.unit}", {}
    body = {
        "kind": args.kind,
        "subject": subject,
        "unit": args.unit,
        "budget": args.budget,
        "period": args.period,
    }
    return "PUT", "/admin/quotas", {"json": body}


def _policy_changes(pairs: list[str]) -> dict[str, Any]:
    """``--set`` pairs as a policy change, each value read by its setting's declared type;
    ``class_priority.production=15`` changes one class."""

    kinds = setting_kinds()
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, dot, item = key.partition(".")
        if not sep or name not in kinds:
            raise ValueError(f"--set takes SETTING=VALUE with a setting of {', '.join(kinds)}")
        if dot:
            value = f"{item}={value}"
        parsed = parse_setting(kinds[name], value)
        if isinstance(parsed, dict):
            changes.setdefault(name, {}).update(parsed)
        else:
            changes[name] = parsed
    return changes


def _reservation(args: argparse.Namespace) -> dict[str, Any]:
    """``qhpc admin reserve``'s body: the owner (a login name becomes its uid) and the window."""
    if args.user is not None:
        kind, owner = "user", uid_of(args.user)
    elif args.account is not None:
        kind, owner = "account", args.account
    else:
        kind, owner = "slurm_job", args.slurm_job
    start = _timestamp(args.start) if args.start else time.time()
    return {"owner_kind": kind, "owner": owner, "starts_at": start, "ends_at": _timestamp(args.end)}


def _timestamp(text: str) -> float:
    """A Unix time, or an ISO date-time: UTC without an offset, as the scheduler reads one."""
    try:
        return float(text)
    except ValueError:
        return unix_time(datetime.fromisoformat(text))


def _render(action: str, answer: Any) -> str:
    if action == "accounting":
        by_user = answer["by"] == "user"
        lines = [
            f"{'user' if by_user else 'slurm job':>12} {'jobs':>6} {'done':>6} {'shots':>10} "
            f"{QPU_SECONDS:>11} {'mean wait s':>12} {'max wait s':>11}"
        ]
        for row in answer["rows"]:
            key = _user_name(row["key"]) if by_user else row["key"]
            lines.append(
                f"{key!s:>12} {row['jobs']:>6} {row['done']:>6} {row['shots']:>10} "
                f"{row['qpu_seconds']:>11.2f} {row['mean_wait_s'] or 0:>12.2f} "
                f"{row['max_wait_s'] or 0:>11.2f}"
            )
        if answer.get("quotas"):
            lines += ["", _quotas_table(answer["quotas"])]
        return "\n".join(lines)
    if action in ("reserve", "reservations", "unreserve"):
        rows = answer if isinstance(answer, list) else [answer]
        return "\n".join(_reservation_line(r) for r in rows) or "no reservations"
    if action == "quota":
        return _quotas_table(answer["quotas"]) if answer["quotas"] else "no quotas"
    if action == "jobs":
        if not answer:
            return "no jobs"
        header = f"{'id':>7} {'user':>8} {'class':>12} {'status':>9} {'shots':>13} name"
        return "\n".join(
            [header]
            + [
                f"{j['id']:>7} {_user_name(j['user_id']):>8} {j['job_class']:>12} "
                f"{j['status']:>9} {j['shots_done']:>6}/{j['shots']:<6} {j['name'] or ''}"
                for j in answer
            ]
        )
    if action == "sessions":
        return _sessions_table(answer) if answer else "no sessions"
    if action == "status":
        return f"{_status_line(answer, {})}\n{_fields(answer)}"
    return _fields(answer) if isinstance(answer, dict) else json.dumps(answer, indent=2)


def _fields(document: dict[str, Any], prefix: str = "") -> str:
    """A document as ``key: value`` lines, nested keys dotted (``--json`` gives it whole)."""
    lines = []
    for key, value in document.items():
        if isinstance(value, dict) and value:
            lines.append(_fields(value, f"{prefix}{key}."))
        else:
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            lines.append(f"{prefix}{key}: {'-' if shown is None else shown}")
    return "\n".join(lines)


def _sessions_table(sessions: list[dict[str, Any]]) -> str:
    header = f"{'session':>36} {'user':>8} {'slurm job':>10} {'slots':>5} {'opened':>20} revoked"
    rows = [
        f"{s['id']:>36} {_user_name(s['user_id']):>8} {s['slurm_job_id'] or '-':>10} "
        f"{s['qpu_slots']:>5} {s['created_at'][:19]:>20} "
        f"{(s['revoked_at'] or '')[:19]} {s['revoke_reason'] or ''}".rstrip()
        for s in sessions
    ]
    return "\n".join([header, *rows])


def _reservation_line(row: dict[str, Any]) -> str:
    owner = _user_name(row["owner"]) if row["owner_kind"] == "user" else row["owner"]
    start, end = (iso_time(row[t], sep=" ", timespec="minutes") for t in ("starts_at", "ends_at"))
    window = f"{start} to {end}"
    now = " (now)" if row["active"] else ""
    return f"{row['id']:>5} {row['owner_kind']} {owner}: {window}{now}"


def _quotas_table(quotas: list[dict[str, Any]]) -> str:
    """Use against budget, one line per quota."""
    lines = [
        f"{'quota':>20} {'unit':>11} {'used':>12} {'budget':>12} {'used %':>7} {'period':>7} "
        "resets at"
    ]
    for q in quotas:
        subject = _user_name(q["subject"]) if q["kind"] == "user" else q["subject"]
        share = 100 * q["used"] / q["budget"] if q["budget"] else 100.0
        lines.append(
            f"{q['kind'] + ' ' + subject:>20} {q['unit']:>11} {q['used']:>12.1f} "
            f"{q['budget']:>12.1f} {share:>6.1f}% {q['period']:>7} {q['resets_at']}"
        )
    return "\n".join(lines)


def _user_name(uid: str | None) -> str:
    """The login name of a uid on this host; the uid itself when the host does not know it."""
    try:
        return pwd.getpwuid(int(uid or "")).pw_name
    except (ValueError, KeyError):
        return str(uid)
