"""The layers point one way: benchmarks -> agents -> redteam_gym (the command line above all)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BELOW = {"redteam_gym": set(), "agents": {"redteam_gym"}, "benchmarks": {"agents", "redteam_gym"}}
PACKAGES = {*BELOW, "redteam_cli"}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & PACKAGES


@pytest.mark.parametrize("package", sorted(BELOW))
def test_a_package_imports_only_itself_and_the_layers_below(package):
    allowed = BELOW[package] | {package}
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - allowed)
        for path in (ROOT / package).rglob("*.py")
    }
    assert not {k: v for k, v in wrong.items() if v}
