"""A real Prometheus (Debian's) against a real daemon: the shipped rules pass promtool, every
dashboard panel's expression returns data, and two alerts fire when what they watch breaks."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.daemons import daemon, free_port
from tests.support.identities import ADMIN, USER, auth_header
from tests.support.polling import poll_until

DEPLOY = Path(__file__).parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "qhpc-rules.yml"
PROFILES = Path(__file__).parents[1] / "qhpc_lab" / "qpu" / "profiles"
PROMETHEUS, PROMTOOL = "/usr/bin/prometheus", "/usr/bin/promtool"
GRAFANA_VARIABLES = {"$instance": ".*", "$__rate_interval": "1m"}
"""What Grafana would put in place of the dashboard's variables (all schedulers, 1 min)."""


def promtool(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_shipped_rules_and_config_pass_promtool() -> None:
    assert "SUCCESS: 18 rules found" in promtool("check", "rules", str(RULES))
    assert "SUCCESS" in promtool("test", "rules", "qhpc-rules.test.yml", cwd=RULES.parent)
    assert "is valid prometheus config" in promtool(
        "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")
    )


def test_grafana_provisioning_names_the_dashboard_datasource() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "qhpc-dashboard.json").read_text())
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "qhpc-prometheus.yaml").read_text()
    )
    uids = {source["uid"] for source in provisioned["datasources"]}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert all(t["datasource"]["uid"] in uids for t in panel["targets"]), panel["title"]
    providers = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "qhpc.yaml").read_text()
    )
    assert providers["providers"][0]["type"] == "file"


def fast_rules() -> str:
    """The shipped rules with every ``for:`` cut to 1 s, so that a test can drive them."""
    return re.sub(r"for: \d+[smh]", "for: 1s", RULES.read_text())


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str, rules: str) -> Iterator[str]:
    """Debian's Prometheus scraping ``target`` every second, with ``rules``; stopped by pid."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "qhpc-rules.yml").write_text(rules)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        poll_until(lambda: _ready(url, process), "Prometheus to be ready", 60)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, f"prometheus exited with {process.returncode}"
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    return False


def query(url: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


def firing(url: str, alertname: str) -> dict[str, Any] | None:
    alerts = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return next(
        (a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"),
        None,
    )


def panel_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "qhpc-dashboard.json").read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


def emulator_worker_pid(scheduler_pid: int) -> int:
    """The daemon's spawned emulator worker (not multiprocessing's resource tracker)."""
    children = []
    for task in Path(f"/proc/{scheduler_pid}/task").iterdir():
        children += (task / "children").read_text().split()
    for pid in map(int, children):
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"spawn_main" in command and b"resource_tracker" not in command:
            return pid
    raise AssertionError(f"no emulator worker among the children {children} of {scheduler_pid}")


def fast_calibration_profile(tmp_path: Path) -> Path:
    """The ``test`` profile calibrating every 4 s (0.2 s long), so one goes overdue quickly."""
    profile = json.loads((PROFILES / "test.json").read_text())
    profile["name"] = "test-fast-calibration"
    profile["description"] = "The test profile calibrating every 4 s, for 0.2 s."
    profile["calibration"] = {"interval_s": 4, "duration_s": 0.2}
    path = tmp_path / "fast-calibration.json"
    path.write_text(json.dumps(profile))
    return path


@pytest.mark.slow
def test_prometheus_scrapes_the_daemon_panels_return_data_and_alerts_fire(
    tmp_path: Path, sequence_json: str
) -> None:
    profile = fast_calibration_profile(tmp_path)
    with (
        daemon(tmp_path, "--device", str(profile)) as scheduler,
        prometheus(tmp_path, scheduler.url.removeprefix("http://"), fast_rules()) as prom,
        httpx.Client(base_url=scheduler.url, headers=auth_header(ADMIN, admin=True)) as admin,
        httpx.Client(base_url=scheduler.url, headers=auth_header(USER)) as user,
    ):
        up = 'up{job="qhpc-scheduler"} == 1'
        poll_until(lambda: query(prom, up), "Prometheus to scrape the daemon")
        session = admin.post("/sessions", json={"user_id": USER, "slurm_job_id": "42"}).json()
        with user.stream("GET", "/events") as events:
            lines = events.iter_lines()
            assert next(lines).startswith("event: device")  # the stream opens with the device
            jobs = [
                user.post(
                    "/jobs",
                    json={"sequence": sequence_json, "shots": 300, "job_class": job_class},
                    headers={"X-Warden-Session": session["id"]},
                ).json()
                for job_class in ("production", "development")
            ]
            for job in jobs:
                poll_until(
                    lambda job=job: user.get(f"/jobs/{job['id']}").json()["status"] == "DONE",
                    f"job {job['id']} to finish",
                    120,
                )
            done = 'qhpc_jobs_finished_total{status="DONE"} == 2'
            poll_until(lambda: query(prom, done), "Prometheus to see both jobs done")
            poll_until(lambda: query(prom, "qhpc_event_subscribers == 1"), "the subscriber counted")
            # every panel: the expression parses and returns at least one number, not only NaN
            report = {}
            for title, expr in panel_expressions():

                def answered(expr: str = expr) -> list[dict[str, Any]]:
                    result = query(prom, expr)
                    numbers = [float(r["value"][1]) for r in result]
                    return result if any(not math.isnan(n) for n in numbers) else []

                result = poll_until(answered, f"data for panel {title!r}: {expr}")
                report[expr] = [(r["metric"], r["value"][1]) for r in result]
                print(f"panel {title!r}: {expr}\n  -> {report[expr]}")
        assert query(prom, "qhpc_sessions_open == 1")

        assert not firing(prom, "QhpcEmulatorWorkerDown")
        os.kill(emulator_worker_pid(scheduler.process.pid), signal.SIGKILL)
        worker_down = poll_until(lambda: firing(prom, "QhpcEmulatorWorkerDown"), "the worker alert")
        print("firing:", json.dumps(worker_down, indent=1))
        assert worker_down["labels"]["severity"] == "warning"

        assert not firing(prom, "QhpcCalibrationOverdue")
        closed = {"is_accessible": False, "message": "laser service: no calibrations"}
        assert admin.post("/accessible", json=closed).status_code == 200
        overdue = poll_until(
            lambda: firing(prom, "QhpcCalibrationOverdue"), "the calibration alert"
        )
        print("firing:", json.dumps(overdue, indent=1))
        assert float(overdue["value"]) > 1.1 * 4 + 0.2
        assert "past its interval" in overdue["annotations"]["summary"]
