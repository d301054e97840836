"""Side-by-side comparison of eval DIRs: one column per run, one row per metric.

Beside ASR, the reward audit's rows (`benchmarks.audit`) when any run has been audited.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.audit import AUDIT_METRICS, audit_cell, load_audit
from benchmarks.metric_specs import METRICS, best_index, format_metric

__all__ = ["compare", "load_summary"]

# Settings that must match for a comparison to be like for like.
_PROTOCOL = ("turns", "num_rollouts", "judge", "defender", "seed", "unsafe_threshold")


def load_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``summary.json`` of an eval DIR (``ValueError`` naming the DIR when missing)."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not an eval DIR: it has no summary.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _column_names(dirs: Sequence[Path], summaries: Sequence[dict[str, Any]]) -> list[str]:
    names = [p.name or str(p) for p in dirs]
    if len(set(names)) < len(names):  # same leaf name in different parents
        names = [str(p) for p in dirs]
    labels = []
    for n, s in zip(names, summaries, strict=True):
        adversary = s.get("adversary")
        labels.append(
            f"{n} ({adversary})" if isinstance(adversary, str) and adversary not in n else n
        )
    return labels


def compare(dirs: Sequence[str | os.PathLike[str]]) -> str:
    """A markdown table of the runs' metrics: arrows give the better direction, the best
    value per metric is bold, ASR carries its 95% Wilson interval. When any run has a reward
    audit (``audit/audit.json``), its audited precision and confirmed ASR follow ASR ("-" for
    runs without one). Notes follow when the runs differ in protocol (turns, conversations,
    judge, defender, seed)."""
    if not dirs:
        raise ValueError("compare needs at least one eval DIR")
    paths = [Path(d) for d in dirs]
    summaries = [load_summary(p) for p in paths]
    columns = _column_names(paths, summaries)
    audits = [load_audit(p) for p in paths]
    rows = []
    for spec in METRICS:
        values = [s.get(spec.key) for s in summaries]
        best = set(best_index(spec, values)) if len(summaries) > 1 else set()
        cells = []
        for i, s in enumerate(summaries):
            cell = format_metric(spec, values[i], s.get("asr_ci") if spec.key == "asr" else None)
            cells.append(f"**{cell}**" if i in best else cell)
        label = spec.header
        if spec.key == "return_cvar":
            alphas = {s.get("cvar_alpha") for s in summaries}
            label = label.replace("CVaR", f"CVaR{alphas.pop()}" if len(alphas) == 1 else "CVaR")
        rows.append([label, *cells])
        if spec.key == "asr" and any(audits):
            rows += [[a.header, *(audit_cell(a, r) for r in audits)] for a in AUDIT_METRICS]
    for key, label in (
        ("num_rollouts", "Conversations"),
        ("turns", "Turns"),
        ("rollouts_per_s", "Conversations / s"),
    ):
        rows.append(
            [label, *(_plain(s.get(key)) for s in summaries)],
        )
    header = ["Metric", *columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "|".join("---:" for _ in columns) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    notes = []
    for key in _PROTOCOL:
        seen = {json.dumps(s.get(key)) for s in summaries}
        if len(seen) > 1:
            notes.append(
                f"- runs differ in `{key}`: "
                + ", ".join(f"{c}={s.get(key)}" for c, s in zip(columns, summaries, strict=True))
            )
    text = "\n".join(lines)
    text += "\n\n↑/↓: better for the red team (seed paper, Table 1). Bold: best per metric.\n"
    if notes:
        text += "\nNot like for like:\n" + "\n".join(notes) + "\n"
    return text


def _plain(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
