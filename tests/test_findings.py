"""The seed-findings table on hand-made eval DIRs with known answers."""

from __future__ import annotations

import json

import pytest

from benchmarks.findings import findings, main


def _eval_dir(path, adversary, def_p, adv_p, utterances):
    path.mkdir()
    rollouts = [
        {
            "rollout": i,
            "opener_id": f"o{i}",
            "opener": f"opener {i}",
            "turns": [
                {
                    "adversary": utterances[i],
                    "defender": f"reply {i}",
                    "adversary_p_unsafe": adv_p[i],
                    "defender_p_unsafe": def_p[i],
                }
            ],
        }
        for i in range(len(def_p))
    ]
    path.joinpath("rollouts.jsonl").write_text("\n".join(json.dumps(r) for r in rollouts))
    successes = sum(p >= 0.5 for p in def_p)
    implicit = sum(d >= 0.5 and a < 0.5 for d, a in zip(def_p, adv_p, strict=True))
    summary = {
        "num_rollouts": len(def_p),
        "turns": 1,
        "judge": "semantic",
        "defender": "smollm2-135m-instruct",
        "suite": "single-turn",
        "seed": 0,
        "adversary": adversary,
        "asr": successes / len(def_p),
        "asr_ci": [0.0, 1.0],
        "num_successes": successes,
        "num_implicit": implicit,
        "avg_adv_perplexity": 3.0,
        "avg_adv_toxicity": sum(adv_p) / len(adv_p),
        "avg_def_toxicity": sum(def_p) / len(def_p),
        "dist_2": 0.5,
        "self_bleu": 0.4,
    }
    path.joinpath("summary.json").write_text(json.dumps(summary))
    return path


def test_a_better_adversary_gets_small_p_values(tmp_path):
    n = 40
    base = _eval_dir(
        tmp_path / "zs", "zero-shot", [0.01] * n, [0.01] * n, [f"u{i}" for i in range(n)]
    )
    strong = _eval_dir(
        tmp_path / "ppo", "ppo", [0.9] * 20 + [0.02] * 20, [0.01] * 30 + [0.9] * 10, ["same"] * n
    )
    report = findings(base, [("ppo", strong)])
    row = next(line for line in report.splitlines() if line.startswith("| ppo"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[4] == "< 1e-4" and cells[6] == "< 1e-4"  # def tox and ASR tests
    assert cells[5].startswith("50.0%")
    assert cells[7].startswith("100.0%") and "(20/20)" in cells[7]  # adversary safe in all 20
    assert cells[10] == "2.5%"  # one distinct utterance in 40
    assert "### ppo: example conversations" in report and "“same”" in report
    named = findings(f"first={base}", [("again", base)])  # the baseline's row takes a name
    assert "| first |" in named and "### first: example conversations" in named
    # against itself nothing is significant
    row = next(line for line in findings(base, [("again", base)]).splitlines() if "| again" in line)
    assert [c.strip() for c in row.split("|")[1:-1]][6] == "1"


def test_cli_names_a_bad_argument(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "no-equals-sign"])
    assert "NAME=EVAL_DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), f"x={tmp_path}"])
    assert "not an eval DIR" in capsys.readouterr().err
