"""The notebook server's view of the user's QPUs: the kernel's discovery, probed and relayed.

The server runs inside the user's Slurm job, so it finds the allocation's targets exactly as
a kernel does (:func:`qhpc_lab.client.discover`). What it hands the browser is rebuilt from
allow-listed fields only: the job environment holds secrets (scheduler tokens, the session id
that ``X-Warden-Session`` carries, QRMI API keys) and none of it may reach a web page. Of the
scheduler's documents it passes on the fields :mod:`qhpc_lab.wire` marks relayed, no other.

Each scheduler target's event stream (its :attr:`~SchedulerTarget.feed`) is followed once,
however many browser tabs listen, and only while one does; its job, device and queue events
are relayed as they arrive, through the one SSE encoder (:func:`qhpc_lab.eventstream.encode`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from qhpc_lab.client import ClientError, SchedulerTarget, Target, TargetInfo, discover
from qhpc_lab.eventstream import StreamEvent, StreamState, encode
from qhpc_lab.jupyter.server.batch import BatchWork, RunForm
from qhpc_lab.vocabulary import DeviceState
from qhpc_lab.wire.documents import DeviceOut, JobOut, QueueEventOut, QuotaOut, relay

log = logging.getLogger("qhpc.jupyter")

PROBE_TIMEOUT_S = 5.0
BATCH_ACTIVE_POLL_S = 5.0
"""How often the batch system is asked about unfinished batch runs while a browser listens."""
BATCH_IDLE_POLL_S = 15.0
"""How often the ledger is read for new batch runs (``qhpc run`` in a terminal, a kernel's
cluster emulation) while none is unfinished: a directory listing, no batch command."""

SECRET_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSW|CRED|AUTH|SESSION", re.IGNORECASE)
MIN_SECRET_LENGTH = 8
"""Shorter values (``1``, ``true``) are settings, not secrets, and would redact half the text."""
URL_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s\"]+@", re.IGNORECASE)


def secret_values(environ: Mapping[str, str]) -> frozenset[str]:
    """Values of variables whose names say they are credentials (QRMI keys, tokens, sessions)."""
    return frozenset(
        value
        for name, value in environ.items()
        if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH
    )


def public_url(url: str | None) -> str | None:
    """``url`` without user info or query: either may carry a credential."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def device_view(data: Mapping[str, Any]) -> dict[str, Any]:
    """``/device``'s (or a ``device`` event's) relayed fields: the running job's class (not
    whose it is), the next reservation's owner and window (not who made it)."""
    return relay(DeviceOut, data)


def queue_view(data: Mapping[str, Any]) -> dict[str, Any]:
    """A ``queue`` event's relayed fields: personal to the user, with no other user's job
    ids or names (the running job's id only when it is ours)."""
    return relay(QueueEventOut, data)


class QPUService:
    """Targets, jobs and the event relay behind the ``/qhpc/api`` routes."""

    def __init__(
        self,
        environ: Mapping[str, str],
        targets_file: str | Path | None = None,
        logger: logging.Logger | None = None,
        root_dir: str | Path = ".",
    ) -> None:
        self.log = logger or log
        """Where the Jupyter server's log (Lab's terminal) hears of discovery problems and of a
        scheduler that stops answering or comes back."""
        found = discover(environ, targets_file)
        for problem in found.problems:
            self.log.warning("qhpc: %s", problem)
        self.targets: dict[str, Target] = found.targets
        self.default = found.default
        self.routed = found.from_job if len(found.from_job) > 1 else []
        """The job's QPU resources when there are several: a cell without ``--target`` goes
        to whichever accepts its program and finishes it first (docs/client.md)."""
        self.problems = list(found.problems)
        self.sources = list(found.sources)
        self._secrets = secret_values(environ)
        self._views: dict[str, dict[str, Any]] = {}
        self._streams: dict[str, StreamState] = {}
        self._unreachable: set[str] = set()
        """Schedulers whose loss was logged and whose return is not yet."""
        self._listeners: set[asyncio.Queue[bytes | None]] = set()
        self._relays: dict[str, asyncio.Task[None]] = {}
        self.batch = BatchWork(environ, root_dir)
        """The user's batch work (notebook runs, cluster emulations) under ``root_dir``."""
        self._batch_shown: dict[str, dict[str, Any]] = {}
        """Each batch run as the listening browsers last heard of it."""
        self._batch_feed: asyncio.Task[None] | None = None

    @property
    def schedulers(self) -> dict[str, SchedulerTarget]:
        return {n: t for n, t in self.targets.items() if isinstance(t, SchedulerTarget)}

    # -- what the browser sees ------------------------------------------------------------

    def dumps(self, data: Any) -> str:
        """JSON for the browser, with any credential that slipped into a message blanked out:
        secret variables' values and the user info of URLs (``https://user:key@host``)."""
        text = URL_USERINFO.sub(r"\1", json.dumps(data))
        for secret in self._secrets:
            text = text.replace(json.dumps(secret)[1:-1], "[redacted]")
        return text

    async def targets_view(self) -> dict[str, Any]:
        views = await asyncio.gather(*(self._probe(t) for t in self.targets.values()))
        return {
            "targets": list(views),
            "default": self.default,
            "routed": self.routed,
            "problems": self.problems,
            "sources": self.sources,
        }

    async def _probe(self, target: Target) -> dict[str, Any]:
        try:
            info = await asyncio.wait_for(target.info(), PROBE_TIMEOUT_S)
        except TimeoutError:
            info = target.unreachable(f"did not answer within {PROBE_TIMEOUT_S:g} s")
        view = self._target_view(target, info)
        if isinstance(target, SchedulerTarget) and info.reachable:
            with contextlib.suppress(ClientError, TimeoutError):
                device = await asyncio.wait_for(target.request("GET", "/device"), PROBE_TIMEOUT_S)
                view.update(device_view(device))
            with contextlib.suppress(ClientError, TimeoutError):  # a server without quotas: none
                mine = await asyncio.wait_for(target.request("GET", "/quotas"), PROBE_TIMEOUT_S)
                view["quotas"] = [relay(QuotaOut, quota) for quota in mine["quotas"]]
            queue = target.feed.latest("queue")
            if queue is not None:
                view["queue"] = queue_view(queue.data)
        self._views[target.name] = view
        return self._shown(target.name)

    def _target_view(self, target: Target, info: TargetInfo) -> dict[str, Any]:
        return {
            "name": target.name,
            "kind": target.kind,
            "type": target.type,
            "origin": target.origin,
            "url": public_url(info.url),
            "default": target.name == self.default,
            "routed": target.name in self.routed,
            "reachable": info.reachable,
            "device": info.device,
            "state": info.state if info.reachable else DeviceState.OFFLINE,
            "message": info.message,
            "calibration_age_s": info.calibration_age_s,
        }

    async def jobs_view(self, limit: int = 50) -> dict[str, Any]:
        """The user's jobs on every scheduler target, newest first; failures per target."""
        names = list(self.schedulers)
        answers = await asyncio.gather(
            *(self.schedulers[n].request("GET", "/jobs", params={"limit": limit}) for n in names),
            return_exceptions=True,
        )
        jobs: list[dict[str, Any]] = []
        errors: dict[str, str] = {}
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, Exception):
                errors[name] = str(answer) or type(answer).__name__
            elif isinstance(answer, BaseException):
                raise answer
            else:
                jobs.extend(self._job_view(name, job) for job in answer)
        jobs.sort(key=lambda job: job.get("created_at") or "", reverse=True)
        return {"jobs": jobs, "errors": errors}

    def _job_view(self, target: str, job: Mapping[str, Any]) -> dict[str, Any]:
        """What the browser may see of a job: not its results, its session id (a credential)
        nor any field the job document does not mark relayed."""
        return {"target": target, **relay(JobOut, job)}

    async def cancel(self, job_id: int, target: str | None) -> dict[str, Any]:
        """Cancel on ``target`` (default: the default target if it is a scheduler, else the
        only scheduler). Raises LookupError naming the targets when it is ambiguous."""
        schedulers = self.schedulers
        name = target or (
            self.default if self.default in schedulers else next(iter(schedulers), None)
        )
        if target is None and len(schedulers) > 1 and self.default not in schedulers:
            raise LookupError(f"name the job's target: one of {', '.join(schedulers)}")
        if name not in schedulers:
            known = ", ".join(schedulers) or "none"
            raise LookupError(f"no scheduler target named {name!r} (scheduler targets: {known})")
        job = await schedulers[name].request("POST", f"/jobs/{job_id}/cancel")
        return self._job_view(name, job)

    # -- batch work -----------------------------------------------------------------------

    async def batch_view(self) -> dict[str, Any]:
        return {"entries": await asyncio.to_thread(self.batch.views)}

    async def submit_run(self, form: RunForm) -> dict[str, Any]:
        return self._batch_changed(await asyncio.to_thread(self.batch.submit, form))

    async def cancel_run(self, entry_id: str) -> dict[str, Any]:
        return self._batch_changed(await asyncio.to_thread(self.batch.cancel, entry_id))

    async def run_parameters(self, path: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.batch.parameters, path)

    def _batch_changed(self, view: dict[str, Any]) -> dict[str, Any]:
        """Tell the listening browsers of ``view`` if it is news to them; return it."""
        if self._batch_shown.get(view["id"]) != view:
            self._batch_shown[view["id"]] = view
            self._publish("batch", view)
        return view

    async def _follow_batch(self) -> None:
        """While a browser listens: each batch run that is new or changed, as a ``batch``
        event (the batch systems have no event stream of their own)."""
        while True:
            try:
                views = await asyncio.to_thread(self.batch.views)
            except Exception:  # the feed lives on: the next round tries again
                self.log.exception("qhpc: reading the batch runs failed")
                views = []
            for view in views:
                self._batch_changed(view)
            active = any(not view["finished"] for view in views)
            await asyncio.sleep(BATCH_ACTIVE_POLL_S if active else BATCH_IDLE_POLL_S)

    # -- event relay ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[bytes | None]]:
        """A queue of server-sent-event chunks for one browser connection."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(1000)
        self._listeners.add(queue)
        for name, target in self.schedulers.items():
            if name not in self._relays:
                self._relays[name] = asyncio.create_task(
                    self._relay(target), name=f"qhpc-relay-{name}"
                )
        if self._batch_feed is None:
            self._batch_shown.clear()  # a browser that connects now re-reads everything
            self._batch_feed = asyncio.create_task(self._follow_batch(), name="qhpc-batch")
        try:
            yield queue
        finally:
            self._listeners.discard(queue)
            if not self._listeners:
                await self._stop_relays()

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        chunk = encode(StreamEvent(kind, json.loads(self.dumps(data))))
        for queue in list(self._listeners):
            try:
                queue.put_nowait(chunk)
            except asyncio.QueueFull:  # a tab that stopped reading: end it, it reconnects
                self._listeners.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)

    def _shown(self, name: str) -> dict[str, Any]:
        """The target's view as the browser sees it: offline, saying why and in how many
        seconds the next try comes (``retry_in_s``, counted down by the sidebar), while its
        event stream is down (the last device facts would otherwise look current)."""
        view = {**(self._views.get(name) or {"name": name}), "retry_in_s": None}
        stream = self._streams.get(name)
        if stream is not None and stream.phase in ("reconnecting", "failed"):
            gave_up = " (given up)" if stream.phase == "failed" else ""
            view.update(
                reachable=False,
                state=DeviceState.OFFLINE,
                message=f"the scheduler's event stream{gave_up}: {stream.reason}",
                retry_in_s=stream.retry_in_s,
            )
        return view

    def _log_transition(self, target: SchedulerTarget, stream: StreamState) -> None:
        """One line when a scheduler stops answering and one when it is back, however many
        reconnections come between."""
        name = target.name
        if stream.phase in ("reconnecting", "failed") and name not in self._unreachable:
            self._unreachable.add(name)
            retrying = "; retrying" if stream.phase == "reconnecting" else "; not retrying"
            self.log.warning(
                "qhpc: scheduler %r at %s is unreachable (%s)%s; the QPU sidebar shows it offline",
                name,
                public_url(target.url),
                stream.reason,
                retrying,
            )
        elif stream.phase == "connected" and name in self._unreachable:
            self._unreachable.discard(name)
            self.log.warning("qhpc: scheduler %r at %s is back", name, public_url(target.url))

    async def _relay(self, target: SchedulerTarget) -> None:
        """Follow one scheduler's feed until no browser listens (the feed reconnects)."""
        name = target.name
        async with target.feed.subscribe() as items:
            while True:
                item = await items.get()
                if isinstance(item, StreamState):
                    self._streams[name] = item
                    self._log_transition(target, item)
                    if item.phase != "connecting":
                        self._publish("target", self._shown(name))
                elif item.kind == "reset":  # nothing to resume from: re-read and say so
                    self._publish("target", await self._probe(target))
                    self._publish("reset", {"target": name})
                elif item.kind == "job":
                    self._publish("job", self._job_view(name, item.data))
                elif item.kind == "device":
                    view = self._views.setdefault(name, {"name": name})
                    view.update(device_view(item.data), reachable=True)
                    self._publish("target", self._shown(name))
                elif item.kind == "queue":
                    queue = queue_view(item.data)
                    self._views.setdefault(name, {"name": name})["queue"] = queue
                    self._publish("queue", {"target": name, **queue})

    async def _stop_relays(self) -> None:
        relays, self._relays = list(self._relays.values()), {}
        if self._batch_feed is not None:
            relays.append(self._batch_feed)
            self._batch_feed = None
        self._streams.clear()
        for task in relays:
            task.cancel()
        for task in relays:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """End the relays and every listener, and release the targets' connections."""
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._listeners.clear()
        await self._stop_relays()
        for target in self.targets.values():
            with contextlib.suppress(Exception):
                await target.aclose()
