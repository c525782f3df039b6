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
    return modules_imported_by(path.read_text(encoding="utf-8"),
                               package=list(path.relative_to(WORKER.parent).parent.parts))


def modules_imported_by(source: str, *, package: list[str]) -> list[str]:
    """Every module `source` imports, a relative import resolved from `package`
    (["worker", "pave"] for worker/pave/m.py)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append(module)
            found += [f"{module}.{alias.name}" for alias in node.names]
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


def test_the_check_sees_imports_inside_functions_and_relative_ones() -> None:
    source = ("def f():\n    from worker.tracking.polling import x\n"
              "from ..delivery import outbox\nfrom . import client\n")
    found = modules_imported_by(source, package=["worker", "pave"])
    assert "worker.tracking.polling" in found
    assert "worker.delivery.outbox" in found and "worker.pave.client" in found


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
