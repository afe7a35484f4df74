"""Every reference the docs make resolves: no path, module or anchor that is not there.

Scanned: the Markdown files (README.md, docs/, tests/data/), every docstring and comment
of the Python code (service/, testing/, bench/, tests/, dev.py), and the comments of the
build and deployment files (``CONFIG_FILES``, deploy/). Checked there:

- repository paths (``service/aws/items.py``, ``deploy/ecs/wait-times.yaml``, a folder
  ending in ``/``), with a ``:line`` (the file has that line), a ``::name`` (the file
  defines it), a ``#anchor`` (a heading of that Markdown file) or a section cited by name
  (``(docs/design.md, Expiry)``, a heading or a bold run-in title of that file);
- bare Markdown and Python file names (``design.md``, ``pairing.py``): some file has it;
- dotted names under ``service.``, ``testing.``, ``bench.`` and ``tests.``: a module, or a
  module and attributes that exist (the module is imported only to look an attribute up);
- Markdown links (``[x](decisions.md#one-retry-policy)``, ``[x](#the-window)``): the
  target exists and so does its anchor, computed from the headings as GitHub does.

Patterns (``*``, ``{a,b}``, ``<name>``), external URLs and the files written at run time
(``ALLOWED``) are not references. The test lists every reference that does not resolve.
"""

from __future__ import annotations

import ast
import importlib
import io
import re
import tokenize
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit

# Top-level folders a path may start with (everything the repository tracks at the top).
ROOTS = ("service", "testing", "tests", "bench", "docs", "deploy", ".ci")
PACKAGES = ("service", "testing", "bench", "tests")
PYTHON_SOURCES = ("service", "testing", "bench", "tests")
# Written at run time, never committed: a reference to them is not dangling.
ALLOWED = {
    "bench/out/": "the benchmark's output folder (.gitignore'd), written by python3 dev.py bench",
    "bench/out/results.json": "the benchmark's figures, written by python3 dev.py bench",
    "tests/artifacts/board.png": "the board's screenshot (.gitignore'd), by tests/board",
    "tests/artifacts/board-compose.png": "the compose board's screenshot, by tests/containers",
}
# Files whose ``#`` comments are read (their other lines are data, not prose).
CONFIG_FILES = (
    "Dockerfile",
    "docker-compose.yml",
    "pyproject.toml",
    "localstack-requirements.txt",
    ".dockerignore",
    ".ci/run",
)
SKIPPED_DIRS = {"__pycache__", ".venv", ".tools", ".git", ".mypy_cache", ".ruff_cache"}

PATH = re.compile(
    r"(?<![\w./\-@~])((?:" + "|".join(re.escape(r) for r in ROOTS) + r")/[\w.\-/*?<>{}\[\]]*)"
)
BARE_FILE = re.compile(r"(?<![\w./\-@~])([A-Za-z_][\w\-]*\.(?:md|py))(?![\w/])")
DOTTED = re.compile(r"(?<![\w./\-@~])((?:" + "|".join(PACKAGES) + r")(?:\.\w+)+)")
LINK = re.compile(r"\[[^\]\n]*\]\(([^()\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
RUN_IN = re.compile(r"^\s*(?:[-*]\s+)?\*\*([^*\n]+?)\.?\*\*")
FENCE = re.compile(r"^\s*(```|~~~)")
SECTION = re.compile(r""",\s*(?:"([^"\n]+)"|([A-Z][\w' \-]*?)\))""")
PATTERN_CHARACTERS = set("*?<>{}[]")
TRAILING = ".,:;'\"`)"


class Text(NamedTuple):
    """A piece of documentation: where it is, and whether it is Markdown."""

    file: Path
    line: int
    text: str
    markdown: bool


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def markdown_files() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return found + sorted((ROOT / "tests").rglob("*.md"))


def python_files() -> list[Path]:
    found = [ROOT / "dev.py"]
    for folder in PYTHON_SOURCES:
        found += sorted(p for p in (ROOT / folder).rglob("*.py") if not SKIPPED_DIRS & set(p.parts))
    return [p for p in found if p.exists()]


def docstrings(path: Path) -> Iterator[Text]:
    """The module's, classes' and functions' docstrings, with the line each starts on."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = node.body[0] if node.body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            yield Text(path, first.lineno, first.value.value, markdown=False)


def comments(path: Path) -> Iterator[Text]:
    """The ``#`` comments of a Python file (tokenized: a ``#`` in a string is no comment)."""
    source = io.StringIO(path.read_text(encoding="utf-8"))
    for token in tokenize.generate_tokens(source.readline):
        if token.type == tokenize.COMMENT:
            yield Text(path, token.start[0], token.string, markdown=False)


def config_comments(path: Path) -> Iterator[Text]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if "#" in line:
            yield Text(path, number, line[line.index("#") :], markdown=False)


def texts() -> Iterator[Text]:
    for path in markdown_files():
        yield Text(path, 1, path.read_text(encoding="utf-8"), markdown=True)
    for path in python_files():
        yield from docstrings(path)
        yield from comments(path)
    configs = [ROOT / name for name in CONFIG_FILES]
    configs += sorted(p for p in (ROOT / "deploy").rglob("*") if p.suffix in (".yaml", ".yml"))
    for path in configs:
        if path.is_file():
            yield from config_comments(path)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def sections(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """A Markdown file's anchors (GitHub's, duplicates numbered) and the slugs of the
    names a reader may cite a part by (headings, what a heading says before its colon,
    bold run-in titles)."""
    anchors: set[str] = set()
    named: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        if heading := HEADING.match(line):
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            anchors.add(base if count == 0 else f"{base}-{count}")
            named.add(base)
            named.add(slug(heading.group(1).split(":", 1)[0]))  # "Earliest wins"
        elif run_in := RUN_IN.match(line):
            named.add(slug(run_in.group(1)))
    return frozenset(anchors), frozenset(named)


@cache
def basenames() -> frozenset[str]:
    names = {p.name for p in ROOT.iterdir() if p.is_file()}
    for folder in ROOTS:
        names |= {
            p.name
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and not SKIPPED_DIRS & set(p.parts)
        }
    return frozenset(names)


@cache
def defined_names(path: Path) -> frozenset[str]:
    """Top-level functions and classes of a Python file, and the methods of its classes."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return frozenset(names)


def check_anchor(target: Path, anchor: str) -> str | None:
    if target.suffix != ".md" or not target.is_file():
        return f"#{anchor} on something that is not a Markdown file"
    anchors, _ = sections(target)
    return None if anchor in anchors else f"{relative(target)} has no heading #{anchor}"


def check_path(token: str, rest: str, base: Path) -> str | None:
    """Why the path ``token`` (``rest``: the text right after it) does not resolve."""
    if token in ALLOWED:
        return None
    target = (base / token).resolve()
    if not target.is_relative_to(ROOT):
        return "outside the repository"
    if token.endswith("/"):
        return None if target.is_dir() else "no such folder"
    if not target.exists():
        return "no such file or folder"
    if line := re.match(r":(\d+)", rest):
        if not target.is_file():
            return "a line of a folder"
        count = len(target.read_text(encoding="utf-8").splitlines())
        if int(line.group(1)) > count:
            return f"{relative(target)} has {count} lines"
    member = re.match(r"::(\w+(?:::\w+)?)", rest)
    if member and (target.suffix != ".py" or member.group(1) not in defined_names(target)):
        return f"{relative(target)} defines no {member.group(1)}"
    if anchor := re.match(r"#([\w\-]+)", rest):
        return check_anchor(target, anchor.group(1))
    if target.suffix == ".md" and (cited := SECTION.match(rest)):
        name = cited.group(1) or cited.group(2)
        if slug(name) not in sections(target)[1]:
            return f'{relative(target)} has no section "{name}"'
    return None


def module_path(parts: list[str]) -> Path | None:
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def check_dotted(name: str) -> str | None:
    """Why the dotted name (a module, or a module's attribute) does not resolve."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        if module_path(parts[:split]) is None:
            continue
        attributes = parts[split:]
        if not attributes:
            return None
        module = ".".join(parts[:split])
        value: object = importlib.import_module(module)
        for attribute in attributes:
            if hasattr(value, attribute):
                value = getattr(value, attribute)
                continue
            # A dataclass or pydantic field without a class-level default.
            fields = getattr(value, "model_fields", None) or getattr(
                value, "__dataclass_fields__", {}
            )
            if attribute not in fields:
                return f"{module} has no {'.'.join(attributes)}"
            return None
        return None
    return "no such module"


def problems(text: Text) -> Iterator[str]:
    base = text.file.parent if text.markdown else ROOT

    def where(offset: int) -> str:
        return f"{relative(text.file)}:{text.line + text.text.count(chr(10), 0, offset)}"

    links = []
    if text.markdown:
        for match in LINK.finditer(text.text):
            target = match.group(1)
            links.append(match.span(1))
            if re.match(r"[a-z][a-z0-9+.\-]*:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            resolved = (base / path).resolve() if path else text.file
            if path and not resolved.exists():
                yield f"{where(match.start())}: ({target}): no such file or folder"
            elif anchor and (why := check_anchor(resolved, anchor)):
                yield f"{where(match.start())}: ({target}): {why}"
    in_link = lambda offset: any(start <= offset < end for start, end in links)  # noqa: E731

    for match in PATH.finditer(text.text):
        token = match.group(1).rstrip(TRAILING)
        if in_link(match.start()) or PATTERN_CHARACTERS & set(token):
            continue
        rest = text.text[match.start(1) + len(token) :]
        # Paths in prose are from the top of the repository, as is every example here.
        if why := check_path(token, rest, ROOT):
            yield f"{where(match.start())}: {token}{rest[:1] if rest[:1] in ':#' else ''}: {why}"
    for match in BARE_FILE.finditer(text.text):
        name = match.group(1)
        if in_link(match.start()) or name in basenames():
            continue
        yield f"{where(match.start())}: {name}: no file of that name"
    for match in DOTTED.finditer(text.text):
        name = match.group(1)
        if text.text[match.end() : match.end() + 1] == "/" or name.endswith((".py", ".md")):
            continue  # part of a path, or a file name
        if why := check_dotted(name):
            yield f"{where(match.start())}: {name}: {why}"


def test_every_path_module_and_anchor_the_docs_name_exists() -> None:
    found = [problem for text in texts() for problem in problems(text)]
    assert not found, "dangling references:\n" + "\n".join(found)


def test_anchors_are_computed_as_github_computes_them() -> None:
    assert slug("Earliest wins: the window is a view of a key's state") == (
        "earliest-wins-the-window-is-a-view-of-a-keys-state"
    )
    assert slug("One flush, a handful of calls (group commit)") == (
        "one-flush-a-handful-of-calls-group-commit"
    )
    assert slug("Order submitted: `OrderManager.WaitingCompletion`") == (
        "order-submitted-ordermanagerwaitingcompletion"
    )
    anchors, named = sections(ROOT / "docs" / "design.md")
    assert {"expiry", "the-window", "delivery-guarantees"} <= anchors
    assert "names" in named  # a bold run-in title, citable by name


def test_the_checker_flags_what_it_must() -> None:
    fake = Text(
        ROOT / "docs" / "example.md",
        1,
        "`service/emulator.py` and `service/tools/emulator.py:9999`, see DESIGN.md,"
        " `service.events.role_of`, `service.core.events.no_such_thing`,"
        ' (docs/decisions.md, "One flush, four calls"), [x](decisions.md#no-such-part),'
        " [y](#nowhere), `tests/test_layout.py::no_such_test`\n",
        markdown=True,
    )
    found = list(problems(fake))
    assert len(found) == 9, found
    legitimate = Text(
        ROOT / "docs" / "example.md",
        1,
        "[x](decisions.md#one-retry-policy), https://github.com/x/y/docs/z.md,"
        " `service/tools/*.py`, `deploy/ecs/wait-times.yaml`, `bench/out/results.json`,"
        " `service.core.pairing.KeyState.view`, `python -m testing.localstack`,"
        ' (docs/design.md, Expiry), (docs/design.md, "Names"), `wait-times play`,'
        " `service.settings.Settings.window_size`, the service. Tests.\n",
        markdown=True,
    )
    assert list(problems(legitimate)) == []
