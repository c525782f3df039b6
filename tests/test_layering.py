"""Imports run one way: cli/api/tasks → tracking → (pave, delivery) → config, models, db.

The outside world coming in (`pave/`) and going out (`delivery/`) never reaches back
into tracking's decisions, and the settings depend on no feature. Read from the source
with `ast`, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent.parent / "worker"

FORBIDDEN = {
    "worker/pave": ("worker.tracking", "worker.delivery"),
    "worker/delivery": ("worker.tracking",),
    "worker/config.py": ("worker.tracking", "worker.delivery", "worker.pave"),
}


def imported_modules(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def sources(where: str) -> list[Path]:
    path = WORKER.parent / where
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_imports_run_one_way(where: str) -> None:
    wrong = [
        f"{path.relative_to(WORKER.parent)} imports {module}"
        for path in sources(where)
        for module in imported_modules(path)
        if module.startswith(FORBIDDEN[where])
    ]
    assert wrong == []


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from worker.tracking.polling import x\n")
    assert "worker.tracking.polling" in imported_modules(module)


def exception_classes(path: Path) -> list[str]:
    """Classes defined in `path` whose bases are exceptions (by name)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(base) for base in node.bases]
            if any(base.endswith(("Error", "Exception")) for base in bases):
                found.append(node.name)
    return found


def test_every_public_exception_lives_in_errors() -> None:
    """One module draws the tree of what can go wrong (a private exception that never
    leaves its module may stay there)."""
    elsewhere = [f"{path.relative_to(WORKER.parent)}: {name}"
                 for path in sorted(WORKER.rglob("*.py")) if path.name != "errors.py"
                 for name in exception_classes(path) if not name.startswith("_")]
    assert elsewhere == []
