"""The user's batch work: one folder per submission on storage the compute nodes share.

A cluster emulation and a notebook run each get a folder (their program, notebook, results and
the batch job's output) holding ``entry.json``, the record that the kernel, ``qhpc run status``
and the Lab's sidebar read back. The folder is made before the batch job is submitted (the job
writes into it) and the entry is written once the batch system has given the job its id.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_BATCH_DIR = "~/.local/share/qhpc/batch"
"""Under the home directory, which a cluster's compute nodes share with its login nodes."""
ENTRY_FILE = "entry.json"
BatchKind = Literal["emulation", "notebook"]


class BatchEntry(BaseModel):
    """One piece of batch work: what it is, where its files are, which batch job runs it."""

    model_config = ConfigDict(frozen=True)

    id: str
    """The folder's name: ``{kind}-{utc time}-{random}``."""
    kind: BatchKind
    title: str
    """What a user recognises it by: the program's name, the notebook's path."""
    system: str
    """``slurm`` or ``gridengine``."""
    job_id: str
    """The batch job's id, as the batch system numbers it."""
    submitted_at: datetime
    folder: Path
    files: dict[str, str] = Field(default_factory=dict)
    """Role → path: ``program``, ``result``, ``notebook``, ``executed``, ``output`` (the batch
    job's stdout and stderr)."""
    details: dict[str, Any] = Field(default_factory=dict)
    """What the kind adds: the engine asked for, a notebook's parameters, QPU share, class."""


class BatchLedger:
    """The entries in one directory, newest first; each read is the files' current content."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def default(cls, environ: Mapping[str, str] | None = None) -> BatchLedger:
        """``$QHPC_BATCH_DIR``, else :data:`DEFAULT_BATCH_DIR` under ``$HOME``."""
        environ = os.environ if environ is None else environ
        configured = environ.get("QHPC_BATCH_DIR")
        if configured:
            return cls(Path(configured).expanduser())
        home = Path(environ.get("HOME") or Path.home())
        return cls(home / DEFAULT_BATCH_DIR.removeprefix("~/"))

    def new_folder(self, kind: BatchKind) -> Path:
        """A fresh folder for a submission's files, private to the user."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        folder = self.directory / f"{kind}-{stamp}-{secrets.token_hex(3)}"
        folder.mkdir(mode=0o700, parents=True)
        return folder

    def add(self, entry: BatchEntry) -> BatchEntry:
        """Write ``entry`` into its folder (atomically: a reader never sees half a file)."""
        path = entry.folder / ENTRY_FILE
        partial = path.with_suffix(".partial")
        partial.write_text(entry.model_dump_json(indent=1))
        partial.replace(path)
        return entry

    def update(self, entry: BatchEntry, **changes: Any) -> BatchEntry:
        """``entry`` with ``changes``, written back."""
        return self.add(entry.model_copy(update=changes))

    def get(self, entry_id: str) -> BatchEntry | None:
        """The entry ``entry_id`` (a folder name, never a path), None when there is none."""
        if "/" in entry_id or entry_id.startswith("."):
            return None
        return _read(self.directory / entry_id / ENTRY_FILE)

    def entries(self, kind: BatchKind | None = None) -> list[BatchEntry]:
        """Every readable entry, newest first; a folder without a readable entry is skipped
        (a submission that failed before the batch system took it)."""
        if not self.directory.is_dir():
            return []
        found = (_read(folder / ENTRY_FILE) for folder in self.directory.iterdir())
        kept = [e for e in found if e is not None and (kind is None or e.kind == kind)]
        return sorted(kept, key=lambda e: e.submitted_at, reverse=True)


def _read(path: Path) -> BatchEntry | None:
    try:
        return BatchEntry.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None
