"""The game pooled over seeds (`benchmarks.selfplay.seeds`), on hand-written game directories."""

from __future__ import annotations

import json

import pytest

from benchmarks.selfplay.seeds import Pooled, confirmed, load_games, main, pooled, seeds_table
from redteam_gym.metrics import newcombe_interval


def _eval(asr, **extra):
    base = {"def_p_unsafe": 0.1, "adv_p_unsafe": 0.02, "dist_2": 0.8, "self_bleu": 0.2}
    held = {"reward_mean": 0.0, "cvar_0.1": -0.5, "cvar_0.2": -0.3}
    return {"asr": asr, **base, **held, "refusal_rate": 0.0, "echo_rate": 0.1, **extra}


def write_game(root, seed, held_asrs, *, n=8, **config):
    """A game directory whose iteration k's held-out ASR is held_asrs[k] (over n
    conversations) and whose adversary's ASR vs current is k / n."""
    root.mkdir()
    (root / "game.json").write_text(json.dumps({"seed": seed, "eval_rollouts": n, **config}))
    rows = [
        {
            "iteration": k,
            "adversary": {
                "vs_current": _eval(k / n, dist_2=0.5 + k / 10),
                "vs_initial": _eval(0.0),
            },
            "defender": {"zero-shot": _eval(asr, **{"cvar_0.1": float(seed)})},
        }
        for k, asr in enumerate(held_asrs)
    ]
    (root / "iterations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_pooled_sums_successes_over_the_seeds(tmp_path):
    a = write_game(tmp_path / "s0", 0, [2 / 8, 0.0, 1 / 8])
    b = write_game(tmp_path / "s1", 1, [3 / 8, 1 / 8, 0.0])
    games = load_games([a, b])
    assert pooled(games, 0, "defender", "zero-shot").successes == 5
    assert pooled(games, 0, "defender", "zero-shot").n == 16
    assert pooled(games, 2, "adversary", "vs_current").successes == 4  # 2/8 in each seed
    text = "\n".join(seeds_table(games))
    assert "31.2% " in text and "(5/16)" in text and "(1/16)" in text
    # the claim's difference: iteration 2 (1/16) against iteration 0 (5/16), with Newcombe's
    lo, hi = newcombe_interval(1, 16, 5, 16)
    assert f"-25.0 points [{100 * lo:+.1f}, {100 * hi:+.1f}]" in text
    assert "0.500 at iteration 0" in text and "0.700 at iteration 2" in text
    # the per-seed CVaR (0 and 1) is averaged
    assert "| 0 | 31.2% [" in text and "| 0.5000 |" in text


def test_games_that_differ_are_refused(tmp_path):
    a = write_game(tmp_path / "s0", 0, [0.0, 0.0])
    b = write_game(tmp_path / "s1", 1, [0.0, 0.0], iterations=5)
    with pytest.raises(ValueError, match=r"differs .* in iterations"):
        load_games([a, b])
    c = write_game(tmp_path / "again", 0, [0.0, 0.0])
    with pytest.raises(ValueError, match="repeat a seed"):
        load_games([a, c])
    d = write_game(tmp_path / "short", 2, [0.0])
    with pytest.raises(ValueError, match="different numbers of finished iterations"):
        load_games([a, d])
    with pytest.raises(FileNotFoundError, match="not a game directory"):
        load_games([tmp_path])


def test_main_writes_the_table(tmp_path, capsys):
    a = write_game(tmp_path / "s0", 0, [1 / 8, 0.0])
    b = write_game(tmp_path / "s1", 1, [1 / 8, 0.0])
    out = tmp_path / "seeds.md"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    assert out.read_text() == capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(a), str(a)])


def test_audited_evaluations_add_confirmed_asr(tmp_path):
    games = [write_game(tmp_path / f"s{seed}", seed, [2 / 8, 1 / 8]) for seed in (0, 1)]
    assert "confirmed" in "\n".join(seeds_table(load_games(games)))
    assert "On confirmed ASR" not in "\n".join(seeds_table(load_games(games)))
    # the audits: iteration 0 has only adversary-vs-initial (the current defender is the initial one)
    for g, found in zip(games, ([1, 0, 1], [0, 0, 2]), strict=True):
        for name, k, n in [
            ("iter-00/eval/adversary-vs-initial", found[0], 8),
            ("iter-00/eval/defender-vs-zero-shot", found[0], 8),
            ("iter-01/eval/defender-vs-zero-shot", found[1], 8),
            ("iter-01/eval/adversary-vs-current", found[2], 8),
        ]:
            audit = g / name / "audit"
            audit.mkdir(parents=True)
            (audit / "audit.json").write_text(json.dumps({"num_confirmed": k, "num_rollouts": n}))
    loaded = load_games(games)
    assert confirmed(loaded, 0, "adversary-vs-current") == Pooled(1, 16)
    assert confirmed(loaded, 1, "adversary-vs-current") == Pooled(3, 16)
    assert confirmed(loaded, 1, "adversary-vs-initial") is None  # not audited
    text = "\n".join(seeds_table(loaded))
    assert "6.2% [1.1, 28.3] (1/16)" in text and "18.8% " in text
    lo, hi = newcombe_interval(0, 16, 1, 16)
    assert f"On confirmed ASR: -6.2 points [{100 * lo:+.1f}, {100 * hi:+.1f}]" in text
