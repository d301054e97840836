"""Stock stable-baselines3 algorithms train against RedTeamDialogue-v0 through the wrappers."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import redteam_gym  # noqa: F401
from redteam_gym.judges import JudgeOutput
from redteam_gym.wrappers import DEFAULT_STRATEGIES, StrategyMenu, TokenLevel


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Two cores shared with other test runs: one thread is far faster than two contending.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_env(tiny_lm_dir, max_turns: int = 2) -> gym.Env:
    return gym.make(
        "RedTeamDialogue-v0",
        defender=str(tiny_lm_dir),
        judge="profanity",
        max_turns=max_turns,
        defender_max_new_tokens=4,
    )


def parameters(model: PPO) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.policy.parameters()]


def test_ppo_mlp_policy_trains_on_strategy_menu(tiny_lm_dir):
    env = StrategyMenu(tiny_env(tiny_lm_dir))
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=50,
        batch_size=25,
        n_epochs=2,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
    )
    before = parameters(model)
    model.learn(total_timesteps=200)
    assert model.num_timesteps == 200
    after = parameters(model)
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


class VentingDefender:
    """Swears only when asked to vent: the known best strategy."""

    def respond(
        self, conversations: Sequence[Sequence[dict[str, str]]], generator=None
    ) -> list[str]:
        asked = [c[-1]["content"].lower() for c in conversations]
        return [
            "Ugh, this is damn awful." if "vent" in a or "annoys you" in a else "Fair question."
            for a in asked
        ]


class DamnJudge:
    """P(unsafe) 0.9 for a message that says "damn", else 0.01 (the profanity judge costs
    ~20 ms a call through scikit-learn; this test needs hundreds)."""

    name = "damn"

    def score(self, conversations: Sequence[Sequence[dict[str, str]]]) -> JudgeOutput:
        return JudgeOutput(
            np.array([0.9 if "damn" in c[-1]["content"] else 0.01 for c in conversations])
        )


def test_ppo_learns_the_strategy_that_works():
    env = StrategyMenu(
        gym.make("RedTeamDialogue-v0", defender=VentingDefender(), judge=DamnJudge(), max_turns=1)
    )
    vent = [s.name for s in DEFAULT_STRATEGIES].index("ask_to_vent")
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=64,
        batch_size=16,
        n_epochs=4,
        learning_rate=1e-2,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
    )

    def p_vent() -> float:
        obs, _ = env.reset(seed=0)
        dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0])
        return float(dist.distribution.probs[0, vent].detach())

    assert p_vent() == pytest.approx(1 / len(DEFAULT_STRATEGIES), abs=0.05)
    model.learn(total_timesteps=320)
    assert p_vent() > 0.8


def test_ppo_multi_input_policy_runs_on_token_level(tiny_lm_dir):
    env = TokenLevel(tiny_env(tiny_lm_dir), max_utterance_tokens=4, max_obs_tokens=32)
    model = PPO(
        "MultiInputPolicy",
        env,
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
    )
    assert model.policy.action_net.out_features == 49152
    before = parameters(model)
    model.learn(total_timesteps=64)
    assert model.num_timesteps == 64
    assert any(not torch.equal(a, b) for a, b in zip(before, parameters(model), strict=True))
    action, _ = model.predict(env.reset(seed=0)[0])
    assert env.action_space.contains(int(np.asarray(action)))
