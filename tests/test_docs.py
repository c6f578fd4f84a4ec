"""The Markdown documentation (README.md, docs/*.md) against the tree and the package: its links
and anchors resolve, the ``qhpc_lab`` names it documents exist, its tutorial lists are whole,
and it, the package's strings and the sidebar's source say one word for each thing."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOTEBOOKS = sorted(path.name for path in (ROOT / "notebooks").glob("*.ipynb"))

FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
# A code span: a run of backticks, text (no blank line), the same run.
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.DOTALL)
LINK = re.compile(
    r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # the text, one level of brackets inside
    r"\(\s*(?:<([^>]*)>|([^\s()]+))(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"  # target, title
)
LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(?:<([^>]*)>|(\S+))", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][\w+.-]*:")
# A dotted qhpc_lab name; one inside a path (a/qhpc_lab.json) or a longer word is no name.
NAME = re.compile(r"(?<![\w./\\:-])qhpc_lab(?:\.\w+)+")
# Written after a name, these make it a pattern or a path (qhpc_lab.client.<x>, qhpc_lab.x/…).
PATTERN_AFTER = re.compile(r"\.|[-/<*{]")
PYTHON = {"python", "py", "python3", "ipython", "pycon"}
STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
FROM_IMPORT = re.compile(r"^\s*from\s+(qhpc_lab(?:\.\w+)*)\s+import\s+(.*)$")
NOTEBOOK = re.compile(r"[\w.-]+\.ipynb")
SIDEBAR_SOURCES = sorted((ROOT / "labextension" / "src").glob("*.ts*"))
OLD_WORDS = {
    "canceled, not cancelled (the wire's CANCELED)": re.compile(r"\b[Cc]ancell(?:ed|ing)\b"),
    "an ETA is a time to start or to end: say which": re.compile(r"\bETAs?\b"),
    "QPU-seconds, not QPU-s or QPU s": re.compile(r"\bQPU[- ]s\b"),
    "a place in the queue reads '2nd of 3 waiting'": re.compile(
        r"\d(?:st|nd|rd|th) in (?:the )?queue|yours #\d|position \d+ of \d+|\(\d+ waiting now\)"
    ),
    "the hybrid loop is qhpc_lab.loop() and %qpu loop (session: a Slurm job's QPU share)": (
        re.compile(r"%qpu session (?:start|stop)|qhpc_lab\.session\(|iterative session")
    ),
    "a sweep's progress reads 'sets 120 of 1 000 done' (qhpc_lab.vocabulary)": re.compile(
        r"\d/\d+ sets\b|\}/\{[^}]*\} sets\b"
    ),
}
"""Old wordings that must not come back: each is one thing said two ways."""
KEPT_AS_IS = {
    ".batch-cancelled": "the mark file older batch ledgers have",
    "Cancelled": "QRMI's task status",
    "qhpc_lab.session()": "the deprecated alias names itself",
}
"""The package's strings that say an old word on purpose (not ours to reword), with why."""
QUOTED = ("Job can't be cancelled, program is in 'RUNNING' state",)
"""Others' words the docs quote as they are (Warden's message)."""
DEPRECATION = re.compile(r"deprecat", re.IGNORECASE)


@dataclass(frozen=True)
class Page:
    """A Markdown file: its prose (fenced blocks blanked, line numbers kept) and its blocks."""

    path: Path
    prose: str
    blocks: list[tuple[str, list[tuple[int, str]]]]  # (language, [(line number, line)])

    @property
    def name(self) -> str:
        """The path as failures name it, from the repository root."""
        return self.path.relative_to(ROOT).as_posix()

    def line_of(self, offset: int) -> int:
        """The line number of an offset into the prose."""
        return self.prose.count("\n", 0, offset) + 1


@cache
def read_page(path: Path) -> Page:
    """Split a Markdown file into prose and fenced code blocks."""
    prose: list[str] = []
    blocks: list[tuple[str, list[tuple[int, str]]]] = []
    fence = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        found = FENCE.match(line)
        if not fence and found:
            fence = found.group(1)
            blocks.append((found.group(2).lower(), []))
        elif fence and found and found.group(1).startswith(fence) and line.strip() == found[1]:
            fence = ""
        elif fence:
            blocks[-1][1].append((number, line))
        prose.append("" if fence or found else line)
    return Page(path, "\n".join(prose), blocks)


def code_spans(page: Page) -> Iterator[tuple[int, str]]:
    """The inline code spans of the prose: (offset, text)."""
    for span in CODE_SPAN.finditer(page.prose):
        yield span.start(2), span.group(2)


def prose_without_code(page: Page) -> str:
    """The prose with code spans blanked (offsets kept): links in them are text."""
    return CODE_SPAN.sub(lambda span: re.sub(r"[^\n]", " ", span.group()), page.prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors of a Markdown file's headings; repeated ones get -1, -2, …"""
    seen: dict[str, int] = {}
    found = set()
    for line in read_page(path).prose.splitlines():
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(1) or "")
            found.add(f"{base}-{seen[base]}" if base in seen else base)
            seen[base] = seen.get(base, 0) + 1
    return frozenset(found)


def links(page: Page) -> Iterator[tuple[int, str]]:
    """The relative links of the prose (inline and reference definitions): (line, target)."""
    text = prose_without_code(page)
    for link in [*LINK.finditer(text), *LINK_DEFINITION.finditer(text)]:
        target = link.group(1) if link.group(1) is not None else link.group(2)
        if not SCHEME.match(target):
            yield page.line_of(link.start()), target


def link_problem(page: Page, target: str) -> str | None:
    """Why a relative link does not resolve, or None."""
    path_part, _, anchor = target.partition("#")
    path = (page.path.parent / unquote(path_part)).resolve() if path_part else page.path
    if not path.is_relative_to(ROOT):
        return "leaves the repository"
    if not path.exists():
        return f"no file {path.relative_to(ROOT).as_posix()}"
    if anchor and path.suffix == ".md" and unquote(anchor) not in anchors(path):
        return f"no heading with anchor #{anchor} in {path.relative_to(ROOT).as_posix()}"
    return None


def instance_attribute(cls: type, name: str) -> bool:
    """Whether instances of ``cls`` carry ``name``: an annotation (dataclass and pydantic fields
    included) or ``self.<name> = …`` in an ``__init__``."""
    assigned = re.compile(rf"\bself\.{re.escape(name)}\s*(?::[^=\n]*)?=(?!=)")
    for klass in cls.__mro__:
        if name in inspect.get_annotations(klass):
            return True
        init = vars(klass).get("__init__")
        if inspect.isfunction(init):
            try:
                source = inspect.getsource(init)
            except (OSError, TypeError):
                continue
            if assigned.search(source):
                return True
    return False


@cache
def module_spec(name: str) -> ModuleSpec | None:
    """The spec of the module ``name``, or None; found on disk, no module run (a parent
    package's import could cost seconds: pulser brings torch)."""
    parent = name.rpartition(".")[0]
    if not parent:
        return importlib.util.find_spec(name)
    found = module_spec(parent)
    if found is None or found.submodule_search_locations is None:
        return None
    return PathFinder.find_spec(name, found.submodule_search_locations)


@cache
def top_level(module: str) -> dict[str, bool]:
    """The names a module's source binds at its top level, each with whether it is a function
    or class (so callable); empty where there is no Python source to read."""
    spec = module_spec(module)
    origin = spec.origin if spec else None
    if not origin or not origin.endswith(".py"):
        return {}
    tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
    bound: dict[str, bool] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound[node.name] = True
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update(
                {(alias.asname or alias.name).split(".")[0]: False for alias in node.names}
            )
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update({target.id: False for target in targets if isinstance(target, ast.Name)})
    return bound


@cache
def name_problem(name: str, called: bool) -> str | None:
    """Why a dotted ``qhpc_lab`` name does not resolve (or, written as a call, is not
    callable), or None: the longest module prefix, then attributes. A module's own top-level
    definition is read from its source; anything else is imported and looked up."""
    parts = name.split(".")
    modules = 1
    while modules < len(parts) and module_spec(".".join(parts[: modules + 1])):
        modules += 1
    module, rest = ".".join(parts[:modules]), parts[modules:]
    if not rest:
        return "written as a call, but it is a module, not callable" if called else None
    # None: not bound at the module's top level; True: bound to a function or class
    bound = top_level(module).get(rest[0]) if len(rest) == 1 else None
    if bound or (bound is False and not called):
        return None
    try:
        obj: object = importlib.import_module(module)
    except Exception as error:
        return f"importing {module} fails: {type(error).__name__}: {error}"
    for index in range(modules, len(parts)):
        owner, attribute = obj, parts[index]
        try:
            obj = getattr(owner, attribute)
        except AttributeError:
            is_class = isinstance(owner, type)
            if is_class and index == len(parts) - 1 and instance_attribute(owner, attribute):
                return None
            kind = "module" if isinstance(owner, ModuleType) else "class" if is_class else "object"
            return f"{kind} {'.'.join(parts[:index])} has no attribute {attribute!r}"
    if called and not callable(obj):
        return f"written as a call, but it is a {type(obj).__name__}, not callable"
    return None


def python_lines(lines: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """A Python block's code (strings emptied, comments dropped), line by line; a parenthesised
    ``from qhpc_lab… import (…)`` joined into its first line."""
    pending: tuple[int, str] | None = None
    for number, line in lines:
        code = STRING.sub('""', line).split("#")[0]
        if pending is not None:
            number, code = pending[0], f"{pending[1]} {code}"
        opened = bool(FROM_IMPORT.match(code)) and "(" in code and ")" not in code
        pending = (number, code) if opened else None
        if not opened:
            yield number, code


def names(page: Page) -> Iterator[tuple[int, str, bool]]:
    """The ``qhpc_lab`` names of inline code and of Python blocks (attribute access and
    ``from … import``): (line, name, written as a call)."""

    def found(text: str) -> Iterator[tuple[int, str, bool]]:
        for match in NAME.finditer(text):
            after = text[match.end() : match.end() + 1]
            if not PATTERN_AFTER.match(after):
                yield match.start(), match.group(), after == "("

    for offset, span in code_spans(page):
        for start, name, called in found(span):
            yield page.line_of(offset + start), name, called
    for language, lines in page.blocks:
        if language not in PYTHON:
            continue
        for number, code in python_lines(lines):
            for _, name, called in found(code):
                yield number, name, called
            if imported := FROM_IMPORT.match(code):
                module, items = imported.groups()
                for item in items.strip("() ").split(","):
                    attribute = item.split()[:1]  # `x as y` imports x
                    if attribute and attribute != ["*"]:
                        yield number, f"{module}.{attribute[0]}", False


def test_relative_links_resolve() -> None:
    """A link to a moved or renamed file, or to a heading reworded, leads readers nowhere."""
    failures = [
        f"{page.name}:{line}: ({target}) — {problem}"
        for page in map(read_page, PAGES)
        for line, target in links(page)
        if (problem := link_problem(page, target))
    ]
    assert not failures, "links that do not resolve:\n" + "\n".join(failures)


def test_documented_names_exist() -> None:
    """The API the docs name (inline code, Python examples) must be the package's: a renamed or
    removed function leaves the docs teaching calls that fail."""
    failures = [
        f"{page.name}:{line}: {name}{'()' if called else ''} — {problem}"
        for page in map(read_page, PAGES)
        for line, name, called in names(page)
        if (problem := name_problem(name, called))
    ]
    assert not failures, "documented names that do not resolve:\n" + "\n".join(failures)


def test_tutorial_lists_name_every_notebook() -> None:
    """A page naming two notebooks or more lists the tutorials: a new notebook must be on it,
    and every notebook it names must exist."""
    failures = []
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        mentions = [*NOTEBOOK.finditer(text)]
        named = {mention.group() for mention in mentions}
        if len(named & set(NOTEBOOKS)) < 2:
            continue
        line = text.count("\n", 0, mentions[0].start()) + 1
        where = f"{path.relative_to(ROOT).as_posix()}:{line}"
        failures += [f"{where}: misses notebooks/{name}" for name in NOTEBOOKS if name not in named]
        failures += [
            f"{where}: names {name}, not in notebooks/" for name in sorted(named - set(NOTEBOOKS))
        ]
    assert not failures, "tutorial lists:\n" + "\n".join(failures)


def python_strings(path: Path) -> Iterator[tuple[int, str]]:
    """A module's string constants (messages, help, attribute docstrings), not the docstrings
    of the module, its classes and functions (prose for developers, which may name old calls)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        text = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if text and id(node) not in docstrings and node.value not in KEPT_AS_IS:
            yield node.lineno, node.value


def user_texts() -> Iterator[tuple[str, int, str]]:
    """(where, line, text) of what users read: the docs (their code blocks too: outputs), the
    package's strings and the sidebar's source. A paragraph that says a name is deprecated may
    name it."""
    for path in [*PAGES, *SIDEBAR_SOURCES]:
        where, number = path.relative_to(ROOT).as_posix(), 1
        for paragraph in path.read_text(encoding="utf-8").split("\n\n"):
            if not DEPRECATION.search(paragraph):
                yield from (
                    (where, number + i, line) for i, line in enumerate(paragraph.split("\n"))
                )
            number += paragraph.count("\n") + 2
    for path in sorted((ROOT / "qhpc_lab").rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        for number, text in python_strings(path):
            yield where, number, text


def test_one_word_for_each_thing() -> None:
    """Each thing has one name in what users read: an old spelling or wording coming back (in
    the docs, a message, the sidebar) fails here with the word to use."""
    failures = []
    for where, line, text in user_texts():
        for quote in QUOTED:
            text = text.replace(quote, "")
        failures += [
            f"{where}:{line}: {found.group()!r}: {rule}"
            for rule, pattern in OLD_WORDS.items()
            for found in pattern.finditer(text)
        ]
    assert not failures, "old words:\n" + "\n".join(failures)
