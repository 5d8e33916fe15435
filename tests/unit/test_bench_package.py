"""bench/ is a package with one import style: `bench.<module>`, no sys.path edits, run as `python -m bench.<module>`."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


def _tree(module: str) -> ast.Module:
    return ast.parse((BENCH / f"{module}.py").read_text(encoding="utf-8"))


def test_bench__is_a_package() -> None:
    """bench/__init__.py exists, so every module is importable as bench.<module>."""
    assert (BENCH / "__init__.py").is_file()
    assert {"run", "audience", "measure", "dispatch", "daemon_scale", "fake_vendor"} <= set(MODULES)


def test_bench__siblings_imported_as_bench_modules_and_sys_path_untouched() -> None:
    """No module imports a sibling by its bare name or edits sys.path, and none starts a child by file path."""
    bare, path_edits, by_file = [], [], []
    for module in MODULES:
        for node in ast.walk(_tree(module)):
            if isinstance(node, ast.Import):
                bare += [f"{module}: import {a.name}" for a in node.names if a.name.split(".")[0] in MODULES]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] in MODULES:
                    bare.append(f"{module}: from {node.module}")
            elif isinstance(node, ast.Attribute) and node.attr == "path" and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                path_edits.append(module)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    any(node.value == f"{m}.py" for m in MODULES):
                by_file.append(f"{module}: {node.value}")
    assert (bare, path_edits, by_file) == ([], [], [])
