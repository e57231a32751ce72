"""The package's shape, checked statically: arrows point down, argparse stays in the CLI, functions stay short."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "xfer"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(p.relative_to(PKG.parent).with_suffix("").parts)
        mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = p
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports, at any depth of its code (imports inside functions count)."""
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        pkg = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            for n in names:
                t = resolve(n) if n.startswith("xfer") else None
                parent_init = t is not None and m.startswith(t + ".") and mods[t].name == "__init__.py"
                if t and t != m and t != "xfer" and not parent_init:
                    edges[m].add(t)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert _cycles(_imports(_modules())) == []


def test_the_cycle_check_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_only_the_cli_knows_argparse():
    users = sorted(m for m, p in _modules().items()
                   if any(isinstance(n, (ast.Import, ast.ImportFrom)) and
                          ("argparse" in [a.name for a in getattr(n, "names", [])] or getattr(n, "module", None) == "argparse")
                          for n in ast.walk(ast.parse(p.read_text()))))
    assert users == ["xfer.cli"]


def test_no_stage_imports_the_cli():
    edges = _imports(_modules())
    assert [m for m, targets in edges.items() if "xfer.cli" in targets and m != "xfer.__main__"] == []


def test_functions_stay_short():
    long = [f"{p.relative_to(PKG.parent)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in PKG.rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 65]
    assert long == []


def test_version_is_defined_once():
    import importlib.metadata

    import xfer

    assert importlib.metadata.version("xfer") == xfer.__version__
    assert "version =" not in (PKG.parent / "pyproject.toml").read_text().split("[project]")[1].split("[")[0]


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            names |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and not n.level and n.module:
            names.add(n.module.split(".")[0])
        elif isinstance(n, ast.ImportFrom) and n.level:
            names.add("xfer")
    return names


def test_mxnet_stays_behind_the_boundary():
    """Only the worker (run in the pretraining environment) imports MXNet, and it imports nothing of xfer's."""
    worker = "xfer.mxnet_worker"
    mods = _modules()
    crossing = sorted(m for m, p in mods.items() if not m.startswith(worker) and _top_level_imports(p) & {"mxnet", "mnist"})
    assert crossing == []
    assert all("xfer" not in _top_level_imports(p) for m, p in mods.items() if m.startswith(worker))
    assert "mxnet" in _top_level_imports(mods[f"{worker}.main"])  # the check can see an import when there is one
