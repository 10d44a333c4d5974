"""The code's import graph: no cycle between the engine's packages, nor between modules inside one,
and the audit library never imports the synthetic world (`synthetic`).

Imports are read from the source (module-level and lazy ones inside functions alike), so a cycle
that only closes when a function runs is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "synthetic", "dashboard")
# The command-line handlers of the synthetic product: the only engine modules that may import
# `synthetic`, and only inside a function (`cohort synth` / `cohort render`, `models
# train-ladder`, `demo`, `seeds` (the paper's claims on the demo over ladder seeds), `study`;
# engine.study is the `study` command's driver).
SYNTHETIC_ENTRY_POINTS = {"engine.cli.cohort", "engine.cli.stages", "engine.cli.study",
                          "engine.cli.demo", "engine.cli.seeds", "engine.study"}


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(root: Path, *tops: str, lazy: dict | None = None,
                    missing: list | None = None) -> dict[str, set[str]]:
    """Each module of the packages `tops` under `root` -> the modules of `tops` it imports.

    ``from a.b import c`` counts as importing module ``a.b.c`` when there is one, else ``a.b``;
    relative imports are resolved against the importing module's package. `lazy`, when given,
    gets each (module, target) imported only inside functions; `missing` each (module, name) of
    an import from `tops` that names no module there (a module moved away).
    """
    files = {_module_name(p, root): p for top in tops for p in (root / top).rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_function = {id(n) for f in ast.walk(tree)
                       if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                       for n in ast.walk(f) if n is not f}
        eager: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                if missing is not None and target.split(".")[0] in tops and target not in files:
                    missing.append((module, target))
                while target and target not in files:  # `import a.b.c` of a name in a.b
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges[module].add(target)
                    if id(node) not in in_function:
                        eager.add(target)
        if lazy is not None:
            lazy.update({(module, t): True for t in edges[module] - eager})
    return edges


def _unit(module: str) -> str:
    """The package or top-level module a module is part of: engine.embed.stage -> engine.embed."""
    return ".".join(module.split(".")[:2])


def _unit_imports(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, targets in modules.items():
        for target in targets:
            if _unit(target) != _unit(module) and "." in _unit(target):
                edges.setdefault(_unit(module), set()).add(_unit(target))
    return edges


def _inside(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """Only the imports between two modules of the same package (`_unit`)."""
    return {m: {t for t in ts if _unit(t) == _unit(m)} for m, ts in modules.items()}


def _cycles(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every pair of nodes that reach each other (both lie on one cycle)."""

    def reachable(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in edges.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    return sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in reachable(b)})


def test_cycle_finder_finds_cycles_and_only_cycles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert _cycles({"a": {"b"}, "b": {"c"}}) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_module_scan_sees_every_form_of_import_and_the_cycle_it_closes(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "from pkg.sub.maker import make\n",
        "pkg/sub/maker.py": "from pkg.sub import shapes\n\ndef make():\n    return shapes\n",
        # the cycle closes only when `size` runs (a lazy import, relative)
        "pkg/sub/shapes.py": "def size():\n    from .maker import make\n    return make\n",
        "pkg/sub/colours.py": "import pkg.sub.shapes\nfrom pkg.sub.shapes import size\n",
        "pkg/other.py": "from pkg.sub import make\nimport os\n",
    })
    modules = _module_imports(tmp_path, "pkg")
    assert modules["pkg.sub.maker"] == {"pkg.sub.shapes"}
    assert modules["pkg.sub.shapes"] == {"pkg.sub.maker"}
    assert modules["pkg.sub.colours"] == {"pkg.sub.shapes"}
    assert modules["pkg.other"] == {"pkg.sub"}  # a name from the package's __init__
    assert _cycles(_inside(modules)) == [("pkg.sub.maker", "pkg.sub.shapes")]
    missing: list = []
    (tmp_path / "pkg/late.py").write_text("def f():\n    from pkg.gone.mod import g\n"
                                         "    import pkg.sub.nothing\n", encoding="utf-8")
    _module_imports(tmp_path, "pkg", missing=missing)
    assert sorted(missing) == [("pkg.late", "pkg.gone.mod"), ("pkg.late", "pkg.sub.nothing")]
    assert _unit_imports(modules) == {"pkg.other": {"pkg.sub"}}
    # cut the lazy import and no cycle is left
    (tmp_path / "pkg/sub/shapes.py").write_text("def size():\n    return 1\n", encoding="utf-8")
    assert _cycles(_inside(_module_imports(tmp_path, "pkg"))) == []


def test_engine_packages_import_each_other_one_way():
    edges = _unit_imports(_module_imports(ROOT, "engine", "synthetic"))
    assert "engine.embed" in edges["synthetic.ladder"]  # the scan sees lazy imports too
    assert _cycles(edges) == []
    # the torch-free core depends on no other part of the engine
    assert edges.get("engine.core", set()) == set()


def _synthetic_imports(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """Each engine module that imports the synthetic package -> what it imports of it."""
    return {m: {t for t in ts if t.split(".")[0] == "synthetic"} for m, ts in modules.items()
            if m.split(".")[0] == "engine" and any(t.split(".")[0] == "synthetic" for t in ts)}


def _engine_reached_from_synthetic(modules: dict[str, set[str]]) -> set[str]:
    """The engine modules that synthetic imports, directly or through other engine modules."""
    seen: set[str] = set()
    stack = [t for m, ts in modules.items() if m.split(".")[0] == "synthetic" for t in ts]
    while stack:
        module = stack.pop()
        if module.split(".")[0] == "engine" and module not in seen:
            seen.add(module)
            stack.extend(modules.get(module, ()))
    return seen


def test_the_synthetic_checks_see_a_forbidden_import_and_an_import_back(tmp_path):
    _write(tmp_path, {
        "engine/__init__.py": "", "engine/cli/__init__.py": "", "engine/store.py": "",
        "engine/cli/demo.py": "def demo():\n    from synthetic.ladder import train\n",
        "engine/report.py": "import synthetic.cohort\n",  # the audit library must not
        "engine/embed.py": "from engine import store\nfrom engine.cli import demo\n",
        "synthetic/__init__.py": "", "synthetic/cohort.py": "",
        "synthetic/ladder.py": "from engine.embed import run\n",
    })
    lazy: dict = {}
    modules = _module_imports(tmp_path, "engine", "synthetic", lazy=lazy)
    assert _synthetic_imports(modules) == {"engine.cli.demo": {"synthetic.ladder"},
                                           "engine.report": {"synthetic.cohort"}}
    assert ("engine.cli.demo", "synthetic.ladder") in lazy
    assert ("engine.report", "synthetic.cohort") not in lazy
    # synthetic.ladder -> engine.embed -> engine.cli.demo -> synthetic: an import back
    reached = _engine_reached_from_synthetic(modules)
    assert reached == {"engine.embed", "engine.store", "engine.cli.demo"}
    assert reached & set(_synthetic_imports(modules)) == {"engine.cli.demo"}


def test_every_import_names_a_module_that_exists():
    """A lazy import of a module that has moved fails only when its function runs: found here."""
    missing: list = []
    _module_imports(ROOT, *PACKAGES, missing=missing)
    assert missing == []


def test_the_audit_library_never_imports_the_synthetic_package():
    lazy: dict = {}
    modules = _module_imports(ROOT, "engine", "synthetic", lazy=lazy)
    importers = _synthetic_imports(modules)
    assert "engine.cli.demo" in importers  # the scan finds the entry points' lazy imports
    assert set(importers) <= SYNTHETIC_ENTRY_POINTS, sorted(set(importers) - SYNTHETIC_ENTRY_POINTS)
    eager = sorted((m, t) for m, ts in importers.items() for t in ts if (m, t) not in lazy)
    assert eager == []  # only inside the handlers, so `import engine.cli` loads none of it
    # one way: no engine module that synthetic uses imports synthetic back
    reached = _engine_reached_from_synthetic(modules)
    assert "engine.embed.stage" in reached
    assert sorted(reached & set(importers)) == []


def test_no_import_cycle_between_the_modules_of_a_package():
    for top in PACKAGES:
        modules = _module_imports(ROOT, top)
        assert len(modules) > 5
        assert _cycles(_inside(modules)) == [], top
        assert _cycles(_unit_imports(modules)) == [], top
