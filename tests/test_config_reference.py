"""docs/configuration.md against the code: its tables name every setting of the scheduler, the
hooks and the targets file and no other, with the code's defaults, variables and flags, and
its examples load. Every list here is read from the code, never written out by hand."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import BaseModel
from pydantic_settings import EnvSettingsSource

from qhpc_lab import cli
from qhpc_lab.client import _discovery
from qhpc_lab.hpc.gridengine import GridEngineConfig
from qhpc_lab.hpc.hooks import HookSettings
from qhpc_lab.hpc.slurm import HookConfig
from qhpc_lab.scheduler.config import SchedulerConfig, SchedulerSettings
from qhpc_lab.scheduler.policy import PolicyConfig

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
MARKER = re.compile(r"^<!-- (keys|example): ([\w.-]+) -->$")
CODE = re.compile(r"`([^`]+)`")
NOT_TOML = object()
"""What :func:`toml_value` returns for text that is no TOML value."""


# -- the page ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of a marked table: its key, its cells by column name, its line in the page."""

    key: str
    cells: dict[str, str]
    line: int

    def code(self, column: str) -> list[str]:
        """The code spans of a cell, in order (none where the column is absent)."""
        return CODE.findall(self.cells.get(column, ""))


@cache
def page_lines() -> tuple[str, ...]:
    return tuple(PAGE.read_text(encoding="utf-8").splitlines())


def markers(kind: str) -> list[tuple[str, int]]:
    """The page's ``<!-- kind: NAME -->`` markers: (name, index of the line after it)."""
    return [
        (found[2], index + 1)
        for index, line in enumerate(page_lines())
        if (found := MARKER.match(line.strip())) and found[1] == kind
    ]


def cells(line: str) -> list[str]:
    """A Markdown table line's cells (the page writes no ``|`` inside a cell)."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@cache
def tables() -> dict[str, tuple[Row, ...]]:
    """The rows of the tables after each ``<!-- keys: NAME -->`` marker, by name (several
    tables may share one)."""
    found: dict[str, list[Row]] = {}
    for name, start in markers("keys"):
        lines = list(itertools.takewhile(lambda line: line.startswith("|"), page_lines()[start:]))
        assert len(lines) > 2, f"configuration.md:{start}: no table after the {name!r} marker"
        header = cells(lines[0])
        for offset, line in enumerate(lines[2:], start + 3):
            values = cells(line)
            assert len(values) == len(header), f"configuration.md:{offset}: {len(values)} cells"
            keys = CODE.findall(values[0])
            assert keys, f"configuration.md:{offset}: no `key` in the first cell"
            row = Row(keys[0], dict(zip(header, values, strict=True)), offset)
            found.setdefault(name, []).append(row)
    return {name: tuple(rows) for name, rows in found.items()}


def examples() -> dict[str, str]:
    """The TOML block after each ``<!-- example: NAME -->`` marker, by name."""
    found = {}
    for name, start in markers("example"):
        lines = page_lines()[start:]
        assert lines[0].strip() == "```toml", f"configuration.md:{start}: no TOML block"
        found[name] = "\n".join(itertools.takewhile(lambda line: line != "```", lines[1:]))
    return found


def toml_value(text: str) -> Any:
    """``text`` read as a TOML value (``"qpu"``, ``8006``, ``[]``), else :data:`NOT_TOML`."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return NOT_TOML


# -- the code ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """A marked table's keys, and the defaults (one mapping per program reading them) its
    ``default`` column must give."""

    keys: frozenset[str]
    defaults: tuple[Mapping[str, Any], ...] = ()


def names(cls: type) -> frozenset[str]:
    """A settings model's keys (a table's dataclass: its fields)."""
    if dataclasses.is_dataclass(cls):
        return frozenset(spec.name for spec in dataclasses.fields(cls))
    return frozenset(cast(type[BaseModel], cls).model_fields)


def defaults(cls: type) -> dict[str, Any]:
    """Each key's default (a factory's, made); a required key has none."""
    if dataclasses.is_dataclass(cls):
        return {
            spec.name: spec.default_factory()
            if spec.default_factory is not dataclasses.MISSING
            else spec.default
            for spec in dataclasses.fields(cls)
        }
    fields = cast(type[BaseModel], cls).model_fields
    return {
        name: info.get_default(call_default_factory=True)
        for name, info in fields.items()
        if not info.is_required()
    }


def scheduler_keys() -> frozenset[str]:
    """What :meth:`SchedulerConfig.load` accepts: the keys of the model its sources fill."""
    return names(SchedulerSettings)


def dataclasses_in(annotation: Any) -> list[type]:
    """The dataclasses an annotation holds (``dict[str, InstanceOf[ClassLimit]]``)."""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return [annotation]
    return [found for arg in typing.get_args(annotation) for found in dataclasses_in(arg)]


def nested_tables() -> dict[str, type]:
    """Scheduler keys holding a table of tables of a dataclass (``class_limits``), by key."""
    return {
        name: table
        for name, info in SchedulerConfig.model_fields.items()
        if name in scheduler_keys()
        for table in dataclasses_in(info.annotation)
    }


@cache
def expected() -> dict[str, Expected]:
    """Every table the page must have, by marker, from the code."""
    scheduler_defaults = {**defaults(SchedulerConfig), **defaults(PolicyConfig)}
    found = {"scheduler": Expected(scheduler_keys(), (scheduler_defaults,))}
    for key, table in nested_tables().items():
        found[f"scheduler.{key}"] = Expected(names(table), (defaults(table),))
    shared = names(HookSettings)
    found["hooks"] = Expected(shared, (defaults(HookConfig), defaults(GridEngineConfig)))
    sides: dict[str, type[HookSettings]] = {"slurm": HookConfig, "gridengine": GridEngineConfig}
    for side, settings in sides.items():
        found[side] = Expected(names(settings) - shared, (defaults(settings),))
        for key, table_keys in settings.TABLES.items():
            found[f"{side}.{key}"] = Expected(frozenset(table_keys))
    found["targets"] = Expected(names(_discovery.TargetsFile))
    for group, target in _discovery.TARGET_SETTINGS.items():
        found[f"targets.{group}"] = Expected(names(target))
    return found


def same(written: Any, default: Any) -> bool:
    """Whether a TOML value as the page writes it is the code's default: a list may be written
    as one comma-separated string, as the scheduler takes it."""
    if isinstance(default, tuple):
        if isinstance(written, str):
            written = [item.strip() for item in written.split(",") if item.strip()]
        return isinstance(written, list) and tuple(written) == default
    if isinstance(default, Mapping):
        return isinstance(written, dict) and written == dict(default)
    if isinstance(default, bool) or isinstance(written, bool):
        return written is default
    if isinstance(default, str):
        return written == default
    return isinstance(written, int | float) and written == default


# -- the tests ---------------------------------------------------------------------------------


def test_the_page_has_a_table_for_each_part_and_no_other() -> None:
    """A marker naming no part of the code, or a part without its table, is a stale page."""
    assert set(tables()) == set(expected())


@pytest.mark.parametrize("table", sorted(expected()))
def test_a_table_names_every_setting_and_no_other(table: str) -> None:
    """A setting added to the code must be documented; one removed must leave the page."""
    rows = tables().get(table, ())
    keys = [row.key for row in rows]
    assert len(keys) == len(set(keys)), f"{table}: a key listed twice"
    missing = expected()[table].keys - set(keys)
    stale = set(keys) - expected()[table].keys
    assert not missing, f"{table}: settings in the code, not in docs/configuration.md: {missing}"
    assert not stale, f"{table}: keys in docs/configuration.md the code has no more: {stale}"


@pytest.mark.parametrize("table", sorted(t for t, e in expected().items() if e.defaults))
def test_each_default_is_the_codes(table: str) -> None:
    """The default column holds the default as TOML (``"text"``, ``8006``, ``[]``); where it
    has none (``require_session``), it says ``unset``."""
    wrong = []
    for row in tables().get(table, ()):
        written = [toml_value(span) for span in row.code("default")]
        for defaults_of in expected()[table].defaults:
            if row.key not in defaults_of:
                continue  # a stale key: the test of the table's keys names it
            default = defaults_of[row.key]
            if default is None:
                ok = "unset" in row.cells["default"]
            else:
                ok = any(same(value, default) for value in written)
            if not ok:
                wrong.append(f"configuration.md:{row.line}: {row.key} is {default!r} in the code")
    assert not wrong, "\n".join(wrong)


def test_each_variable_is_one_the_scheduler_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables column lists exactly the variables the daemon's environment source reads
    (``QHPC_CONFIG``, the file's name, aside), each beside the key it sets."""
    rows = tables()["scheduler"]
    documented = {row.code("variable")[0]: row.key for row in rows if row.code("variable")}
    for name in [name for name in os.environ if name.startswith("QHPC_")]:
        monkeypatch.delenv(name)
    for variable in [*documented, "QHPC_CONFIG", "QHPC_NO_SUCH_SETTING"]:
        monkeypatch.setenv(variable, "{}")  # text every key's variable can hold
    read = EnvSettingsSource(SchedulerSettings)()
    assert read.keys() == set(documented.values()) == scheduler_keys()
    paired = [key for variable, key in documented.items() if variable != f"QHPC_{key.upper()}"]
    assert not paired, f"variables beside another key's row: {paired}"


def serve_parser(monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser of ``qhpc scheduler serve`` as ``qhpc`` builds it (caught where the
    settings' flags are added to it)."""
    built: list[argparse.ArgumentParser] = []
    add_flags: Callable[[argparse.ArgumentParser], None] = cli.add_setting_flags

    def catch(parser: argparse.ArgumentParser) -> None:
        built.append(parser)
        add_flags(parser)

    monkeypatch.setattr(cli, "add_setting_flags", catch)
    with pytest.raises(SystemExit):
        cli.main(["scheduler", "serve", "--help"])
    return built[0]


def test_each_flag_is_one_of_serve(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The flag column pairs each key with the ``qhpc scheduler serve`` option that sets it
    (its ``dest``, as ``setting_flags`` passes it to the loader), and lists every such
    option."""
    parser = serve_parser(monkeypatch)
    capsys.readouterr()  # the help text
    options = [a for a in parser._actions if a.dest not in ("help", "config")]
    unmapped = [a.option_strings for a in options if a.dest not in scheduler_keys()]
    assert not unmapped, f"serve options passed to no setting: {unmapped}"
    in_code = {(a.dest, max(a.option_strings, key=len)) for a in options}
    rows = tables()["scheduler"]
    documented = {(row.key, row.code("flag")[0]) for row in rows if row.code("flag")}
    assert documented == in_code


def load_scheduler(text: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path.write_text(text)
    for name in [name for name in os.environ if name.startswith("QHPC_")]:
        monkeypatch.delenv(name)
    SchedulerConfig.load(str(path))


def load_targets(text: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Discovery of the example alone, its ``token_file`` made: no problem, every target."""
    path.write_text(text)
    home = path.parent
    targets = tomllib.loads(text)["targets"]
    for table in targets.values():
        if "token_file" in table:
            token = Path(table["token_file"].replace("~", str(home), 1))
            token.parent.mkdir(parents=True, exist_ok=True)
            token.write_text("a-token\n")
    found = _discovery.discover({"HOME": str(home)}, path)
    assert not found.problems
    assert set(targets) <= set(found.targets)


def hooks_loader(settings: type[HookSettings]) -> Callable[..., None]:
    def load(text: str, path: Path, _monkeypatch: pytest.MonkeyPatch) -> None:
        settings.parse(text, path)

    return load


LOADERS: dict[str, Callable[[str, Path, pytest.MonkeyPatch], None]] = {
    "scheduler": load_scheduler,
    "slurm": hooks_loader(HookConfig),
    "gridengine": hooks_loader(GridEngineConfig),
    "targets": load_targets,
}


def test_the_page_has_an_example_for_each_part() -> None:
    assert set(examples()) == set(LOADERS)


@pytest.mark.parametrize("part", sorted(LOADERS))
def test_each_example_loads(part: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An example a site copies must load as it is written, by the part's own loader."""
    LOADERS[part](examples()[part], tmp_path / f"{part}.toml", monkeypatch)
