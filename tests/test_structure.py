"""The package's shape: no import cycle anywhere, small modules, things defined once."""

from __future__ import annotations

import ast
from pathlib import Path

import archsearch

ROOT = Path(archsearch.__file__).parent
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """archsearch modules ``name`` imports anywhere (module level or inside functions).

    ``from P import N`` is an edge to ``P.N`` when that is a module, otherwise to ``P``.
    """
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            edges.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                if sub in known:
                    edges.add(sub)
                elif mod in known:
                    edges.add(mod)
    edges.discard(name)
    return edges


def test_no_import_cycle() -> None:
    mods = _modules()
    graph = {n: _imports(n, p, set(mods)) for n, p in mods.items()}
    # A package __init__ that only re-exports its own submodules is not part of a cycle.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m) :] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_no_module_over_450_lines() -> None:
    long = {
        str(p.relative_to(ROOT.parent)): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from .b import x\n")
    b.write_text("def f():\n    from . import a\n")
    known = {"p.a", "p.b"}
    assert _imports("p.a", a, known) == {"p.b"}
    assert _imports("p.b", b, known) == {"p.a"}


def test_each_definition_lives_in_one_place() -> None:
    """The trials.csv columns, the Pareto front, the run options, the atomic write and the
    reuse rule are each defined in exactly one module."""
    needles = {
        "DTYPES: dict[str, str] = {": "records.py",
        "def non_dominated_sort(": "pareto.py",
        "class RunSettings": "settings.py",
        "os.replace(": "rundir.py",
        "def earlier(": "search/driver.py",
    }
    for needle, home in needles.items():
        found = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if needle in p.read_text()]
        assert found == [home], f"{needle!r} defined in {found}, expected only in {home}"
