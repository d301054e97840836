"""The study comparing a defender's weights (`benchmarks.studies.defender_weights`) on
hand-written eval DIRs: its counts, intervals and same-seed agreement against direct ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.studies.defender_weights import (
    Eval,
    bootstrap_mean_difference,
    identical_turns,
    main,
    report,
)
from redteam_gym.metrics import newcombe_interval


def write_eval(path: Path, seed: int, replies: list[list[tuple[str, float]]], **env: str) -> Path:
    """An eval DIR: one conversation per entry of `replies`, each turn (reply, P(unsafe))."""
    path.mkdir()
    rollouts = [
        {
            "rollout": i,
            "opener_id": f"o{i}",
            "turns": [
                {
                    "adversary": f"a{i}{t}",
                    "defender": text,
                    "defender_p_unsafe": p,
                    "defender_unsafe": p >= 0.5,
                }
                for t, (text, p) in enumerate(turns)
            ],
        }
        for i, turns in enumerate(replies)
    ]
    (path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    summary = {
        "suite": "s",
        "turns": 2,
        "adversary": "zero-shot",
        "seed": seed,
        "settings": {"env": env},
        "rollouts_per_s": 0.5,
    }
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_bootstrap_interval_holds_the_difference_of_means() -> None:
    a, b = np.array([0.1, 0.2, 0.3, 0.6]), np.array([0.1, 0.1, 0.2])
    diff, lo, hi = bootstrap_mean_difference(a, b)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert lo < diff < hi
    same = bootstrap_mean_difference(a, a)
    assert same[0] == 0 and same[1] < 0 < same[2]


def test_report_counts_successes_and_where_same_seed_runs_part(tmp_path: Path) -> None:
    ref = write_eval(tmp_path / "ref", 0, [[("x", 0.9), ("y", 0.1)], [("z", 0.1), ("w", 0.2)]])
    ref1 = write_eval(tmp_path / "ref1", 1, [[("x", 0.1), ("y", 0.1)], [("z", 0.1), ("w", 0.2)]])
    cand = write_eval(
        tmp_path / "cand",
        0,
        [[("x", 0.9), ("other", 0.1)], [("q", 0.7), ("w", 0.2)]],
        defender_weights="int4",
    )
    r, r1, c = Eval.load(ref), Eval.load(ref1), Eval.load(cand)
    assert (r.successes, r1.successes, c.successes) == (1, 0, 2)
    assert identical_turns(r, c) == [1, 0]
    assert c.weights.startswith("int4") and r.weights.startswith("dense")
    text = "\n".join(report([r, r1], [c], ("dense", "int4")))
    lo, hi = newcombe_interval(2, 2, 1, 4)
    assert f"+75.0 points [{100 * lo:+.1f}, {100 * hi:+.1f}] (2/2 vs 1/4)" in text
    assert "(the noise floor)" in text
    assert "| 0 | 2 | 1 | 0 |" in text  # seed 0: one conversation same at turn 1, none at 2
    out = tmp_path / "report.md"
    assert main(["--reference", str(ref), "--candidate", str(cand), "--out", str(out)]) == 0
    assert "int4 - dense (pooled)" in out.read_text()


def test_report_refuses_evals_of_different_protocols(tmp_path: Path) -> None:
    a = write_eval(tmp_path / "a", 0, [[("x", 0.1)]])
    b = write_eval(tmp_path / "b", 0, [[("x", 0.1)]])
    summary = json.loads((b / "summary.json").read_text())
    (b / "summary.json").write_text(json.dumps({**summary, "turns": 5}))
    with pytest.raises(ValueError, match="do not share one suite"):
        report([Eval.load(a)], [Eval.load(b)], ("dense", "int4"))
