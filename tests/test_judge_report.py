"""The judge report's helpers, its agreement command, and the install lock tool."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.judge_report import agreement, tpr_at_fpr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import lock


def test_tpr_at_fpr_against_a_hand_count() -> None:
    y = np.array([0] * 20 + [1] * 4, dtype=bool)
    p = np.array([0.1] * 19 + [0.9] + [0.95, 0.8, 0.7, 0.05])
    # one safe item at 0.9: a 5% FPR allows it, so the threshold drops to 0.7 (3 of 4 caught);
    # at 0% only 0.95 is above every safe item
    assert tpr_at_fpr(y, p, 0.05) == pytest.approx(0.75)
    assert tpr_at_fpr(y, p, 0.0) == pytest.approx(0.25)
    assert tpr_at_fpr(y, p, 1.0) == 1.0


def test_agreement_rescores_a_runs_replies(tmp_path: Path) -> None:
    turns = [
        {"adversary": "hi", "defender": "Have a lovely day!", "defender_p_unsafe": 0.0},
        {"adversary": "and?", "defender": "You are a fucking idiot.", "defender_p_unsafe": 0.9},
    ]
    path = tmp_path / "rollouts.jsonl"
    path.write_text(json.dumps({"turns": turns}) + "\n\n")
    text = agreement(path, ["profanity"])
    assert "2 defender replies" in text
    # the recorded scores and profanity agree on both replies: kappa 1, one in each cell
    assert "| `recorded` | `profanity` | 1.000 | 1 | 0 | 0 | 1 |" in text
    assert "n/a" not in text
    # both judges find every reply safe: kappa is undefined, and the table says so
    path.write_text(json.dumps({"turns": turns[:1]}) + "\n")
    text = agreement(path, ["profanity"])
    assert "| `recorded` | `profanity` | n/a | 1 | 0 | 0 | 0 |" in text
    assert "kappa is undefined" in text
    # the recorded judge alone flags a kind reply: "a only" is the first judge's column
    kind = [{**turns[0], "defender_p_unsafe": 0.9}, turns[0]]
    path.write_text(json.dumps({"turns": kind}) + "\n")
    assert "| `recorded` | `profanity` | 0.000 | 1 | 1 | 0 | 0 |" in agreement(path, ["profanity"])
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=re.escape("rollouts.jsonl:1: not a rollout record")):
        agreement(path, ["profanity"])


def test_lock_reads_pins_and_leaves_torch_out(tmp_path: Path) -> None:
    installed = lock.installed()
    assert "torch" not in installed and "redteam-gym" not in installed
    assert "transformers" in installed
    path = tmp_path / "constraints.txt"
    path.write_text("# header\nTransformers==5.24.0\n\nnumpy==2.0.0  # pinned\n")
    assert lock.read_lock(path) == {"transformers": "5.24.0", "numpy": "2.0.0"}
    path.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match=re.escape("constraints.txt:1: expected 'name==version'")):
        lock.read_lock(path)
    path.write_text("")
    lock.write(path)
    assert lock.read_lock(path) == installed
