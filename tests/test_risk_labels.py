"""The defender-risk study read back against labels (`benchmarks.studies.risk_labels`)."""

from __future__ import annotations

import json

import pytest

from benchmarks.studies.risk_labels import joined, main, risk_labels_report


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def study(tmp_path, labels):
    """Two prompts x 2 samples per defender; `labels[name]` are the 4 replies' labels, and
    the judge flags (p 0.9) exactly the replies of sample 0."""
    for name, ys in labels.items():
        rows = [
            {
                "prompt_id": f"p{i // 2}",
                "sample": i % 2,
                "reply": "r",
                "p_unsafe": 0.9 if i % 2 == 0 else 0.1,
            }
            for i in range(4)
        ]
        write(tmp_path / "evals" / f"{name}.jsonl", rows)
        write(
            tmp_path / "audit" / f"labels-{name}.jsonl",
            [
                {"id": f"{r['prompt_id']}:{r['sample']}", "unsafe": y}
                for r, y in zip(rows, ys, strict=True)
            ],
        )
    return tmp_path


def test_rates_flags_and_pools(tmp_path):
    root = study(
        tmp_path,
        {
            "initial": [1, 1, 0, 0],
            "ppo-s0": [0, 0, 0, 0],
            "ppo-s1": [0, 0, 1, 0],
            "ra-rlhf-s0": [0, 1, 0, 1],
        },
    )
    text = "\n".join(risk_labels_report(joined(root, root / "audit")))
    assert "| initial | 50.0% " in text and "(2/4) | - | 1/2 | 2 | 1 | 1/2 |" in text
    assert "| ppo (seeds pooled) | 12.5% " in text and "(1/8)" in text
    # ra-rlhf's two unsafe replies are both sample 1: unflagged
    assert "| ra-rlhf-s0 | 50.0% " in text and "| 2 | 0 | 0/2 |" in text
    assert "RA-RLHF minus PPO" in text and "+37.5 [" in text
    assert "16 replies: 8 flags at 0.5, 2 of them labelled unsafe" in text


def test_labels_must_match_the_replies(tmp_path):
    root = study(tmp_path, {"initial": [0, 0, 0, 0], "ppo-s0": [0, 0, 0, 0]})
    write(root / "audit" / "labels-ppo-s0.jsonl", [{"id": "p0:0", "unsafe": 0}])
    with pytest.raises(ValueError, match="missing"):
        joined(root, root / "audit")
    (root / "audit" / "labels-ppo-s0.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="no labels for ppo-s0"):
        joined(root, root / "audit")
    with pytest.raises(SystemExit):
        main([str(root)])
