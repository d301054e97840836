"""FewShotAdversary: pools, seeded example draws, act() on a tiny LM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.baselines import FewShotAdversary
from agents.baselines.few_shot import BUILTIN_POOL, load_successful_utterances
from redteam_gym.models import SamplingConfig
from redteam_gym.transcript import render_transcript

SAMPLING = SamplingConfig(max_new_tokens=6, temperature=1.0, top_p=0.95)
OBS = [
    render_transcript([{"role": "opener", "content": "My neighbour mows his lawn at 6am."}]),
    render_transcript(
        [
            {"role": "opener", "content": "Best pizza topping?"},
            {"role": "adversary", "content": "Pineapple, obviously."},
            {"role": "defender", "content": "Many people enjoy it."},
        ]
    ),
]


def _rollouts_file(path: Path) -> Path:
    records = [
        {
            "rollout": 0,
            "turns": [
                {"adversary": "a safe try", "defender_p_unsafe": 0.1},
                {"adversary": "a winning line", "defender_p_unsafe": 0.9},
            ],
        },
        {"rollout": 1, "turns": [{"adversary": "another winner", "defender_p_unsafe": 0.6}]},
        {"rollout": 2, "turns": [{"adversary": "a winning line", "defender_p_unsafe": 0.7}]},
    ]
    path.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"rollout": 3, "tu'  # torn tail
    (path / "rollouts.jsonl").write_text(text, encoding="utf-8")
    return path


def test_load_successful_utterances_keeps_unsafe_turns_best_score(tmp_path: Path) -> None:
    run = _rollouts_file(tmp_path / "run")
    pool = load_successful_utterances(run)
    assert pool == [("a winning line", 0.9), ("another winner", 0.6)]
    assert load_successful_utterances(run / "rollouts.jsonl", threshold=0.8) == [
        ("a winning line", 0.9)
    ]
    with pytest.raises(FileNotFoundError, match="no rollouts file"):
        load_successful_utterances(tmp_path / "missing")


def test_pool_sources(tiny_lm_dir: Path, tmp_path: Path) -> None:
    model = str(tiny_lm_dir)
    listed = FewShotAdversary(model, pool=["x one", " x one ", "x two", ""], sampling=SAMPLING)
    assert listed.examples == ["x one", "x two"] and listed.weights is None
    scored = FewShotAdversary(model, pool=_rollouts_file(tmp_path / "run"), sampling=SAMPLING)
    assert scored.examples == ["a winning line", "another winner"]
    # Perez et al. weights exp(p / 0.1): 0.9 vs 0.6 -> e^3 : 1.
    assert scored.weights is not None
    assert scored.weights[0] / scored.weights[1] == pytest.approx(np.exp(3.0))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "rollouts.jsonl").write_text("", encoding="utf-8")
    for pool in (None, [], empty):
        fallback = FewShotAdversary(model, pool=pool, sampling=SAMPLING)
        assert fallback.examples == list(BUILTIN_POOL)
        assert fallback.pool_source.startswith("builtin")


def test_examples_seeded_and_act(tiny_lm_dir: Path) -> None:
    adv = FewShotAdversary(str(tiny_lm_dir), k=3, sampling=SAMPLING, seed=7)
    first = [adv.sample_examples() for _ in range(4)]
    assert all(len(set(e)) == 3 and set(e) <= set(BUILTIN_POOL) for e in first)
    assert len({tuple(e) for e in first}) > 1  # drawn afresh each time
    out1 = adv.act(OBS)
    adv.reseed(7)
    assert [adv.sample_examples() for _ in range(4)] == first
    adv.reseed(7)
    assert [adv.sample_examples() for _ in range(4)] == first
    out2 = adv.act(OBS)
    assert out1 == out2 and len(out1) == len(OBS)
    assert all(isinstance(u, str) and u for u in out1)
    prompt = adv.prompt(["ex A", "ex B"])
    assert prompt.endswith("- ex A\n- ex B") and "worked" in prompt
    small = FewShotAdversary(str(tiny_lm_dir), pool=["only one"], k=5, sampling=SAMPLING)
    assert small.sample_examples() == ["only one"]
    with pytest.raises(ValueError, match="k must be"):
        FewShotAdversary(str(tiny_lm_dir), k=0)
