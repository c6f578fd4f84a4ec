"""Several QPUs per allocation: ``target="auto"`` picks, per program, among the QPU targets.

The choice itself (:func:`choose`) is pure and tested first; then two real daemons on two
device profiles, found as an allocation's two QRMI resources: a program only one device
accepts goes there, and one both accept goes to the shorter queue, with the reason said.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import httpx
import pytest

from qhpc_lab.client import Client, RefusedError, TargetError
from qhpc_lab.client._routing import Answer, choose
from qhpc_lab.programs import Program
from qhpc_lab.scheduler.auth import make_token
from tests.support.cluster_emulation import chain
from tests.support.daemons import Daemon, daemon
from tests.support.identities import SECRET, USER, auth_header
from tests.support.polling import poll_until
from tests.support.programs import pulser_sequence_json

# -- a program too large for the kernel --------------------------------------------------------


def test_a_program_too_large_for_the_kernel_is_refused_with_its_estimate(tmp_path, capsys):
    """No QPU and no cluster emulator: the fallback would run a 60-atom, 4 µs emulation for
    minutes in the kernel; it is refused instead, with the plan and the limit, nothing run."""
    client = Client(environ={"HOME": str(tmp_path)})
    program = Program.from_dict(chain(60, 4000, 10))
    with pytest.raises(RefusedError) as refused:
        client.submit(program)
    assert refused.value.rule == "kernel_limit"
    assert re.fullmatch(
        r"the program \(emu-mps, 60 atoms, 4000 ns: about \d+ s and [\d.]+ GB \(estimate, "
        r"approximate\)\) is over this kernel's emulation limit \(60 s, [\d.]+ GB\): no cluster "
        r"emulator is configured .*; target='emulator' runs it here anyway",
        str(refused.value),
    ), refused.value
    assert client.jobs() == []


def test_a_site_wide_cluster_emulator_is_found_but_never_the_default(tmp_path):
    """The site's file (``QHPC_SITE_TARGETS_FILE``) adds its targets after the user's; its
    cluster emulator is listed, reachable where sbatch is, and programs that fit the kernel
    still go to the emulator by default."""
    site = tmp_path / "site.toml"
    site.write_text('[targets.cluster]\ntype = "cluster-emulator"\nscheduler = "slurm"\n')
    environ = {"HOME": str(tmp_path), "QHPC_SITE_TARGETS_FILE": str(site), "PATH": "/usr/bin"}
    client = Client(environ=environ)
    infos = {info.name: info for info in client.targets()}
    assert (infos["cluster"].kind, infos["cluster"].reachable) == ("cluster-emulator", True)
    assert "emulation as Slurm batch jobs" in infos["cluster"].message
    assert infos["emulator"].selected and not infos["cluster"].selected
    assert client.target_info("cluster-emulator").name == "cluster"  # the kind names it


# -- the choice --------------------------------------------------------------------------------


def test_the_only_target_that_accepts_the_program_is_chosen_and_the_refusal_said():
    route = choose(
        [
            Answer("qpu_a", refusal="70 atoms > 50", done_in_s=5),
            Answer("qpu_b", done_in_s=180),
        ]
    )
    assert route.target == "qpu_b"
    assert route.reason == (
        "qpu_b: the only QPU target that can take the program (qpu_a refuses: 70 atoms > 50)"
    )


def test_the_earliest_completion_wins_and_the_reason_compares_them():
    route = choose([Answer("qpu_a", done_in_s=180), Answer("qpu_b", done_in_s=40)])
    assert route.target == "qpu_b"
    assert route.reason == "qpu_b: done in ~40 s vs ~3 min on qpu_a"


def test_a_target_without_an_estimate_counts_last():
    route = choose([Answer("warden", done_in_s=None), Answer("qpu_b", done_in_s=600)])
    assert route.target == "qpu_b"
    assert route.reason == "qpu_b: done in ~10 min vs no estimate from warden"


def test_targets_that_cannot_estimate_tie_and_the_first_listed_wins():
    route = choose([Answer("warden_a"), Answer("warden_b")])
    assert route.target == "warden_a"
    assert route.reason == "warden_a: no estimate vs no estimate from warden_b; a tie, listed first"


def test_a_target_that_is_down_is_skipped_with_a_note():
    route = choose([Answer("qpu_a", down="unreachable: refused"), Answer("qpu_b", done_in_s=9)])
    assert route.target == "qpu_b"
    assert route.reason.endswith("(qpu_a is down (unreachable: refused))")


def test_ties_go_to_the_fresher_calibration_then_to_the_first_listed():
    fresher = choose(
        [
            Answer("qpu_a", done_in_s=10.0, calibration_age_s=3000),
            Answer("qpu_b", done_in_s=10.5, calibration_age_s=60),
        ]
    )
    assert fresher.target == "qpu_b"
    assert fresher.reason.endswith("a tie, calibrated 60 s ago, the freshest")
    first = choose([Answer("qpu_a", done_in_s=10.0), Answer("qpu_b", done_in_s=10.0)])
    assert first.target == "qpu_a" and first.reason.endswith("a tie, listed first")


def test_a_calibration_age_bound_passes_over_targets_that_cannot_honour_it():
    answers = [
        Answer("cloud", done_in_s=1, bounds_calibration_age=False),
        Answer("qpu_b", done_in_s=50),
    ]
    assert choose(answers).target == "cloud"
    bounded = choose(answers, max_calibration_age_s=600)
    assert bounded.target == "qpu_b"
    assert "(cloud cannot bound the calibration age)" in bounded.reason


def test_nothing_to_choose_from_says_why_for_every_target():
    with pytest.raises(TargetError, match=r"qpu_a is down .*; qpu_b is down"):
        choose([Answer("qpu_a", down="maintenance"), Answer("qpu_b", down="unreachable")])
    with pytest.raises(RefusedError, match="qpu_a refuses: too long; qpu_b is down") as refused:
        choose([Answer("qpu_a", refusal="too long"), Answer("qpu_b", down="unreachable")])
    assert refused.value.rule == "auto"


# -- two daemons, one allocation ---------------------------------------------------------------

BIG_ATOMS = 24


def big_profile(tmp_path: Path) -> Path:
    """``test-big``: the fast ``test`` timing on a device that holds 24 atoms, not 16."""
    data = json.loads((resources.files("qhpc_lab.qpu") / "profiles" / "test.json").read_text())
    data["name"] = "test-big"
    data["device"]["name"] = "QHPC-Test-Big"
    data["device"]["max_atom_num"] = BIG_ATOMS
    path = tmp_path / "test-big.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def two_qpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    """Two daemons, started side by side (each start costs seconds)."""
    small_dir, big_dir = tmp_path_factory.mktemp("qpu_a"), tmp_path_factory.mktemp("qpu_b")
    starting = [daemon(small_dir), daemon(big_dir, "--device", str(big_profile(big_dir)))]
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda cm: (cm, cm.__enter__()), starting))
        for cm, _ in started:
            stack.push(cm.__exit__)
        yield started[0][1], started[1][1]


def allocation(small: Daemon, big: Daemon) -> dict[str, str]:
    """The environment a Slurm job with two QPU resources gets (docs/hpc-deployment.md)."""
    return {
        "HOME": "/nonexistent",
        "QRMI_JOB_QPU_RESOURCES": "qpu_a,qpu_b",
        "QRMI_JOB_QPU_TYPES": "pasqal-local,pasqal-local",
        "qpu_a_QRMI_WARDEN_URL": small.url,
        "qpu_b_QRMI_WARDEN_URL": big.url,
        "QHPC_TOKEN": make_token(SECRET, USER),
    }


@pytest.fixture
def lab(two_qpus: tuple[Daemon, Daemon]) -> Iterator[Client]:
    client = Client(allocation(*two_qpus))
    yield client
    client.close()


def crowded(atoms: int) -> Program:
    """``atoms`` atoms on a grid: more than 16 fit only the big device."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    grid = [(6.0 * (i % 5) - 12, 6.0 * (i // 5) - 12) for i in range(atoms)]
    sequence = Sequence(Register.from_coordinates(grid, prefix="q"), AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "g")
    return Program("pulser", sequence.to_abstract_repr(), 10)


def test_an_allocation_with_two_qpu_resources_is_two_targets(lab):
    infos = {info.name: info for info in lab.targets()}
    assert infos["qpu_a"].device == "QHPC-Test" and infos["qpu_b"].device == "QHPC-Test-Big"
    assert infos["qpu_a"].reachable and infos["qpu_b"].reachable


def test_a_program_only_one_device_accepts_goes_there(lab, capsys):
    job = lab.submit(crowded(18), job_class="test")
    assert job.target == "qpu_b"
    assert job.route is not None and job.route.startswith(
        "qpu_b: the only QPU target that can take the program (qpu_a refuses: "
    )
    assert f"qhpc: {job.route}" in capsys.readouterr().err
    job.cancel()  # qpu_b's daemon accepted it: its own check passed


def test_a_program_both_accept_goes_to_the_shorter_queue(lab, two_qpus):
    """The blocker is the user's own, of the same class: the program would wait behind it
    (another user's would be overtaken at the next chunk, fair share, and the queues tie)."""
    small, _ = two_qpus
    program = Program("pulser", pulser_sequence_json(), 10)
    with httpx.Client(base_url=small.url, headers=auth_header(USER)) as user:
        blocker = user.post(
            "/jobs",
            json={"sequence": pulser_sequence_json(), "shots": 8000, "job_class": "production"},
        )
        blocker.raise_for_status()
        try:
            job = lab.submit(program, job_class="production")
            assert job.target == "qpu_b", job.route
            assert job.route is not None and job.route.startswith("qpu_b: done in ~")
            assert "on qpu_a" in job.route
            assert job.result(timeout=120).shots == 10
        finally:
            user.post(f"/jobs/{blocker.json()['id']}/cancel").raise_for_status()


def test_a_named_target_is_not_routed(lab):
    job = lab.submit(Program("pulser", pulser_sequence_json(), 10), target="qpu_a")
    assert job.target == "qpu_a" and job.route is None
    job.cancel()


def test_a_target_that_is_down_is_skipped_visibly(two_qpus):
    small, _ = two_qpus
    environ = allocation(small, small) | {"qpu_b_QRMI_WARDEN_URL": "http://127.0.0.1:9"}
    client = Client(environ)
    try:
        job = client.submit(Program("pulser", pulser_sequence_json(), 10), target="auto")
        assert job.target == "qpu_a"
        assert job.route is not None and "(qpu_b is down (" in job.route
        job.cancel()
    finally:
        client.close()


def test_the_estimate_endpoint_counts_the_queue_ahead(two_qpus):
    small, _ = two_qpus
    with httpx.Client(base_url=small.url, headers=auth_header(USER)) as user:
        alone = user.get("/estimate", params={"shots": 100}).json()
        assert alone["position"] == 1 and alone["held_by"] is None
        assert alone["run_s"] == pytest.approx(0.05)
        blocker = user.post(
            "/jobs", json={"sequence": pulser_sequence_json(), "shots": 8000, "job_class": "test"}
        )
        blocker.raise_for_status()
        try:
            poll_until(
                lambda: user.get(f"/jobs/{blocker.json()['id']}").json()["status"] == "RUNNING",
                "the blocker to start",
            )
            behind = user.get("/estimate", params={"shots": 100, "job_class": "test"}).json()
            # Next to start: the started blocker (position 0, between its chunks too) has no
            # place in the line, though its shots left count in the ETA.
            assert behind["position"] == 1, behind
            assert behind["done_in_s"] > alone["done_in_s"] + 1.0
            jobs = user.get("/jobs").json()
            assert all(job["id"] > 0 for job in jobs)  # the estimate queued nothing
        finally:
            user.post(f"/jobs/{blocker.json()['id']}/cancel").raise_for_status()
        refused = user.get("/estimate", params={"shots": 10, "job_class": "nope"})
        assert refused.status_code == 422 and refused.json()["rule"] == "job_class"


def test_qpu_targets_lists_both_with_their_queues_and_a_cell_says_where_it_went(two_qpus, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    from tests.support.magics import SEQUENCE_CELL, magics_on, run

    small, _ = two_qpus
    shell = InteractiveShell.instance()
    client = magics_on(shell, Client(allocation(*two_qpus)))
    with httpx.Client(base_url=small.url, headers=auth_header(USER)) as user:
        mine = user.post(
            "/jobs", json={"sequence": pulser_sequence_json(), "shots": 8000, "job_class": "test"}
        )
        mine.raise_for_status()
        try:
            poll_until(
                lambda: user.get(f"/jobs/{mine.json()['id']}").json()["status"] == "RUNNING",
                "my job to start",
            )
            shell.run_line_magic("qpu", "targets")
            lines = capsys.readouterr().out.splitlines()
            assert lines[0].startswith("* qpu_a") and "QHPC-Test, ONLINE" in lines[0]
            # "yours 1st of ..." in the moment between two of its chunks (as in the estimate test)
            mine_shown = "yours running" in lines[0] or "yours 1st" in lines[0]
            assert mine_shown and "a new job starts in ~" in lines[0], lines[0]
            assert lines[1].startswith("* qpu_b") and "QHPC-Test-Big, ONLINE" in lines[1]
            assert "0 waiting, a new job starts in ~0 s" in lines[1], lines[1]
            cell = f"%%qpu --class test --no-wait -o job{SEQUENCE_CELL}"  # behind mine on qpu_a
            success, shown = run(shell, capsys, cell)
            assert success and "qhpc: qpu_b: done in ~" in shown, shown
            assert shell.user_ns["job"].target == "qpu_b"
            shell.user_ns.pop("job").cancel()
        finally:
            user.post(f"/jobs/{mine.json()['id']}/cancel").raise_for_status()
            client.close()
            shell.user_ns.pop("sequence", None)


def test_a_refused_request_is_a_refusal_not_a_target_down(lab):
    """A job class no scheduler knows: RefusedError naming both, never the emulator."""
    with pytest.raises(RefusedError, match=r"qpu_a refuses: .*unknown job_class 'urgent'") as err:
        lab.submit(Program("pulser", pulser_sequence_json(), 10), job_class="urgent")
    assert err.value.rule == "auto" and "qpu_b refuses" in str(err.value)


@pytest.mark.anyio
async def test_the_sidebar_is_told_which_targets_cells_choose_among(two_qpus):
    from qhpc_lab.jupyter.server.service import QPUService

    service = QPUService(allocation(*two_qpus))
    try:
        view = await service.targets_view()
    finally:
        await service.close()
    assert view["routed"] == ["qpu_a", "qpu_b"]
    routed = {t["name"]: t["routed"] for t in view["targets"]}
    assert routed == {"qpu_a": True, "qpu_b": True, "emulator": False}
