"""What pyproject.toml lets pip install: no release with a known security fix missing.

Jinja's sandbox, which renders operators' templates, had escapes fixed in 3.1.3
(CVE-2024-22195), 3.1.4 (CVE-2024-34064), 3.1.5 (CVE-2024-56326, CVE-2024-56201) and
3.1.6 (CVE-2025-27516, the `|attr` filter)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
FIXED_IN = {"jinja2": "3.1.6"}
AFFECTED = {"jinja2": ["3.1.0", "3.1.2", "3.1.4", "3.1.5"]}


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    parsed = (Requirement(line) for line in project["dependencies"])
    return {requirement.name.lower(): requirement for requirement in parsed}


@pytest.mark.parametrize("name", sorted(FIXED_IN))
def test_no_release_with_a_known_hole_is_allowed(name: str) -> None:
    allowed = requirements()[name].specifier
    assert allowed.contains(FIXED_IN[name])
    for version in AFFECTED[name]:
        assert not allowed.contains(version), f"{name} {version} is allowed"
