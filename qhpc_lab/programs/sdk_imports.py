"""What a worker process imports before its first request, and the costs it leaves out.

Every daemon starts a validation worker and (on an emulated QPU) an emulator worker, each
paying the SDK imports: seconds of CPU per process, on a machine where a site's scheduler, its
``qhpc qpu serve`` and the test suite's dozens of daemons start them again and again. Two of
those seconds buy nothing these workers use (measured with ``python -X importtime``,
docs/development.md "Start-up cost"):

- jsonschema's format module imports ``rfc3987_syntax``, which builds an Earley parser of
  RFC 3987 at import (1–2 s of CPU), for the ``iri`` formats alone; Pulser's schema checks
  pass no format checker. :func:`defer_iri_grammar` builds it at the first IRI check instead.
- Pulser imports torch when it is installed (about 2 s), for differentiable sequences; a
  sequence read from JSON holds plain numbers, so validating one never needs it.
  :func:`without_torch` keeps it out of a process that only validates.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

_IRI_GRAMMAR = "rfc3987_syntax"


def defer_iri_grammar() -> None:
    """Make ``import rfc3987_syntax`` cheap in this process; its grammar is built on first use.

    The package is registered unexecuted, with ``is_valid_syntax`` (what jsonschema imports
    from it) and any other name resolved from its ``syntax_helpers`` module when first used:
    an IRI check still works, and still fails where it failed. Nothing happens where the
    package is missing or already imported."""
    if _IRI_GRAMMAR in sys.modules:
        return
    spec = importlib.util.find_spec(_IRI_GRAMMAR)
    if spec is None:
        return
    package = importlib.util.module_from_spec(spec)
    package.is_valid_syntax = _is_valid_syntax  # type: ignore[attr-defined]
    package.__getattr__ = _grammar_attribute  # type: ignore[method-assign]
    sys.modules[_IRI_GRAMMAR] = package


def _grammar_attribute(name: str) -> Any:
    """A name of the package, as its ``__init__`` (``from .syntax_helpers import *``) has it."""
    helpers = importlib.import_module(f"{_IRI_GRAMMAR}.syntax_helpers")
    if name == "__all__":
        return [public for public in vars(helpers) if not public.startswith("_")]
    return getattr(helpers, name)


def _is_valid_syntax(term: str, value: str) -> Any:
    return _grammar_attribute("is_valid_syntax")(term, value)


def without_torch() -> None:
    """Keep torch out of this process unless it is already loaded: ``import torch`` fails,
    and Pulser, which imports it only if it can, works on NumPy arrays."""
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
