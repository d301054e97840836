"""The docs name only what exists: modules, their names and repository files.

Every dotted name that starts with one of the project's packages (`redteam_gym.envs.core`,
`benchmarks.records.read_rollouts`), every backticked repository path (`agents/common/risk.py`,
`benchmarks/suites/*.json`) and every relative markdown link in README.md, benchmarks/README.md
and docs/*.md must resolve. A dotted name resolves when its longest prefix is a module of the
repository and the next part, if any, is defined or imported at that module's top level.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("redteam_gym", "agents", "benchmarks", "redteam_cli", "tests")
DOCS = sorted(
    [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")]
)

ENTRY_POINT_GROUPS = frozenset(
    tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["entry-points"]
)
"""Dotted names that are entry-point groups (`redteam_gym.adversaries`), not modules."""

DOTTED = re.compile(rf"(?<![\w./-])((?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# a repository path: starts with a top-level directory or file of the repository
PATH = re.compile(r"(?<![\w./-])((?:[\w.-]+/)+[\w.*-]*|[\w-]+\.(?:py|md|toml|txt|json|jsonl))")
OUTPUT_FLAG = re.compile(r"--out\s+\S+")


def module_file(dotted: str) -> Path | None:
    path = ROOT.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def top_level_names(file: Path) -> frozenset[str]:
    names: set[str] = set()
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return frozenset(names)


def dotted_problem(dotted: str) -> str | None:
    if dotted in ENTRY_POINT_GROUPS:
        return None
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        file = module_file(".".join(parts[:end]))
        if file is None:
            continue
        if end == len(parts) or parts[end] in top_level_names(file):
            return None
        if (file.parent / parts[end]).is_dir() or file.with_name(f"{parts[end]}.py").exists():
            return None
        return f"{dotted}: {'.'.join(parts[:end])} has no {parts[end]!r}"
    return f"{dotted}: no such module"


def path_problem(token: str) -> str | None:
    first = token.split("/")[0]
    if not (ROOT / first).exists():
        return None  # not a repository path (an eval DIR's `plots/*.png`, a run's `RUN/`)
    target = token.rstrip("/")
    if any(ch in target for ch in "*?["):
        return None if list(ROOT.glob(target)) else f"{token}: matches nothing"
    return None if (ROOT / target).exists() else f"{token}: no such file or directory"


def problems(text: str, where: Path) -> list[str]:
    """What `text` (a markdown file at `where`) names that does not exist."""
    found = [p for name in DOTTED.findall(text) if (p := dotted_problem(name.rstrip(".")))]
    prose = FENCE.sub("", text)
    for code in INLINE_CODE.findall(prose):
        for token in PATH.findall(OUTPUT_FLAG.sub("", code)):
            if problem := path_problem(token):
                found.append(problem)
    for link in LINK.findall(prose):
        if re.match(r"[a-z]+:|#", link):
            continue
        target = (where.parent / link.split("#")[0]).resolve()
        if not target.exists():
            found.append(f"link {link}: no such file")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_name_in_the_docs_exists(doc: Path) -> None:
    assert problems(doc.read_text(encoding="utf-8"), doc) == []


def test_the_check_finds_what_is_missing() -> None:
    text = (
        "`redteam_gym.envs.core.parse_observation` lives in `redteam_gym.transcript`;\n"
        "see `redteam_gym.no_such_module`, `agents/common/nothing.py`, `tests/*.nothing`\n"
        "and [the guide](docs/missing.md); `plots/*.png` of an eval DIR is not ours.\n"
    )
    assert problems(text, ROOT / "README.md") == [
        "redteam_gym.envs.core.parse_observation: redteam_gym.envs.core has no 'parse_observation'",
        "redteam_gym.no_such_module: redteam_gym has no 'no_such_module'",
        "agents/common/nothing.py: no such file or directory",
        "tests/*.nothing: matches nothing",
        "link docs/missing.md: no such file",
    ]
