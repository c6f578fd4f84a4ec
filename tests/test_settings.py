"""One configuration mechanism (``qhpc_lab.settings``): each part's settings come from one
model, in one order (defaults, the file, the variables, the flags), and each source refuses a
mistake naming the key. No services: files in ``tmp_path``, variables by monkeypatch."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from qhpc_lab.client import discover
from qhpc_lab.hpc.hooks import SettingsError
from qhpc_lab.hpc.slurm import HookConfig
from qhpc_lab.scheduler.config import (
    SchedulerConfig,
    SchedulerSettings,
    add_setting_flags,
    flag_of,
    setting_flags,
)


@pytest.fixture(autouse=True)
def no_qhpc_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's own variables only: none of the shell's ``QHPC_*``."""
    for name in [name for name in os.environ if name.startswith("QHPC_")]:
        monkeypatch.delenv(name)


def serve_flags(*argv: str) -> dict[str, object]:
    """``qhpc scheduler serve``'s flags as its parser reads them, for the loader."""
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    return setting_flags(parser.parse_args(list(argv)))


def test_a_later_source_wins_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults, then the file, then ``QHPC_*``, then the flags: each key from the last
    source that gives it, policy keys included."""
    path = tmp_path / "scheduler.toml"
    path.write_text(
        "[scheduler]\nmax_connections = 10\nport = 8100\nbody_timeout_s = 12\n"
        "[scheduler.policy]\naging_per_chunk = 3.0\nloop_hold_max_s = 5\n"
    )
    monkeypatch.setenv("QHPC_MAX_CONNECTIONS", "20")
    monkeypatch.setenv("QHPC_PORT", "8200")
    monkeypatch.setenv("QHPC_AGING_PER_CHUNK", "4")
    flags = serve_flags("--max-connections", "30", "--aging-per-chunk", "5")
    config = SchedulerConfig.load(str(path), **flags)
    assert (config.max_connections, config.port, config.body_timeout_s) == (30, 8200, 12.0)
    assert (config.header_timeout_s, config.policy.aging_per_chunk) == (10.0, 5.0)
    assert config.policy.loop_hold_max_s == 5.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("on", True), ("YES", True), ("1", True), ("true", True), ("off", False), ("0", False)],
)
def test_a_boolean_variable_reads_on_and_off(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: bool
) -> None:
    """``on`` is true (it was read as false), ``off`` false."""
    monkeypatch.setenv("QHPC_QPU_CALIBRATES_WHEN_DOWN", text)
    monkeypatch.setenv("QHPC_REQUIRE_SESSION", text)
    config = SchedulerConfig.load()
    assert config.qpu_calibrates_when_down is expected and config.require_session is expected


def test_a_variable_that_is_no_value_of_its_type_stops_the_daemon_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QHPC_REQUIRE_SESSION", "sometimes")
    with pytest.raises(ValueError, match="require_session: Input should be a valid boolean"):
        SchedulerConfig.load()
    monkeypatch.delenv("QHPC_REQUIRE_SESSION")
    monkeypatch.setenv("QHPC_MAX_CONNECTIONS", "many")
    with pytest.raises(ValueError, match="max_connections: Input should be a valid integer"):
        SchedulerConfig.load()


def test_lists_and_mappings_read_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QHPC_AUTH", "munge, token")
    monkeypatch.setenv("QHPC_ADMIN_UNBOUND_HOSTS", "")
    monkeypatch.setenv("QHPC_CLASS_LIMITS", '{"test": {"max_shots": 5}}')
    config = SchedulerConfig.load(**serve_flags("--class-priority", "test=25"))
    assert config.auth == ("munge", "token") and config.admin_unbound_hosts == ()
    assert config.class_limits["test"].max_shots == 5
    assert config.policy.class_priority == {"development": 30, "test": 25, "production": 10}


def test_a_later_source_replaces_a_table_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable's ``class_limits`` replaces the file's (its tables are not merged), as a
    variable's ``class_priority`` does; the policy's defaults fill the classes not named."""
    path = tmp_path / "scheduler.toml"
    path.write_text(
        "[scheduler]\nclass_priority = {development = 40}\n"
        "[scheduler.class_limits.development]\nmax_shots = 5\n"
    )
    monkeypatch.setenv("QHPC_CLASS_LIMITS", '{"test": {"max_queued_per_user": 2}}')
    monkeypatch.setenv("QHPC_CLASS_PRIORITY", "production=15")
    config = SchedulerConfig.load(str(path))
    assert list(config.class_limits) == ["test"]
    assert config.policy.class_priority == {"development": 30, "test": 20, "production": 15}


def test_an_unknown_key_is_named_with_the_one_meant(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.toml"
    path.write_text("[scheduler]\nmax_conections = 10\n")
    with pytest.raises(ValueError) as refused:
        SchedulerConfig.load(str(path))
    assert str(refused.value) == (
        "unknown scheduler settings: max_conections (did you mean `max_connections`?)"
    )


def test_each_flag_comes_from_its_setting() -> None:
    """A flagged field is a ``serve`` option: its name from the key, its help the field's
    description, its value read by the field's type."""
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    options = {action.dest: action for action in parser._actions if action.dest != "help"}
    info = SchedulerSettings.model_fields["max_connections"]
    assert options["max_connections"].option_strings == ["--max-connections"]
    assert options["max_connections"].help == f"{info.description} (setting max_connections)"
    assert flag_of("lease_ttl_s") == "--lease-ttl" and "lease_ttl_s" in options
    assert "admin_uids" not in options  # a setting without a flag
    assert serve_flags("--ha")["ha"] is True and serve_flags()["ha"] is None


def test_the_hooks_read_their_file_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No variable reaches a root hook (the job's environment is its user's), by any name."""
    for name in ("SCHEDULER_URL", "scheduler_url", "QHPC_SCHEDULER_URL", "RUN_DIR"):
        monkeypatch.setenv(name, "http://elsewhere:1")
    config = HookConfig.parse("[slurm]\ntimeout_s = 2\n", tmp_path / "slurm.toml")
    assert (config.scheduler_url, config.run_dir) == ("http://127.0.0.1:8006", "/run/qhpc")
    assert config.timeout_s == 2.0


def test_the_hooks_name_every_mistake_at_once(tmp_path: Path) -> None:
    """A file-level mistake and a value the settings refuse, in one refusal."""
    with pytest.raises(SettingsError) as refused:
        HookConfig.parse('resource = "1qpu"\nlicense = "qpu"\n', tmp_path / "slurm.toml")
    assert refused.value.problems == [
        "unknown key `license`: did you mean `licence`?",
        "resource '1qpu' must be usable as an environment variable prefix (letters, digits "
        "and _, not starting with a digit)",
    ]


def test_a_target_of_the_wrong_type_is_left_out_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "targets.toml"
    path.write_text(
        '[targets.lab]\ntype = "scheduler"\nurl = "http://lab:8006"\njob_timeout_s = "60"\n'
        '[targets.emu]\ntype = "emulator"\n'
    )
    found = discover({"HOME": str(tmp_path)}, path)
    assert "lab" not in found.targets and "emu" in found.targets
    assert found.problems == [
        f"{path}: target 'lab' ignored: `job_timeout_s` must be a number, not a string ('60')"
    ]
