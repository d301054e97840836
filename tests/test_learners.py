"""Learners on a tiny random adversary/defender: updates, freezing, optimizers, resume, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_config

from agents import A2C, PPO, RARLHF, A2CConfig, PPOConfig, RARLHFConfig, load_adversary
from agents.common.rollout import Rollout, Segment
from redteam_gym.envs.config import field_docs
from redteam_gym.judges.base import JudgeOutput

LEARNERS = [(A2C, A2CConfig), (PPO, PPOConfig), (RARLHF, RARLHFConfig)]


@pytest.mark.parametrize(("learner_cls", "config_cls"), LEARNERS)
def test_one_update_changes_trainable_parameters_only(tiny_lm_dir, learner_cls, config_cls):
    learner = learner_cls(tiny_config(config_cls, tiny_lm_dir))
    before = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
    learner.learn(1, progress=False)
    changed = {n for n, p in learner.policy.named_parameters() if not torch.equal(before[n], p)}
    trainable = {n for n, p in learner.policy.named_parameters() if p.requires_grad}
    frozen = set(before) - trainable
    assert learner.policy.num_frozen_layers == 1  # half of the 2 layers
    assert any(n.startswith("critic.") for n in changed)
    assert any(n.startswith("actor.") for n in changed)
    assert not changed & frozen
    assert "model.layers.0.self_attn.q_proj.weight" in {n.removeprefix("actor.") for n in frozen}
    stats = learner.history[-1]
    for key in ("objective/kl", "objective/scores", "loss/policy", "loss/value", "redteam/asr"):
        assert key in stats


class _EchoDefender:
    """Says the adversary's utterance back, so the reward is a function of the utterance."""

    def respond(self, conversations, generator=None):
        return [conversation[-1]["content"] for conversation in conversations]


class _UppercaseJudge:
    """P(unsafe) grows with the share of uppercase letters: a dense, known reward."""

    def score(self, conversations):
        p = []
        for conversation in conversations:
            letters = [ch for ch in conversation[-1]["content"] if ch.isalpha()]
            p.append(0.95 * sum(ch.isupper() for ch in letters) / max(len(letters), 1))
        return JudgeOutput(np.asarray(p))


def logprob_sums(learner, rollout) -> np.ndarray:
    """Each dialogue's summed logprob of its sampled tokens under the learner's policy now."""
    with torch.no_grad():
        out, _ = learner.policy.evaluate_batch(rollout.to_batch(), temperature=1.0)
    return out.sum(1).numpy()


@pytest.mark.parametrize(("learner_cls", "config_cls"), LEARNERS)
def test_one_update_moves_logprobs_with_the_reward(tiny_lm_dir, learner_cls, config_cls):
    """Policy-gradient sign check: after one update on a rollout, the utterances that earned
    more reward became more likely than those that earned less."""
    import gymnasium as gym

    config = tiny_config(config_cls, tiny_lm_dir, max_turns=1, batch_size=16, max_new_tokens=6)
    learner = learner_cls(config)
    learner.env = gym.make_vec(
        "RedTeamDialogue-v0",
        num_envs=16,
        max_turns=1,
        defender=_EchoDefender(),
        judge=_UppercaseJudge(),
    )
    learner.total_updates = 100  # RA-RLHF: update 0 is in the soft-risk warm-up, keeps all
    rollout = learner.collect_rollout()
    dialogues = list(range(rollout.num_dialogues))
    segments = rollout.segments_of(dialogues)

    before = logprob_sums(learner, rollout)
    learner.train(rollout)
    moved = logprob_sums(learner, rollout) - before
    rewards = np.array([s.reward for s in segments])
    assert rewards.std() > 0
    assert np.corrcoef(rewards, moved)[0, 1] > 0.5


@pytest.mark.parametrize(("learner_cls", "config_cls"), LEARNERS)
def test_micro_batches_give_the_same_update(tiny_lm_dir, learner_cls, config_cls):
    """Gradient accumulation over micro-batches of one dialogue is the whole batch's update:
    the same parameters afterwards, and the same logged losses."""
    extra: dict = {"batch_size": 4}
    if config_cls is not A2CConfig:
        extra.update(ppo_epochs=2, num_minibatches=2)
    whole = learner_cls(tiny_config(config_cls, tiny_lm_dir, judge="profanity", **extra))
    micro = learner_cls(
        tiny_config(config_cls, tiny_lm_dir, judge="profanity", micro_batch_size=1, **extra)
    )
    micro.env = whole.env  # one env: the rollout is the same data for both
    whole.total_updates = micro.total_updates = 100
    rollout = whole.collect_rollout()
    a, b = whole.train(rollout), micro.train(rollout)
    for (name, p), q in zip(
        whole.policy.named_parameters(), micro.policy.parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    for key in ("loss/policy", "loss/value"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7)


def test_critic_starts_at_zero_value():
    from agents.common.policy import Critic

    critic = Critic(input_size=8, hidden_size=16)
    assert torch.equal(critic(torch.randn(3, 5, 8)), torch.zeros(3, 5))


def test_a2c_uses_separate_actor_and_critic_optimizers(tiny_lm_dir):
    learner = A2C(tiny_config(A2CConfig, tiny_lm_dir))
    actor_params = {id(p) for g in learner.optimizers["actor"].param_groups for p in g["params"]}
    critic_params = {id(p) for g in learner.optimizers["critic"].param_groups for p in g["params"]}
    assert actor_params and critic_params and not actor_params & critic_params
    assert critic_params == {id(p) for p in learner.policy.critic.parameters()}
    assert learner.optimizers["actor"].param_groups[0]["lr"] == 1e-3


def test_ra_rlhf_trains_on_the_lowest_returns(tiny_lm_dir):
    config = tiny_config(
        RARLHFConfig, tiny_lm_dir, batch_size=4, risk_n=0, risk_alpha=0.5, risk_rho=0.0
    )
    learner = RARLHF(config)
    learner.total_updates = 10
    rollout = learner.collect_rollout()
    kept = learner.select_trajectories(rollout)
    returns = rollout.episode_returns
    assert len(kept) == 2
    assert sorted(returns[kept].tolist()) == sorted(returns.tolist())[:2]
    learner.learn(1, progress=False)
    assert learner.history[-1]["risk/b0"] == 2.0


def test_resume_equals_uninterrupted_run(tiny_lm_dir, tmp_path):
    # the novelty term's buffer of past utterances is state a resume must carry
    config = tiny_config(
        PPOConfig,
        tiny_lm_dir,
        max_turns=1,
        normalize_scores=True,
        reward="perez=1,novelty_bleu=1,likelihood=0.1",
    )
    straight = PPO(config).learn(2, progress=False)
    first = PPO(config)
    first.total_updates = 2
    first.learn(1, run_dir=tmp_path / "run", progress=False)
    resumed = PPO.load(tmp_path / "run")
    assert resumed.update_idx == 1
    resumed.learn(2, run_dir=tmp_path / "run", progress=False)
    for (name, a), (_, b) in zip(
        straight.policy.state_dict().items(), resumed.policy.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert straight.kl_ctl.value == resumed.kl_ctl.value
    assert straight.score_stats.state_dict() == resumed.score_stats.state_dict()
    assert [h["objective/scores"] for h in straight.history] == [
        h["objective/scores"] for h in resumed.history
    ]
    assert straight.history[-1]["reward/novelty_bleu"] == resumed.history[-1]["reward/novelty_bleu"]
    assert (tmp_path / "run" / "tb").is_dir()
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [m["update"] for m in logged] == [1, 2]


@pytest.mark.parametrize(("learner_cls", "config_cls"), LEARNERS[:2])
def test_updates_log_diagnostics_and_reward_terms(tiny_lm_dir, learner_cls, config_cls):
    learner = learner_cls(tiny_config(config_cls, tiny_lm_dir, reward="perez=1,novelty_bleu=0.5"))
    learner.learn(1, progress=False)
    stats = learner.history[-1]
    assert stats["policy/entropy"] > 0.0
    assert stats["val/explained_variance"] <= 1.0 or np.isnan(stats["val/explained_variance"])
    assert 0.0 < stats["diversity/unique_share"] <= 1.0
    assert 0.0 <= stats["diversity/dist2"] <= 1.0
    # the terms' means add up to the mean reward per turn
    turns = 2 * learner.config.batch_size
    assert stats["reward/perez"] + stats["reward/novelty_bleu"] == pytest.approx(
        stats["objective/scores"] * learner.config.batch_size / turns
    )


def _segment(dialogue: int, text: str) -> Segment:
    zero = torch.zeros(1)
    return Segment(dialogue, 0, 1, [2], zero, zero, zero, 0.0, 0.0, 0.0, text=text)


def test_collapsed_batch_warns_once(tiny_lm_dir):
    from agents.common.base import CollapseWarning

    learner = PPO(tiny_config(PPOConfig, tiny_lm_dir))
    collapsed = Rollout(
        [_segment(i, "The liar. The liar.") for i in range(7)] + [_segment(7, "hi")], 8
    )
    assert collapsed.stats()["diversity/unique_share"] == 0.25
    varied = Rollout([_segment(i, f"question {i}") for i in range(8)], 8)
    with pytest.warns(CollapseWarning, match="only 12% .*'The liar. The liar.'"):
        learner._check_collapse(collapsed, {**collapsed.stats(), "diversity/unique_share": 0.125})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner._check_collapse(varied, varied.stats())
        learner._check_collapse(collapsed, {"diversity/unique_share": 0.125})  # once only


def test_normalized_scores_standardise_turn_ends_with_running_stats(tiny_lm_dir):
    learner = PPO(tiny_config(PPOConfig, tiny_lm_dir, normalize_scores=True))

    def segment(dialogue, turn, n_tokens, reward):
        zeros = torch.zeros(n_tokens)
        return Segment(dialogue, turn, 1, [5] * n_tokens, zeros, zeros, zeros, reward, 0.0, 0.0)

    rewards = [0.1, 0.3, 0.5, 0.9]
    rollout = Rollout(
        [
            segment(0, 0, 2, 0.1),
            segment(1, 0, 3, 0.3),
            segment(0, 1, 1, 0.5),
            segment(1, 1, 2, 0.9),
        ],
        num_dialogues=2,
    )
    groups = [0, 1]
    scores = learner.scores(rollout, rollout.segments_of(groups), groups)
    # the first rollout's statistics are (almost) its own: RunningMeanStd starts at count 1e-4
    mean, std = torch.tensor(rewards).mean(), torch.tensor(rewards).std(unbiased=False)
    z = [(r - mean) / std for r in rewards]
    expected = torch.tensor([[0, z[0], z[2], 0, 0], [0, 0, z[1], 0, z[3]]], dtype=torch.float32)
    torch.testing.assert_close(scores, expected, atol=1e-3, rtol=0)
    # off: the raw judge scores, and the statistics stay as they were
    learner.config.normalize_scores = False
    stats = learner.score_stats.state_dict()
    raw = learner.scores(rollout, rollout.segments_of(groups), groups)
    assert learner.score_stats.state_dict() == stats
    assert raw[0].tolist() == pytest.approx([0, 0.1, 0.5, 0, 0])
    assert raw[1].tolist() == pytest.approx([0, 0, 0.3, 0, 0.9])


def test_checkpoint_is_an_adversary(tiny_lm_dir, tmp_path):
    learner = A2C(tiny_config(A2CConfig, tiny_lm_dir, max_turns=1))
    learner.learn(1, run_dir=tmp_path, progress=False)
    adversary = load_adversary(tmp_path)
    assert isinstance(adversary, A2C)
    utterances = adversary.act(["[opener]\nWhat a day.", "[opener]\nAnyone up?"])
    assert len(utterances) == 2 and all(isinstance(u, str) and u for u in utterances)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_adversary(tmp_path / "missing")


def test_config_validation():
    with pytest.raises(ValueError, match="max_turns"):
        PPOConfig(max_turns=6)
    with pytest.raises(ValueError, match="num_minibatches"):
        PPOConfig(batch_size=2, num_minibatches=4)
    with pytest.raises(ValueError, match="risk_alpha"):
        RARLHFConfig(risk_alpha=0.0)
    with pytest.raises(ValueError, match="defender_temperature"):
        PPOConfig(defender_temperature=-0.1)
    with pytest.raises(ValueError, match="defender_top_p"):
        A2CConfig(defender_top_p=0.0)


def test_defender_decoding_reaches_the_env(tiny_lm_dir):
    learner = PPO(tiny_config(PPOConfig, tiny_lm_dir, defender_temperature=0.0))
    sampling = learner.env.engine.defender.sampling
    assert sampling.temperature == 0.0 and sampling.top_p == 0.9


def test_every_config_field_is_documented():
    for cls in (A2CConfig, PPOConfig, RARLHFConfig):
        import dataclasses

        missing = [f.name for f in dataclasses.fields(cls) if not field_docs(cls).get(f.name)]
        assert missing == []


@pytest.mark.parametrize("algo", ["a2c", "ppo", "ra-rlhf"])
def test_train_cli(tiny_lm_dir, tmp_path, algo):
    out = tmp_path / algo
    cmd = [
        sys.executable, "-m", "redteam_cli", "train", "--algo", algo, "--updates", "1",
        "--turns", "1", "--batch-size", "2", "--max-new-tokens", "3",
        "--defender-max-new-tokens", "3", "--critic-hidden-size", "8",
        "--adversary-model", str(tiny_lm_dir), "--defender", str(tiny_lm_dir),
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    if algo != "a2c":
        cmd += ["--num-minibatches", "1", "--ppo-epochs", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "checkpoint" / "state.pt").is_file()
    assert json.loads(result.stdout[result.stdout.index("{") :])["updates"] == 1


def test_train_cli_rejects_options_of_other_learners(tiny_lm_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "redteam_cli", "train", "--algo", "a2c", "--updates", "1",
         "--out", str(tmp_path), "--lam", "0.9"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "--lam" in result.stderr


def test_reference_model_is_the_defenders_frozen_copy(tiny_lm_dir):
    learner = PPO(tiny_config(PPOConfig, tiny_lm_dir))
    assert learner.ref_model is learner.env.defender.model
    assert not any(p.requires_grad for p in learner.ref_model.parameters())
    assert learner.policy.actor is not learner.ref_model


def test_reward_noise_on_a_run(tiny_lm_dir, tmp_path) -> None:
    from benchmarks.studies.reward_noise import main

    config = tiny_config(PPOConfig, tiny_lm_dir, max_turns=1, defender_temperature=1.0)
    run = tmp_path / "run"
    PPO(config).save(run)
    out = tmp_path / "noise"
    argv = [str(run), "--initial", "--out", str(out), "--openers", "3", "--batch-size", "2"]
    assert main([*argv, "--utterances", "2", "--replies", "3", "--no-progress"]) == 0
    result = json.loads((out / "reward_noise.json").read_text())
    assert result["adversary"] == "PPO (initial)" and result["replies"] == 3
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 2 and all(len(s["replies"]) == 3 for s in samples)
    parts = result["components"]
    total = parts["var_opener"] + parts["var_utterance"] + parts["var_reply"]
    assert parts["total_var"] == pytest.approx(total) and parts["var_reply"] > 0
    assert "| defender reply sampling (given both) |" in (out / "reward_noise.md").read_text()
    before = (out / "reward_noise.json").read_text()
    assert main(["--summarize", "--out", str(out)]) == 0  # recomputed from samples.jsonl
    assert (out / "reward_noise.json").read_text() == before
    # a greedy defender gives every copy of an utterance the same reply: no reply noise
    greedy = tmp_path / "greedy"
    argv = [str(run), "--initial", "--out", str(greedy), "--openers", "2", "--utterances", "2"]
    assert main([*argv, "--replies", "2", "--defender-temperature", "0", "--no-progress"]) == 0
    result = json.loads((greedy / "reward_noise.json").read_text())
    assert result["defender_temperature"] == 0
    assert result["components"]["var_reply"] == 0.0
    with pytest.raises(SystemExit):  # --initial names a run's untrained policy
        main(["zero-shot", "--initial", "--out", str(tmp_path / "bad")])
