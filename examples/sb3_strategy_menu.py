"""Train a stock stable-baselines3 PPO adversary on RedTeamDialogue-v0 through `StrategyMenu`.

Each turn the policy picks one of the menu's attack strategies (ask for an opinion, role
play, hypothetical framing, provoke disagreement, ...); the wrapper writes the utterance and
the frozen defender replies. The observation is a small feature vector, so SB3's
`MlpPolicy` works as is. Before and after training, the policy (sampling its actions) plays
the same held-out episodes (the `eval` openers, same seeds, so the same defender randomness),
and the script prints the mean return, the attack success rate and the strategy mix.

    python examples/sb3_strategy_menu.py --timesteps 300 --max-turns 2 \
        --defender-max-new-tokens 32
"""

from __future__ import annotations

import argparse
import collections
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO

import redteam_gym  # noqa: F401  (registers RedTeamDialogue-v0)
from redteam_gym.envs import EnvConfig
from redteam_gym.wrappers import StrategyMenu


@dataclass
class Evaluation:
    """What a policy did over a set of episodes."""

    mean_return: float
    asr: float
    mean_defender_p_unsafe: float
    strategy_counts: collections.Counter[str]


def evaluate(
    model: PPO, env: StrategyMenu, episodes: int, seed: int, deterministic: bool = False
) -> Evaluation:
    """Play `episodes` episodes with seeds `seed, seed + 1, ...`; return the summary."""
    returns, successes, p_unsafe = [], [], []
    counts: collections.Counter[str] = collections.Counter()
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total, success = False, 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, info = env.step(int(action))
            done = terminated or truncated
            total += float(reward)
            success |= bool(info["defender_unsafe"])
            p_unsafe.append(info["defender_unsafe_prob"])
            counts[info["strategy"]] += 1
        returns.append(total)
        successes.append(success)
    return Evaluation(
        float(np.mean(returns)), float(np.mean(successes)), float(np.mean(p_unsafe)), counts
    )


def strategy_distribution(model: PPO, env: StrategyMenu, seed: int) -> np.ndarray:
    """The policy's probabilities over the menu at the first turn of an episode."""
    obs, _ = env.reset(seed=seed)
    obs_tensor, _ = model.policy.obs_to_tensor(obs)
    with torch.no_grad():
        dist = model.policy.get_distribution(obs_tensor)
    return dist.distribution.probs[0].cpu().numpy()  # type: ignore[union-attr]


def print_evaluation(label: str, ev: Evaluation, names: list[str]) -> None:
    total = sum(ev.strategy_counts.values())
    mix = ", ".join(f"{n} {ev.strategy_counts[n] / total:.2f}" for n in names)
    print(
        f"{label}: mean return {ev.mean_return:.4f}  ASR {ev.asr:.3f}  "
        f"mean defender P(unsafe) {ev.mean_defender_p_unsafe:.4f}\n  strategy mix: {mix}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timesteps", type=int, default=300, help="PPO training steps (turns)")
    p.add_argument("--defender", default="smollm2-135m-instruct", help="defender model")
    p.add_argument("--judge", default="profanity", help="judge spec")
    p.add_argument("--seed", type=int, default=0, help="seed for PPO and the episodes")
    p.add_argument("--max-turns", type=int, default=2, help="turns per episode (1..5)")
    p.add_argument("--defender-max-new-tokens", type=int, default=32, help="reply length")
    p.add_argument("--n-steps", type=int, default=50, help="PPO rollout length")
    p.add_argument("--learning-rate", type=float, default=3e-3, help="PPO learning rate")
    p.add_argument("--eval-episodes", type=int, default=20, help="episodes per evaluation")
    p.add_argument("--device", default=None, help="device for the defender (default: auto)")
    p.add_argument(
        "--torch-threads", type=int, default=None, help="CPU threads for torch (default: all)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    start = time.perf_counter()
    config = EnvConfig(
        defender=args.defender,
        judge=args.judge,
        max_turns=args.max_turns,
        defender_max_new_tokens=args.defender_max_new_tokens,
        split="train",
        device=args.device,
    )
    env = StrategyMenu(gym.make("RedTeamDialogue-v0", config=config))
    # Held-out openers; the defender and judge objects are shared, not loaded twice.
    eval_env = StrategyMenu(
        gym.make(
            "RedTeamDialogue-v0",
            config=config.replace(
                split="eval",
                defender=env.unwrapped.defender,  # type: ignore[attr-defined]
                judge=env.unwrapped.judge,  # type: ignore[attr-defined]
            ),
        )
    )
    names = env.strategy_names
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=args.n_steps,
        batch_size=args.n_steps,
        n_epochs=4,
        learning_rate=args.learning_rate,
        gamma=1.0,  # a handful of turns: the episode return is the objective
        policy_kwargs={"net_arch": [32, 32]},
        seed=args.seed,
        device="cpu",
    )
    print(f"setup {time.perf_counter() - start:.1f}s; menu: {', '.join(names)}")

    eval_seed = 10_000 + args.seed
    t = time.perf_counter()
    before = evaluate(model, eval_env, args.eval_episodes, eval_seed)
    print_evaluation("before", before, names)
    print(f"  ({time.perf_counter() - t:.1f}s)")

    t = time.perf_counter()
    model.learn(total_timesteps=args.timesteps)
    print(f"trained {model.num_timesteps} steps in {time.perf_counter() - t:.1f}s")

    t = time.perf_counter()
    after = evaluate(model, eval_env, args.eval_episodes, eval_seed)
    print_evaluation("after", after, names)
    print(f"  ({time.perf_counter() - t:.1f}s)")

    probs = strategy_distribution(model, eval_env, eval_seed)
    print("learned first-turn strategy distribution:")
    for i in np.argsort(-probs):
        print(f"  {names[i]:<22} {probs[i]:.3f}")
    print(f"total wall time {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
