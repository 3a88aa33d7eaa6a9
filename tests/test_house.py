"""The house rules that keep the code readable as a map (ARCHITECTURE.md), checked on the source itself.

- no module in pipeline/, stages/ or data_manifests/ above 400 lines, no function above 80;
- every module opens with a docstring saying its job;
- no import circle between the project's modules (module-level and function-level imports both count; imports
  under ``if TYPE_CHECKING:`` are for annotations only and do not);
- stages/ and data_manifests/ know nothing of Ray, the CLI or run folders;
- nothing prints to stderr by hand: messages go through the module's logger (pipeline/runtime/log.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "stages", "data_manifests")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size_and_docstring(name: str) -> None:
    path = MODULES[name]
    tree = _tree(path)
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= MAX_MODULE_LINES, f"{path.relative_to(REPO)}: {n_lines} lines; split it by job"
    assert ast.get_docstring(tree), f"{path.relative_to(REPO)}: no module docstring saying its job"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(REPO)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def _runtime_nodes(tree: ast.AST):  # noqa: ANN202
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (imports for annotations only, never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(name: str, tree: ast.Module) -> set[str]:
    """The project modules ``name`` imports anywhere in its body (``from a.b import c`` counts a.b.c when that
    is a module, else a.b)."""
    found = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


def test_no_import_circles() -> None:
    graph = {name: _imports(name, _tree(path)) for name, path in MODULES.items()}
    # a package's __init__ importing its own sub-modules is how a package exposes them, not a circle
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", ["stages", "data_manifests"])
def test_stages_and_manifests_know_nothing_of_orchestration(package: str) -> None:
    offenders = []
    for name, path in MODULES.items():
        if not name.startswith(package + ".") and name != package:
            continue
        for node in ast.walk(_tree(path)):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{name}: {m}" for m in mods if m.split(".")[0] in ("ray", "pipeline", "typer", "click")]
    assert not offenders, offenders


def test_no_hand_written_stderr_prints() -> None:
    """Messages go through logging (one logger per module), so -q, -v and --log-file apply to all of them."""
    offenders = []
    for path in MODULES.values():
        for node in ast.walk(_tree(path)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
                and any(k.arg == "file" for k in node.keywords)
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
