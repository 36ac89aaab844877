"""The package stays one a newcomer can hold: small modules, short functions, no import cycle,
no module reaching into another's private names.

Checked with ``ast`` over every module under ``jaxflows/`` (no import is executed).  Imports
inside functions count too: a lazy import hides a cycle from the interpreter, not from a reader.
Imports under ``if TYPE_CHECKING:`` are left out (they never run).  So are the two
compatibility forwards written with ``importlib`` in a module ``__getattr__``
(``jaxflows.flows.maf`` -> ``jaxflows.models``, ``jaxflows.standardizing.score`` ->
``jaxflows.scoring``): importing the old module does not import the new one; only reading a
moved name does.  Each test lists every offender with its file and line, so one run shows
all that is left to fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxflows"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    """``{module name: (path, ast tree, is_package)}`` for every ``.py`` file in the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        out[_module_name(path)] = (path, tree, path.name == "__init__.py")
    return out


MODULES = _modules()


def _where(path: Path, node=None) -> str:
    rel = path.relative_to(PACKAGE.parent)
    return f"{rel}:{node.lineno}" if node is not None else str(rel)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every ``import``/``from ... import`` node, at any depth, except under ``if TYPE_CHECKING``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name a ``from`` import reads from."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges():
    """``{module: {imported package module: first import node}}`` inside the package."""
    graph = {name: {} for name in MODULES}
    for name, (_, tree, is_package) in MODULES.items():
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                source = _resolve(name, is_package, node)
                # ``from . import checkpoint`` imports the submodule jaxflows.checkpoint
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source
                           for a in node.names]
            for target in targets:
                if target in MODULES and target != name:
                    graph[name].setdefault(target, node)
    return graph


def test_modules_are_short():
    offenders = []
    for name, (path, _, _) in MODULES.items():
        n = len(path.read_text().splitlines())
        if n > MAX_MODULE_LINES:
            offenders.append(f"{_where(path)}: {n} lines")
    assert not offenders, (f"modules over {MAX_MODULE_LINES} lines (split them by job):\n  "
                           + "\n  ".join(offenders))


def test_functions_are_short():
    offenders = []
    for name, (path, tree, _) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                n = node.end_lineno - first + 1
                if n > MAX_FUNCTION_LINES:
                    offenders.append(f"{_where(path, node)}: {node.name} has {n} lines")
    assert not offenders, (f"functions over {MAX_FUNCTION_LINES} lines (compose them from named parts):"
                           "\n  " + "\n  ".join(offenders))


def _find_cycles(graph):
    """Every strongly connected component with more than one module (Tarjan's algorithm)."""
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_import_graph_is_acyclic():
    graph = _edges()
    # A package's __init__ imports its submodules, and Python imports the parent package before a
    # submodule anyway: an edge from a submodule up to its own parent package is no cycle to fix.
    graph = {v: {w: n for w, n in ws.items() if not v.startswith(w + ".")} for v, ws in graph.items()}
    cycles = _find_cycles(graph)
    lines = []
    for comp in cycles:
        members = set(comp)
        for v in comp:
            for w, node in sorted(graph[v].items()):
                if w in members:
                    lines.append(f"{_where(MODULES[v][0], node)}: {v} imports {w}")
    assert not cycles, ("import cycles (modules that import each other, directly or around a loop):\n  "
                        + "\n  ".join(lines))


def test_no_cross_module_private_imports():
    offenders = []
    for name, (path, tree, is_package) in MODULES.items():
        for node in _imports(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _resolve(name, is_package, node)
            if not (source == "jaxflows" or source.startswith("jaxflows.")):
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and f"{source}.{alias.name}" not in MODULES:
                    offenders.append(f"{_where(path, node)}: {name} imports {alias.name} from {source}")
    assert not offenders, ("private names imported from another module (make the name public, or "
                           "move it to a small module both can use):\n  " + "\n  ".join(offenders))


def test_the_checks_see_the_package():
    """The walk finds the modules and the edges it should: a check over nothing cannot fail."""
    assert {"jaxflows", "jaxflows.flows", "jaxflows.cli", "jaxflows.bijectors"} <= set(MODULES)
    graph = _edges()
    assert "jaxflows.flows" in graph["jaxflows"]
    assert _find_cycles({"a": {"b": None}, "b": {"c": None}, "c": {"a": None}, "d": {"a": None}}) == [
        ["a", "b", "c"]]
    tree = ast.parse("from .checkpoint import _atomic_write\nfrom . import cli\n")
    froms = sorted(_imports(tree), key=lambda n: n.lineno)
    assert [_resolve("jaxflows.x", False, n) for n in froms] == ["jaxflows.checkpoint", "jaxflows"]
