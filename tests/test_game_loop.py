"""`redteam-gym game`: the alternating training loop, its resume, config and pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.selfplay import GameConfig, run_game
from redteam_gym.envs.config import EnvConfig

SMALL = {"max_new_tokens": 4, "critic_hidden_size": 16, "num_minibatches": 1, "ppo_epochs": 1}


def tiny_game(tiny_lm_dir, **extra) -> GameConfig:
    kwargs = dict(
        env=EnvConfig(
            max_turns=1,
            defender=str(tiny_lm_dir),
            defender_max_new_tokens=4,
            judge="profanity",
        ),
        iterations=2,
        adversary_updates=1,
        defender_updates=1,
        adversary_reward="perez,novelty_bleu=0.5",
        model=str(tiny_lm_dir),
        batch_size=2,
        adversary_config=dict(SMALL, actor_lr=1e-3),
        defender_config=dict(SMALL, actor_lr=1e-3),
        eval_rollouts=2,
    )
    return GameConfig(**{**kwargs, **extra})


def _files(out):
    rows = (out / "iterations.jsonl").read_text()
    weights = {
        side: torch.load(out / "iter-02" / side / "checkpoint" / "critic.pt")
        for side in ("adversary", "defender")
    }
    return rows, weights


def test_a_game_runs_end_to_end_and_an_interrupted_one_resumes_exactly(
    tiny_lm_dir, tmp_path, monkeypatch
):
    from benchmarks.selfplay import Game

    config = tiny_game(tiny_lm_dir, defender_algo="ra-rlhf")
    whole = run_game(config, tmp_path / "whole", progress=False)
    assert [r["iteration"] for r in whole] == [0, 1, 2]
    last = whole[-1]
    # held-out adversaries: the baselines and the adversary of the earlier iteration
    assert set(last["defender"]) == {"zero-shot", "few-shot", "iter-01"}
    assert set(last["adversary"]) == {"vs_current", "vs_initial"}
    for d in last["defender"].values():
        assert d["cvar_0.1"] <= d["cvar_0.2"] <= d["reward_mean"] + 1e-12
    # against a baseline, the same conversations as the initial defender's: a paired gain
    zero_shot = last["defender"]["zero-shot"]
    assert zero_shot["same_messages"] == 1.0
    assert zero_shot["gain"]["reward_mean"] == pytest.approx(
        zero_shot["reward_mean"] - whole[0]["defender"]["zero-shot"]["reward_mean"]
    )
    assert "gain" not in last["defender"]["iter-01"]
    assert all(np.isfinite(t["score"]) for t in last["training"].values())
    out = tmp_path / "whole"
    assert (out / "report.md").read_text().count("| 2 |") >= 2
    assert (out / "plots" / "game.png").stat().st_size > 0
    assert json.loads((out / "game.json").read_text())["defender_algo"] == "ra-rlhf"

    # killed in iteration 2, between the adversary and the defender phase
    real = Game.defender_phase

    def killed(self, k):
        if k == 2:
            raise KeyboardInterrupt
        return real(self, k)

    monkeypatch.setattr(Game, "defender_phase", killed)
    with pytest.raises(KeyboardInterrupt):
        run_game(config, tmp_path / "cut", progress=False)
    monkeypatch.setattr(Game, "defender_phase", real)
    # and an evaluation cut after its first batch
    partial = tmp_path / "cut" / "iter-01" / "eval" / "defender-vs-zero-shot"
    (partial / "summary.json").unlink()
    rollouts = (partial / "rollouts.jsonl").read_text().splitlines(keepends=True)
    (partial / "rollouts.jsonl").write_text(rollouts[0])
    resumed = run_game(None, tmp_path / "cut", resume=True, progress=False)

    assert resumed == whole
    rows_a, weights_a = _files(tmp_path / "whole")
    rows_b, weights_b = _files(tmp_path / "cut")
    assert rows_a == rows_b
    for side in weights_a:
        for name, tensor in weights_a[side].items():
            assert torch.equal(tensor, weights_b[side][name]), (side, name)


def test_a_game_directory_is_not_overwritten_and_resumes_with_its_own_settings(
    tiny_lm_dir, tmp_path
):
    config = tiny_game(tiny_lm_dir)
    out = tmp_path / "g"
    out.mkdir()
    (out / "game.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(FileExistsError, match="--resume"):
        run_game(config, out)
    with pytest.raises(ValueError, match="iterations differ"):
        run_game(tiny_game(tiny_lm_dir, iterations=5), out, resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run_game(None, tmp_path / "empty", resume=True)


def test_game_config_checks_its_settings_and_builds_both_learners(tiny_lm_dir):
    config = tiny_game(tiny_lm_dir, defender_algo="ra-rlhf", defender_updates=3)
    defender = config.learner_config("defender")
    assert type(defender).__name__ == "RARLHFConfig"
    assert defender.role == "defender" and defender.env.reward == "safe"
    assert defender.risk_n == 3  # the first defender phase is the soft-risk warm-up
    assert defender.seed == config.seed + 1
    adversary = config.learner_config("adversary")
    assert adversary.role == "adversary" and adversary.env.reward == "perez,novelty_bleu=0.5"
    assert GameConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="prompt_share must be in"):
        tiny_game(tiny_lm_dir, prompt_share=1.5)
    with pytest.raises(ValueError, match="may not set \\['role'\\]"):
        tiny_game(tiny_lm_dir, defender_config={"role": "adversary"})
    with pytest.raises(ValueError, match=r"defender_config.*nonsense"):
        tiny_game(tiny_lm_dir, defender_config={"nonsense": 1})
    with pytest.raises(ValueError, match="defender's"):
        tiny_game(tiny_lm_dir, adversary_reward="safe")
    with pytest.raises(ValueError, match="not JSON"):
        tiny_game(tiny_lm_dir, adversary_config="{kl: 1")


def test_the_game_command_builds_its_config_from_flags():
    from agents.common.flags import config_from_args
    from redteam_cli import build_parser

    args = build_parser().parse_args(
        [
            "game",
            "--iterations",
            "2",
            "--defender-algo",
            "ra-rlhf",
            "--turns",
            "2",
            "--defender-config",
            '{"risk_alpha": 0.1}',
            "--out",
            "x",
        ]
    )
    config = config_from_args(GameConfig, args)
    assert config.iterations == 2 and config.defender_algo == "ra-rlhf"
    assert config.env.max_turns == 2 and config.env.judge == "semantic"
    assert config.defender_config == {"risk_alpha": 0.1}
    assert config.learner_config("defender").risk_alpha == 0.1


def test_learning_in_phases_is_one_run(tiny_lm_dir):
    from conftest import tiny_config

    from agents import PPO, PPOConfig

    def run(stops):
        learner = PPO(tiny_config(PPOConfig, tiny_lm_dir, max_turns=1, seed=3))
        for stop in stops:
            learner.learn(3, until=stop, progress=False)
        return learner

    whole, phased = run([3]), run([1, 3])
    assert phased.update_idx == 3 and phased.total_updates == 3
    after = phased.policy.state_dict()
    for name, tensor in whole.policy.state_dict().items():
        assert torch.equal(tensor, after[name]), name
    with pytest.raises(ValueError, match=r"until must be in 0\.\.total_updates=3"):
        whole.learn(3, until=4)


class _Echo:
    def __init__(self):
        self.calls = []

    def act(self, observations):
        self.calls.append(list(observations))
        return [f"adversary {o}" for o in observations]

    def reseed(self, seed):
        self.seed = seed


def test_prompt_mix_draws_a_share_of_messages_from_the_pool():
    from redteam_gym.adversary import PromptMix

    inner = _Echo()
    mix = PromptMix(inner, ["p1", "p2"], share=0.5, seed=1)
    said = mix.act([str(i) for i in range(400)])
    pooled = [s for s in said if s in ("p1", "p2")]
    assert 150 < len(pooled) < 250
    # one adversary call, on the observations it answers, in order
    assert len(inner.calls) == 1 and len(inner.calls[0]) == 400 - len(pooled)
    assert [s for s in said if s not in ("p1", "p2")] == [f"adversary {o}" for o in inner.calls[0]]
    mix.reseed(7)
    first = mix.act(["a"] * 20)
    mix.reseed(7)
    assert mix.act(["a"] * 20) == first and inner.seed == 7
    assert PromptMix(_Echo(), ["q"], share=1.0).act(["x"] * 3) == ["q"] * 3
    none = _Echo()
    assert PromptMix(none, [], share=0.0).act(["x"]) == ["adversary x"]
    with pytest.raises(ValueError, match="share must be in"):
        PromptMix(none, ["q"], share=-0.1)
    with pytest.raises(ValueError, match="non-empty prompt"):
        PromptMix(none, [" "], share=0.5)


def test_a_trained_defenders_run_directory_is_a_defender(tiny_lm_dir, tmp_path):
    from redteam_gym.defenders import make_defender, run_actor

    run = tmp_path / "run"
    assert run_actor(run) is None
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "actor").symlink_to(tiny_lm_dir, target_is_directory=True)
    assert run_actor(run) == str(run / "checkpoint" / "actor")
    defender = make_defender(str(run))
    assert defender.name == str(run / "checkpoint" / "actor")
    assert isinstance(defender.respond([[{"role": "user", "content": "hello"}]])[0], str)


def test_a_reply_that_mostly_repeats_the_message_is_an_echo():
    from benchmarks.selfplay.loop import _echoes

    message = "Don't include a bombastic smartphone in your reviews list."
    assert _echoes("No, no. Don't include a bombastic smartphone in your reviews list.", message)
    assert not _echoes("I would rather not list any phones at all, sorry.", message)
    assert not _echoes("", message)


def test_the_paired_gain_and_its_interval():
    from benchmarks.selfplay.loop import _paired_gain

    before = np.linspace(-1.0, 1.0, 20)
    gain = _paired_gain(before + 0.5, before, seed=0)
    assert gain["reward_mean"] == pytest.approx(0.5)
    assert gain["reward_mean_ci"] == pytest.approx([0.5, 0.5])
    assert gain["cvar_0.1"] == pytest.approx(0.5)
    noisy = _paired_gain(before + np.random.default_rng(1).normal(0, 1, 20), before, seed=0)
    lo, hi = noisy["reward_mean_ci"]
    assert lo < noisy["reward_mean"] < hi


def test_the_games_defender_format_reaches_every_defender(tiny_lm_dir, tmp_path):
    """One format for every defender of a game: the frozen defender of the adversary phase
    and of the evaluations (their envs read `env.defender_format`), and the policy of the
    defender learner (its role reads it too)."""
    from agents.common.flags import config_from_args
    from benchmarks.selfplay import Game
    from redteam_cli import build_parser
    from redteam_gym.roles import ROLES

    env = EnvConfig(
        max_turns=1,
        defender=str(tiny_lm_dir),
        defender_max_new_tokens=4,
        defender_min_new_tokens=1,
        judge="profanity",
        defender_format="completion",
    )
    config = tiny_game(tiny_lm_dir, env=env)
    thread = env.thread_format()
    assert thread is not None
    for side in ("adversary", "defender"):
        assert config.learner_config(side).env.thread_format() == thread
    assert ROLES["defender"].in_env(config.learner_config("defender").env).thread == thread
    assert Game(config, tmp_path).suite("eval", "perez").env.thread_format() == thread
    args = build_parser().parse_args(["game", "--defender-format", "completion", "--out", "x"])
    assert config_from_args(GameConfig, args).env.defender_format == "completion"
