"""The layout draws the architecture: one-way imports, a shallow stack, a worker free of adapters."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit

PACKAGE = ROOT / "service"
# From the CLI down to the lowest module. Every import counts, module-level, TYPE_CHECKING
# and the ones deferred into functions alike (the CLI defers the demo's): each is a floor
# a reader walks down.
MAX_FLOORS = 7


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


@cache
def imports_of(module: str) -> frozenset[str]:
    """The service modules ``module`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in MODULES and name != module}
    return frozenset(found)


@cache
def floors(module: str) -> int:
    """1 for a module importing no other service module, else 1 + its deepest import."""
    return 1 + max((floors(m) for m in imports_of(module)), default=0)


def closure(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        for imported in imports_of(todo.pop()):
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def deepest_chain(module: str) -> list[str]:
    chain = [module]
    while imports_of(chain[-1]):
        chain.append(max(imports_of(chain[-1]), key=floors))
    return chain


def test_the_cli_stands_at_most_seven_floors_above_the_lowest_module() -> None:
    assert floors("service.cli") <= MAX_FLOORS, " -> ".join(deepest_chain("service.cli"))
    assert max(floors(m) for m in MODULES) <= MAX_FLOORS


def test_the_worker_imports_no_adapter_and_no_tool_even_indirectly() -> None:
    reached = closure("service.worker")
    forbidden = sorted(m for m in reached if m.startswith(("service.aws", "service.tools")))
    assert not forbidden, forbidden
    assert {"service.ports", "service.core.published", "service.settings"} <= reached


def test_the_core_and_the_ports_import_nothing_above_them() -> None:
    for module in MODULES:
        if module.startswith("service.core"):
            assert closure(module) <= {m for m in MODULES if m.startswith("service.core")} | {
                "service.errors"
            }, module
    assert not any(m.startswith(("service.aws", "service.tools")) for m in closure("service.ports"))


def client_types(tree: ast.Module) -> set[str]:
    """The names a module imports from types_aiobotocore packages (under TYPE_CHECKING too)."""
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("types_aiobotocore")
        for alias in node.names
    }


def annotated_names(tree: ast.Module) -> list[tuple[str, ast.expr | None, int]]:
    """Every parameter and every annotated attribute or variable: (name, annotation, line)."""
    found: list[tuple[str, ast.expr | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None and arg.arg not in ("self", "cls"):
                    found.append((arg.arg, arg.annotation, arg.lineno))
        elif isinstance(node, ast.AnnAssign):
            target = node.target
            name = target.attr if isinstance(target, ast.Attribute) else ast.unparse(target)
            found.append((name, node.annotation, node.lineno))
    return found


def names_in(annotation: ast.expr) -> set[str]:
    """The names an annotation uses (a string annotation parsed as what it says)."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    return {
        n.id if isinstance(n, ast.Name) else n.attr
        for n in ast.walk(annotation)
        if isinstance(n, ast.Name | ast.Attribute)
    }


def test_adapters_take_typed_clients() -> None:
    for path in (PACKAGE / "aws").glob("*.py"):
        text = path.read_text()
        assert "client: Any" not in text, path.name
        assert "client: object" not in text, path.name


def test_every_module_of_the_package_is_run_by_a_command() -> None:
    # The image installs service/ and nothing else: a module only tests or the benchmark
    # import belongs outside it (testing/; docs/decisions.md, "Test infrastructure lives
    # outside the package"). A package counts as reached when one of its modules is.
    reached = closure("service.cli") | {"service.cli"}
    unused = sorted(
        m for m in MODULES if m not in reached and not any(r.startswith(f"{m}.") for r in reached)
    )
    assert not unused, unused


MAX_CLASS_LINES = 250
MAX_STATEMENTS = 40
# A hot loop whose split would cost measurable speed may be longer: name it here with the
# figure (none today; replay's loop, ``service.tools.replay._feed``, fits).
LONG_HOT_LOOPS: dict[str, str] = {}


def units() -> list[tuple[str, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef]]:
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((f"{module}:{node.name}", node))
    return found


def statements(node: ast.AST) -> int:
    """Every statement in its body, nested ones included (as ruff's PLR0915 counts)."""
    return sum(1 for inner in ast.walk(node) if isinstance(inner, ast.stmt)) - 1


def lines(node: ast.ClassDef) -> int:
    return (node.end_lineno or node.lineno) - node.lineno + 1


def test_no_class_over_250_lines_and_no_function_over_40_statements() -> None:
    found = units()
    long_classes = [
        f"{name}: {lines(node)} lines"
        for name, node in found
        if isinstance(node, ast.ClassDef) and lines(node) > MAX_CLASS_LINES
    ]
    long_functions = [
        f"{name}: {statements(node)} statements"
        for name, node in found
        if not isinstance(node, ast.ClassDef)
        and statements(node) > MAX_STATEMENTS
        and name not in LONG_HOT_LOOPS
    ]
    assert not long_classes, long_classes
    assert not long_functions, long_functions


def test_every_client_an_adapter_holds_is_typed() -> None:
    """A client an adapter takes or keeps is annotated with its types_aiobotocore type.

    A client is what is called ``client`` (or ``*_client``) or carries the name of one of
    AwsClients' fields (``sqs``, ``dynamodb``, ``events``); those must be the same type as
    AwsClients declares. ``Any`` or ``object`` would let every call on it go unchecked.
    """
    clients_tree = ast.parse((PACKAGE / "aws" / "clients.py").read_text())
    (aws_clients,) = (
        n for n in ast.walk(clients_tree) if isinstance(n, ast.ClassDef) and n.name == "AwsClients"
    )
    by_field = {
        ast.unparse(n.target): names_in(n.annotation)
        for n in aws_clients.body
        if isinstance(n, ast.AnnAssign)
    }
    assert {"sqs", "dynamodb", "events"} <= set(by_field), by_field
    assert all(len(types) == 1 for types in by_field.values()), by_field
    checked = 0
    for path in sorted((PACKAGE / "aws").glob("*.py")):
        tree = ast.parse(path.read_text())
        typed = client_types(tree)
        for name, annotation, line in annotated_names(tree):
            if name not in by_field and name != "client" and not name.endswith("_client"):
                continue
            where = f"{path.name}:{line} {name}"
            assert annotation is not None, f"{where} has no annotation"
            used = names_in(annotation)
            assert used and used <= typed, (
                f"{where}: {ast.unparse(annotation)} is not a client type"
            )
            if name in by_field:
                assert used == by_field[name], (
                    f"{where}: {ast.unparse(annotation)}, not {by_field[name]}"
                )
            checked += 1
    assert checked >= 10, "the check must see the adapters' clients"


def test_the_board_runs_no_model_and_decodes_no_private_state() -> None:
    """What the board shows at start is what the worker published (the view each tenant
    and window item keeps, service/board/seed.py): nothing in service/board/ reaches the
    tenant model, even indirectly, nor decodes a tenant's orders (``items.tenant_from_item``)
    or a window's live records (``items.window_from_item``, ``items.decode_live``)."""
    defines_model = ("class TenantState", "def view_of", "class TenantCommit")
    model = {
        module
        for module, path in MODULES.items()
        if module.startswith("service.core")
        and (
            module.startswith(("service.core.tenant", "service.core.estimators"))
            or any(d in path.read_text() for d in defines_model)
        )
    }
    assert model  # the model is somewhere in the core
    for module, path in MODULES.items():
        if module.startswith("service.board"):
            assert not (closure(module) | {module}) & model, module
            text = path.read_text()
            for private in ("tenant_from_item", "window_from_item", "decode_live"):
                assert private not in text, (module, private)


MAX_MODULE_LINES = 500


def test_no_module_of_the_package_over_500_lines() -> None:
    # A long module holds two ideas: split it by responsibility, never by trimming its
    # docs (docs/decisions.md, "A layout that draws the architecture").
    long_modules = {
        module: count
        for module, path in MODULES.items()
        if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long_modules, long_modules
