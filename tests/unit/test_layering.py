"""Dependencies point one way: a walk over every import in engine/ and channels/.

The stages a touch flows through, lowest first. A module imports from its own stage or
below, never above; the grammar and the adapters have narrower allowances; nothing imports
the CLI; no two modules import each other, however indirectly.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: (stage, the module prefixes it may import besides its own stage)
BASE = ("engine.errors", "engine.clock", "engine.logs")
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("engine.errors", ()),
    ("engine.clock", ("engine.errors",)),
    ("engine.logs", ()),
    ("engine.grammar", ("engine.errors", "engine.clock")),
    ("channels", ("engine.grammar", *BASE)),
    ("engine.config", ("engine.grammar", "channels", *BASE)),
    ("engine.store", ("engine.grammar", *BASE)),
    ("engine.ledger", ("engine.store", "engine.grammar", *BASE)),
    ("engine.decide", ("engine.ledger", "engine.store", "engine.grammar", *BASE)),
    ("engine.run", ("engine.decide", "engine.ledger", "engine.store", "engine.config", "engine.grammar",
                    "channels", *BASE)),
    ("engine.cli", ("engine", "channels")),
    ("engine.__main__", ("engine.cli",)),
    ("engine.examples", ()),  # the bundled example playbooks and config: files, no imports
    ("engine", ()),  # engine/__init__.py: the version only
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("engine", "channels"):
        for path in (ROOT / top).rglob("*.py"):
            if "migrations" in path.parts and "versions" in path.parts:
                continue  # Alembic revisions are data (each a frozen copy of the schema at its time)
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _stage(module: str) -> tuple[str, tuple[str, ...]]:
    for stage, allowed in STAGES:
        if _within(module, stage):
            return stage, allowed
    raise AssertionError(f"{module} belongs to no stage: add it to STAGES in {__file__}")


def imports(module: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import of engine/ or channels/ in `module`, at any depth."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else base


def _ours(name: str) -> bool:
    return _within(name, "engine") or _within(name, "channels")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_stages(module: str) -> None:
    stage, allowed = _stage(module)
    wrong = [f"{MODULES[module].relative_to(ROOT)}:{line}: {stage} may not import {name}"
             for line, name in imports(module)
             if _ours(name) and not _within(name, stage) and not any(_within(name, a) for a in allowed)]
    assert wrong == []


def test_nothing_imports_the_cli() -> None:
    users = [m for m in MODULES if m not in ("engine.cli", "engine.__main__")
             for _, name in imports(m) if _within(name, "engine.cli")]
    assert users == []


def test_no_module_imports_itself_through_others() -> None:
    graph = {m: {n for _, n in imports(m) if n in MODULES and n != m} for m in MODULES}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == []


def test_the_walk_sees_the_imports_it_checks() -> None:
    """Guard against a walk that finds nothing: known edges are found."""
    assert (any(n == "engine.ledger" for _, n in imports("engine.run.dispatch"))
            and any(n == "engine.grammar.playbook" for _, n in imports("engine.decide.compiler")))
