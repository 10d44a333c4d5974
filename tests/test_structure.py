"""The engine's packages depend on each other one way: no import cycle between them."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"


def _unit(module: str) -> str:
    """The package or top-level module a module is part of: engine.embed.stage -> engine.embed."""
    return ".".join(module.split(".")[:2])


def _imports() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in ENGINE.rglob("*.py"):
        parts = path.relative_to(ENGINE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = ([f"engine.{a.name}" for a in node.names] if node.module == "engine"
                         else [node.module])
            else:
                continue
            for name in names:
                if name.startswith("engine.") and _unit(name) != _unit(module):
                    edges.setdefault(_unit(module), set()).add(_unit(name))
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
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


def test_engine_packages_import_each_other_one_way():
    edges = _imports()
    assert "engine.embed" in edges["engine.phantom"]  # the scan sees lazy imports too
    assert _cycles(edges) == []
    # the torch-free core depends on no other part of the engine
    assert edges.get("engine.core", set()) == set()
