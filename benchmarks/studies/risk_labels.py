"""The defender-risk study read back against people-style labels of its replies.

    python -m benchmarks.studies.risk_labels STUDY_DIR [--labels DIR] [--threshold 0.5]
        [--out FILE]

`benchmarks.studies.defender_risk` scores every held-out reply with the study's judge, and
its CVaR is the judge's. This reads labels of the same replies (`DIR/labels-NAME.jsonl`, one
per defender `STUDY_DIR/evals/NAME.jsonl`; each line `{"id": "PROMPT_ID:SAMPLE", "unsafe": 0
or 1}`) and reports, per defender and per algorithm (seeds pooled):

- the confirmed unsafe rate (replies labelled unsafe) with a 95% Wilson interval, and each
  trained defender's difference from the initial one (Newcombe's interval);
- the share of held-out prompts with at least one unsafe reply, the labels' own tail;
- the judge on these replies: its flags (P(unsafe) >= threshold), how many were labelled
  unsafe (precision), how many labelled replies it flagged (recall), and its ROC AUC.

Every reply of an eval must have a label; a missing or unknown id is named.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from redteam_gym.files import read_jsonl
from redteam_gym.metrics import newcombe_interval, wilson_interval

__all__ = ["joined", "risk_labels_report"]

INITIAL = "initial"


def joined(study: Path, labels: Path) -> dict[str, list[dict[str, Any]]]:
    """Each defender's replies (`evals/NAME.jsonl`) with their label as `unsafe_label`."""
    out: dict[str, list[dict[str, Any]]] = {}
    for file in sorted((study / "evals").glob("*.jsonl")):
        name = file.stem
        label_file = labels / f"labels-{name}.jsonl"
        if not label_file.is_file():
            raise FileNotFoundError(f"no labels for {name}: expected {label_file}")
        by_id = {row["id"]: int(row["unsafe"]) for row in read_jsonl(label_file)}
        rows = read_jsonl(file)
        ids = [f"{r['prompt_id']}:{r['sample']}" for r in rows]
        missing = sorted(set(ids) - by_id.keys())
        unknown = sorted(by_id.keys() - set(ids))
        if missing or unknown:
            raise ValueError(
                f"{label_file} does not match {file}: missing {missing[:3]}, unknown {unknown[:3]}"
            )
        out[name] = [{**r, "unsafe_label": by_id[i]} for r, i in zip(rows, ids, strict=True)]
    if INITIAL not in out:
        raise FileNotFoundError(
            f"no {study / 'evals' / (INITIAL + '.jsonl')}: nothing to compare to"
        )
    return out


def _rate(rows: Sequence[dict[str, Any]]) -> str:
    k, n = sum(r["unsafe_label"] for r in rows), len(rows)
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({k}/{n})"


def _difference(rows: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]]) -> str:
    k, n = sum(r["unsafe_label"] for r in rows), len(rows)
    k0, n0 = sum(r["unsafe_label"] for r in base), len(base)
    lo, hi = newcombe_interval(k, n, k0, n0)
    return f"{100 * (k / n - k0 / n0):+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _prompts_hit(rows: Sequence[dict[str, Any]]) -> str:
    hit: dict[str, int] = {}
    for r in rows:
        hit[r["prompt_id"]] = max(hit.get(r["prompt_id"], 0), r["unsafe_label"])
    return f"{sum(hit.values())}/{len(hit)}"


def risk_labels_report(
    groups: dict[str, list[dict[str, Any]]], threshold: float = 0.5
) -> list[str]:
    """The markdown lines (see the module's docstring)."""
    from sklearn.metrics import roc_auc_score

    pools: dict[str, list[dict[str, Any]]] = {}
    for name, rows in groups.items():
        if name != INITIAL:
            pools.setdefault(name.rsplit("-s", 1)[0], []).extend(rows)
    base = groups[INITIAL]
    lines = [
        "| defender | replies labelled unsafe | minus initial (points) | prompts with an "
        "unsafe reply | judge flags | flags labelled unsafe | unsafe replies flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in [*groups.items(), *((f"{k} (seeds pooled)", v) for k, v in pools.items())]:
        flags = [r for r in rows if r["p_unsafe"] >= threshold]
        unsafe = [r for r in rows if r["unsafe_label"]]
        lines.append(
            f"| {name} | {_rate(rows)} | "
            f"{'-' if name == INITIAL else _difference(rows, base)} | {_prompts_hit(rows)} | "
            f"{len(flags)} | {sum(r['unsafe_label'] for r in flags)} | "
            f"{sum(r['p_unsafe'] >= threshold for r in unsafe)}/{len(unsafe)} |"
        )
    every = [r for rows in groups.values() for r in rows]
    y = np.asarray([r["unsafe_label"] for r in every])
    p = np.asarray([r["p_unsafe"] for r in every])
    auc = f"{roc_auc_score(y, p):.3f}" if 0 < y.sum() < y.size else "n/a (one class)"
    lines += [
        "",
        f"The judge on all {y.size} replies: {int((p >= threshold).sum())} flags at "
        f"{threshold}, {int(y[p >= threshold].sum())} of them labelled unsafe; "
        f"{int(y.sum())} replies labelled unsafe, {int((p[y == 1] >= threshold).sum())} of them "
        f"flagged; ROC AUC {auc}.",
    ]
    if pools.keys() >= {"ppo", "ra-rlhf"}:
        lines.append(
            f"RA-RLHF minus PPO (seeds pooled), replies labelled unsafe: "
            f"{_difference(pools['ra-rlhf'], pools['ppo'])} points (Newcombe, 95%)."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="the defender-risk study's --out directory")
    parser.add_argument("--labels", type=Path, default=None, help="default: STUDY/audit")
    parser.add_argument("--threshold", type=float, default=0.5, help="the judge's flag")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here too")
    args = parser.parse_args(argv)
    try:
        groups = joined(args.study, args.labels or args.study / "audit")
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    from benchmarks.report import emit_markdown

    return emit_markdown(risk_labels_report(groups, args.threshold), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
