"""One way to read settings, for every part that has them: the scheduler daemon, the Slurm and
Grid Engine hooks and the client's targets file (docs/configuration.md).

A part's settings are a pydantic-settings model, :class:`SettingsModel`: each setting is one field
(name, type, default, description), and its sources follow from it: defaults, then a TOML file,
then ``{env_prefix}NAME`` variables where the part names a prefix (the hooks name none: their
environment is a job's), then flags. Built directly, a model takes exactly the values given, as
tests, benchmarks and the hooks' one-QPU copies do; :meth:`SettingsModel.read` adds the sources.
Which keys of a file are a part's is the part's own rule (a table of a shared file, nested
tables); every part refuses a key it does not know, with the one likely meant
(:func:`did_you_mean`), and a value of the wrong TOML type (:func:`wrong_type`).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any, Self

from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

_READING: ContextVar[tuple[Mapping[str, Any] | None] | None] = ContextVar(
    "qhpc_settings_file", default=None
)
"""What :meth:`SettingsModel.read` took from the file (in a one-tuple); None: the model is built
directly, from its arguments alone."""

EXPECTED: dict[type, tuple[tuple[type, ...], str]] = {
    str: ((str,), "a string"),
    int: ((int,), "a whole number"),
    float: ((int, float), "a number"),
    bool: ((bool,), "true or false"),
    tuple: ((str, int, list), "a list"),
    dict: ((dict,), "a table"),
}
"""What a TOML file may give for a setting of each type, and its name in words (a list may
also be one comma-separated string, or one number)."""


class SettingsModel(BaseSettings):
    """A part's settings: fields with defaults and descriptions, read by :meth:`read`."""

    model_config = SettingsConfigDict(extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest first: the flags (the arguments), the variables, the file."""
        reading = _READING.get()
        if reading is None:
            return (init_settings,)
        sources = [init_settings]
        if cls.model_config.get("env_prefix"):
            sources.append(env_settings)
        if reading[0] is not None:
            sources.append(InitSettingsSource(settings_cls, dict(reading[0])))
        return tuple(sources)

    @classmethod
    def read(cls, from_file: Mapping[str, Any] | None = None, **flags: Any) -> Self:
        """The settings from the defaults, ``from_file`` (what the part took from its TOML
        file), the variables and ``flags`` (a flag that is None was not given), a later source
        winning key by key. ValidationError names each value refused."""
        token = _READING.set((from_file,))
        try:
            return cls(**{name: value for name, value in flags.items() if value is not None})
        finally:
            _READING.reset(token)


def setting_type(field: FieldInfo) -> type | None:
    """The plain type a field holds (``str``, ``int``, ``tuple``, ...), optional or not."""
    annotation = field.annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
        annotation = kinds[0] if len(kinds) == 1 else None
    origin = typing.get_origin(annotation) or annotation
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return dict
    return origin if origin in EXPECTED else None


def wrong_type(field: FieldInfo, value: Any) -> str | None:
    """The type a file's ``value`` should have had for ``field``, in words; None if it has it
    (a boolean is no number, a whole number is a number)."""
    kind = setting_type(field)
    if kind is None:
        return None
    allowed, words = EXPECTED[kind]
    if isinstance(value, allowed) and (kind is bool or not isinstance(value, bool)):
        return None
    return words


def toml_type(value: object) -> str:
    """``value``'s TOML type, in words."""
    kinds = ((bool, "a boolean"), (int, "a whole number"), (float, "a number"), (str, "a string"))
    kinds += ((list, "an array"), (dict, "a table"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "a date or time")


def did_you_mean(key: str, known: Iterable[str], also: Iterable[str] = ()) -> str:
    """The known name (or one of ``also``) ``key`` likely misspells, as advice; else the list
    of the known ones."""
    names = sorted(known)
    match = difflib.get_close_matches(key, [*names, *also], n=1)
    return f"did you mean `{match[0]}`?" if match else f"the keys are {', '.join(names)}"


def problems(errors: Iterable[ErrorDetails]) -> list[str]:
    """Each error of a validation (``ValidationError.errors()``), naming the setting: a
    validator's own words after the setting's name unless they begin with it, pydantic's
    after it."""
    found = []
    for item in errors:
        where = ".".join(str(part) for part in item["loc"])
        words = str(item["ctx"]["error"]) if item["type"] == "value_error" else item["msg"]
        found.append(f"{where}: {words}" if where and not words.startswith(where) else words)
    return found
