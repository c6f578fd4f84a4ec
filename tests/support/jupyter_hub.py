"""JupyterHub for the hub tests (tests/test_jupyterhub.py, tests/test_gridengine.py): the shipped
example config with local ports, configurable-http-proxy from npm, a login as a browser does."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qhpc_lab.hpc.devcluster import DevCluster
from tests.support.clusters import User
from tests.support.daemons import free_port
from tests.support.polling import poll_until

ROOT = Path(__file__).resolve().parents[2]

EXAMPLE_CONFIG = ROOT / "qhpc_lab" / "hpc" / "jupyterhub_config.py"

CHP_VERSION = "5.3.0"

CHP_PREFIX = ROOT / ".hub"
"""configurable-http-proxy is installed here by npm (node_modules/ is ignored by git)."""

CHP = CHP_PREFIX / "node_modules" / ".bin" / "configurable-http-proxy"

PASSWORD = secrets.token_urlsafe(12)

HUB_GROUP = "qhpc-users"
"""Who the shipped config lets log in (QHPC_ALLOWED_GROUPS' default)."""

SINGLEUSER_SCRIPT = """\
#!{python}
import sys
from {module} import main
sys.exit(main())
"""


def install_proxy() -> Path:
    """configurable-http-proxy, pinned, from npm into .hub/ (once); fail loudly if npm cannot."""
    if CHP.exists():
        return CHP
    command = [
        "npm",
        "install",
        "--prefix",
        str(CHP_PREFIX),
        "--no-save",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        f"configurable-http-proxy@{CHP_VERSION}",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.fail(f"cannot install configurable-http-proxy ({' '.join(command)}): {err}")
    if done.returncode or not CHP.exists():
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return CHP


def singleuser_venv(cluster: DevCluster) -> Path:
    """The venv the jobs run the Lab from: the cluster's job Python. When that is the bridge
    venv (ours is under /root, unreadable for users), give it the two commands the example
    config runs, as our venv's bin/ has them."""
    venv = Path(cluster.python).parent.parent
    for name, module in (
        ("jupyterhub-singleuser", "jupyterhub.singleuser"),
        ("batchspawner-singleuser", "batchspawner.singleuser"),
    ):
        script = venv / "bin" / name
        if not script.exists():
            script.write_text(SINGLEUSER_SCRIPT.format(python=cluster.python, module=module))
            script.chmod(0o755)
    return venv


def hub_config(directory: Path, port: int, extra: str = "") -> Path:
    """The shipped config (who may log in included), with local ports and files on top, and
    ``extra`` lines (the spawner's environment)."""
    config = directory / "jupyterhub_config.py"
    hub_api = f"http://127.0.0.1:{free_port()}"
    config.write_text(
        f"""\
load_subconfig({str(EXAMPLE_CONFIG)!r})
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "{hub_api}"
c.JupyterHub.hub_connect_url = "{hub_api}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
c.ConfigurableHTTPProxy.command = [{str(install_proxy())!r}]
c.JupyterHub.db_url = "sqlite:///{directory}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{directory}/jupyterhub_cookie_secret"
c.JupyterHub.cleanup_servers = True
c.Spawner.ip = "127.0.0.1"
{extra}"""
    )
    return config


def spawner_environment(environ: dict[str, str]) -> str:
    """The config line giving the jobs ``environ`` (the cluster's) and our venv's Jupyter data
    (kernelspec, server extension), which the bridge venv's prefix lacks."""
    venv = Path(sys.prefix)
    jupyter = {
        "JUPYTER_PATH": str(venv / "share" / "jupyter"),
        "JUPYTER_CONFIG_PATH": str(venv / "etc" / "jupyter"),
    }
    return f"c.Spawner.environment = { ({**environ, **jupyter})!r}\n"


@contextlib.contextmanager
def running_hub(config: Path, url: str, env: dict[str, str]) -> Iterator[Path]:
    """``jupyterhub -f config`` with ``env`` on top of ours, answering at ``url``; its log.
    Stopped afterwards, proxy included."""
    log_path = config.parent / "jupyterhub.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(Path(sys.prefix) / "bin" / "jupyterhub"), "-f", str(config)],
            cwd=config.parent,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"jupyterhub exited ({process.returncode}):\n{log_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/hub/health", timeout=2).status_code == 200
            return False

        try:
            poll_until(healthy, "the hub answers", 120)
        except AssertionError as err:
            pytest.fail(f"{err}:\n{log_tail(log_path)}")
        yield log_path
    finally:
        stop_hub(process)


def allow_login(user: User) -> None:
    """What a site does for a hub user under the shipped config: a Unix password (PAM) and
    membership of its allowed group."""
    subprocess.run(["groupadd", "-f", HUB_GROUP], check=True, capture_output=True, timeout=30)
    for command, stdin in (
        (["usermod", "-aG", HUB_GROUP, user.name], None),
        (["chpasswd"], f"{user.name}:{PASSWORD}\n"),
    ):
        subprocess.run(command, input=stdin, check=True, capture_output=True, text=True, timeout=30)


def stop_hub(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the hub (it stops its proxy and cancels its servers' jobs), then SIGKILL the
    process group it leads, proxy included, if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def login(url: str, name: str) -> str:
    """Log in through the hub's form, as a browser does; return a token made with that login."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        browser.get("/hub/login").raise_for_status()
        xsrf = browser.cookies["_xsrf"]
        login = browser.post(
            "/hub/login", data={"username": name, "password": PASSWORD, "_xsrf": xsrf}
        )
        assert login.status_code == 302, login.text
        # the xsrf token carries the login: the first page after it sets the new one
        browser.get("/hub/home").raise_for_status()
        xsrf = browser.cookies.get("_xsrf", path="/hub/")
        made = browser.post(
            f"/hub/api/users/{name}/tokens",
            json={"note": "tests/test_jupyterhub.py", "expires_in": 3600},
            headers={"X-XSRFToken": xsrf},
        )
        assert made.status_code == 201, made.text
        return made.json()["token"]


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` of a log, for a failure message."""
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])
