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
                if t and t not in (m, "xfer") and not parent_init:
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


FRAMEWORK_MODULES = {"mxnet", "mnist", "tensorflow", "tf2onnx", "keras", "jax", "flax", "jax2onnx", "paddle",
                     "paddle2onnx"}


def _imports_anywhere(path: Path) -> set[str]:
    """Top-level names of every import in the file, and of every module named as a string to ``need``."""
    tree = ast.parse(path.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    names |= {n.args[0].value.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Call)
              and getattr(n.func, "id", None) == "need" and n.args and isinstance(n.args[0], ast.Constant)}
    return names


def test_frameworks_stay_behind_the_boundary():
    """Only the workers (each run in its framework's environment) import MXNet, TensorFlow, JAX or Paddle, and the
    workers import nothing of xfer's."""
    worker = "xfer.workers"
    mods = _modules()
    crossing = sorted(m for m, p in mods.items() if not m.startswith(worker) and _imports_anywhere(p) & FRAMEWORK_MODULES)
    assert crossing == []
    assert all("xfer" not in _imports_anywhere(p) for m, p in mods.items() if m.startswith(worker))
    for name in ("mxnet", "keras", "jax", "paddle"):  # the check can see an import when there is one
        assert name.replace("keras", "tensorflow") in _imports_anywhere(mods[f"{worker}.{name}_worker"])


def _layers() -> list[list[str]]:
    """ARCHITECTURE.md's layer table, bottom first: one line per layer between the ``layers`` markers."""
    text = (PKG.parent / "ARCHITECTURE.md").read_text()
    block = text.split("<!-- layers -->")[1].split("<!-- /layers -->")[0]
    return [line.split(":", 1)[1].split() for line in block.strip().splitlines() if ":" in line]


def _layer_of(module: str, layers: list[list[str]]) -> int | None:
    for i, names in enumerate(layers):
        for n in names:
            if module == n.rstrip("*") or (n.endswith("*") and module.startswith(n.rstrip("*") + ".")):
                return i
    return None


def test_every_module_has_a_layer():
    layers = _layers()
    assert [m for m in _modules() if m != "xfer" and _layer_of(m, layers) is None] == []


def test_arrows_point_down_the_drawn_layers():
    """A module imports only modules of its own layer or below, as ARCHITECTURE.md draws them."""
    layers = _layers()
    up = sorted(f"{m} (layer {_layer_of(m, layers)}) -> {t} (layer {_layer_of(t, layers)})"
                for m, targets in _imports(_modules()).items() for t in targets
                if m != "xfer" and (_layer_of(t, layers) or 0) > (_layer_of(m, layers) or 0))
    assert up == []


def test_the_layer_check_sees_an_upward_arrow():
    layers = [["xfer.errors"], ["xfer.train"]]
    assert _layer_of("xfer.errors", layers) == 0 and _layer_of("xfer.train", layers) == 1
    assert _layer_of("xfer.bench.stream", [["xfer.bench*"]]) == 0


def test_only_the_kernels_python_face_touches_the_extension():
    """``xfer.preprocess`` is the C++ kernel's one door: no other module imports ``xfer._C``."""
    users = sorted(m for m, p in _modules().items()
                   if any(isinstance(n, ast.ImportFrom) and (n.module == "xfer._C" or (n.module == "xfer" and any(
                       a.name == "_C" for a in n.names))) for n in ast.walk(ast.parse(p.read_text()))))
    assert users == ["xfer.preprocess"]


def _literal_defaults() -> dict[object, list[str]]:
    """Numeric literals written as a default (argument default, dataclass field, ``default=``), by value."""
    found: dict[object, list[str]] = {}
    for p in PKG.rglob("*.py"):
        if "workers" in p.parts:  # runs in its own environment and imports nothing of xfer
            continue
        for n in ast.walk(ast.parse(p.read_text())):
            values: list[ast.expr] = []
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                values = n.args.defaults + [d for d in n.args.kw_defaults if d is not None]
            elif isinstance(n, ast.AnnAssign) and n.value is not None or isinstance(n, ast.keyword) and n.arg == "default":
                values = [n.value]
            for v in values:
                if (isinstance(v, ast.Constant) and isinstance(v.value, (int, float)) and not isinstance(v.value, bool)
                        and v.value not in (0, 1, -1)):
                    found.setdefault(v.value, []).append(f"{p.relative_to(PKG.parent)}:{v.lineno}")
    return found


def test_every_default_is_written_once():
    """A default value written as a literal in two places is two defaults that will drift apart: name it once."""
    assert {v: where for v, where in _literal_defaults().items() if len(where) > 1} == {}


def test_the_cli_takes_its_defaults_from_the_configs():
    cli = ast.parse((PKG / "cli.py").read_text())
    literal = [f"cli.py:{k.lineno}" for k in ast.walk(cli) if isinstance(k, ast.keyword) and k.arg == "default"
               and isinstance(k.value, (ast.Constant, ast.List)) and getattr(k.value, "value", "x") not in (None, False)]
    assert literal == []


def test_no_public_function_returns_a_bare_dict():
    """What crosses a stage is a record: a public function may return a typed mapping, never ``dict`` / ``dict[str, Any]``.

    ``JSONObject`` is the one named exception: a JSON object as such (a message across the process boundary,
    a settings fingerprint compared with one read back from a file), never a stage's result.
    """
    bare = []
    for p in PKG.rglob("*.py"):
        if "workers" in p.parts:
            continue
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.FunctionDef) and not n.name.startswith("_") and n.returns is not None:
                r = ast.unparse(n.returns).replace(" ", "")
                if r in ("dict", "Dict") or r.startswith(("dict[str,Any]", "dict[str,object]", "dict[Any")):
                    bare.append(f"{p.relative_to(PKG.parent)}:{n.lineno} {n.name} -> {r}")
    assert bare == []


def test_every_stage_main_returns_a_record():
    """``main`` of each stage hands the CLI a record (or nothing), so the CLI prints and the stage does not."""
    wrong = []
    for p in PKG.rglob("*.py"):
        for n in ast.parse(p.read_text()).body:
            if isinstance(n, ast.FunctionDef) and n.name == "main" and p.name != "cli.py" and "workers" not in p.parts:
                r = ast.unparse(n.returns) if n.returns is not None else "(none)"
                if "dict" in r or r == "(none)":
                    wrong.append(f"{p.relative_to(PKG.parent)}: main -> {r}")
    assert wrong == []


# Who may print: the CLI (what a command answers) and the progress interface (status lines on standard error).
# The MXNet worker is a separate process whose stdout is its protocol.
PRINTERS = {"xfer/cli.py", "xfer/progress.py"}


def test_only_the_cli_prints():
    found = []
    for p in PKG.rglob("*.py"):
        rel = str(p.relative_to(PKG.parent))
        if rel in PRINTERS or "workers" in p.parts:
            continue
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print":
                found.append(f"{rel}:{n.lineno}")
    assert found == []


# First-party imports inside functions hide arrows; the few allowed keep a heavy library out of a light command:
# the CLI loads a stage only when its command runs, ``xfer`` binds the torch-side API on first use, the kernel's
# Python face loads the extension (or XFER_C_LIBRARY's build), and ``xfer.importer`` (torch) is loaded where a
# torch-free command (bench, surgery) reaches it only on one optional path.
LAZY_IMPORTERS = {"xfer/cli.py", "xfer/__init__.py", "xfer/preprocess.py"}
LAZY_TARGETS = {"xfer.importer", "xfer.torch_source"}  # the torch side: a torch-free command reaches it on one path


def test_first_party_imports_sit_at_the_top():
    hidden = []
    for p in PKG.rglob("*.py"):
        rel = str(p.relative_to(PKG.parent))
        if rel in LAZY_IMPORTERS or "workers" in p.parts:
            continue
        for f in ast.walk(ast.parse(p.read_text())):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for n in ast.walk(f):
                mods = ([a.name for a in n.names] if isinstance(n, ast.Import)
                        else [("." * n.level) + (n.module or "")] if isinstance(n, ast.ImportFrom) else [])
                hidden += [f"{rel}:{n.lineno} {m}" for m in mods
                           if (m.startswith(("xfer", ".")) and m not in LAZY_TARGETS)]
    assert hidden == []


def test_the_torch_free_commands_stay_torch_free():
    """``xfer bench``, ``inspect`` and surgery run without importing torch (its import costs seconds and RSS)."""
    import subprocess
    import sys

    code = ("import sys, xfer.bench, xfer.surgery, xfer.inspect_model, xfer.report.console; "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
