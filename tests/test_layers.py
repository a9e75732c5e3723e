"""The layout's rules, read from the code's own imports (docs/architecture.md draws them).

Layers point only down: a module imports its own package, or packages of a lower layer.
Packages that share a layer are independent of each other. There are no import circles
between modules. Imports made only for type checking (`if TYPE_CHECKING:`) do not count;
imports inside functions do (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# Bottom first. The root package (`cove`, `cove.aio`, `cove.__main__`) is the top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "version"),
    ("guest",),
    ("host",),
    ("spec",),
    ("image", "nix", "export"),
    ("plan",),
    ("vmm",),
    ("net",),
    ("vm",),
    ("daemon",),
    ("client",),
    ("start",),
    ("sdk",),
    ("cli",),
    ("",),
)
MAX_TOP_MODULES = 6
MAX_PACKAGE_MODULES = 16
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def type_checking_only(tree: ast.AST) -> set[int]:
    """The nodes under an `if TYPE_CHECKING:`."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            skipped.update(id(inner) for child in node.body for inner in ast.walk(child))
    return skipped


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The cove modules `name` imports (each resolved to the module that exists)."""
    tree = ast.parse(path.read_text())
    skipped = type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            found = target
            while found and found not in known:
                found = found.rpartition(".")[0]
            if found and found != name and found.startswith("cove"):
                yield found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imported(name, path, known)) for name, path in known.items()}


def package_of(module: str) -> str:
    """`cove.vm.machine` -> `vm`; `cove.image.sources.nix` -> `image`; `cove.aio` -> ``
    (the root); `cove.errors` -> `errors` (a layer of its own)."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in ("aio", "__main__"):
        return ""
    return parts[0]


def layer_of(package: str) -> int:
    for index, members in enumerate(LAYERS):
        if package in members:
            return index
    raise AssertionError(f"package {package!r} is in no layer: add it to LAYERS "
                         "(and to the picture in docs/architecture.md)")


def test_no_import_climbs_a_layer() -> None:
    wrong = []
    for module, targets in import_graph().items():
        here = package_of(module)
        for target in sorted(targets):
            there = package_of(target)
            if there == here:
                continue
            if layer_of(there) >= layer_of(here):
                wrong.append(f"{module} imports {target} ({there or 'the root'} is not "
                             f"below {here or 'the root'})")
    assert not wrong, "\n".join(wrong)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root, children_of_root in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(children_of_root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_guest_code_imports_only_the_standard_library_and_itself() -> None:
    stdlib = set(sys.stdlib_module_names)
    wrong = []
    for path in sorted((SRC / "cove" / "guest").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and not name.startswith("cove.guest") and name != "cove":
                    wrong.append(f"{path.name}:{node.lineno} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_sizes() -> None:
    found = modules()
    top = [name for name in found if name.count(".") == 1 and not (SRC / name.replace(
        ".", "/")).is_dir()]
    assert len(top) <= MAX_TOP_MODULES, f"modules directly in src/cove: {top}"
    packages: dict[str, int] = {}
    for path in found.values():
        if path.name != "__init__.py":
            packages[str(path.parent)] = packages.get(str(path.parent), 0) + 1
    crowded = {p: n for p, n in packages.items() if n > MAX_PACKAGE_MODULES}
    assert not crowded, f"packages of more than {MAX_PACKAGE_MODULES} modules: {crowded}"
    long = []
    for path in found.values():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long.append(f"{path}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path}:{node.lineno} {node.name}: {length} lines")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("layer", [members for members in LAYERS if members != ("",)])
def test_the_architecture_doc_draws_every_layer(layer: tuple[str, ...]) -> None:
    picture = (ROOT / "docs" / "architecture.md").read_text()
    for package in layer:
        assert f"{package}/" in picture or f"{package}.py" in picture, package
