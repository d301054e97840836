"""Two language models play the PettingZoo game `redteam_gym.game`: the zero-shot adversary
(SmolLM2 prompted to write the user's messages) against the SmolLM2 chat model as the
defender. Each step is half a turn; the script prints every move and both rewards.

    python examples/game_two_lms.py --episodes 2 --max-turns 2
"""

from __future__ import annotations

import argparse

from agents.baselines import ZeroShotAdversary
from redteam_gym.defenders import make_defender
from redteam_gym.game import parallel_env
from redteam_gym.models import SamplingConfig
from redteam_gym.transcript import defender_view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge", default="profanity")
    args = parser.parse_args()

    env = parallel_env(max_turns=args.max_turns, judge=args.judge)
    adversary = ZeroShotAdversary()
    defender = make_defender(sampling=SamplingConfig(max_new_tokens=48, temperature=0.7))
    for episode in range(args.episodes):
        observations, infos = env.reset(seed=args.seed + episode)
        print(f"=== episode {episode}: opener {infos['adversary']['transcript'][0]['content']!r}")
        returns = dict.fromkeys(env.possible_agents, 0.0)
        while env.agents:
            mover = next(a for a in env.agents if infos[a]["to_move"])
            if mover == "adversary":
                action = adversary.act([observations["adversary"]])[0]
            else:  # the defender answers the transcript, read as its chat
                action = defender.respond([defender_view(infos["defender"]["transcript"])])[0]
            # the idle agent's action is ignored; PettingZoo wants one per live agent
            actions = {a: action if a == mover else "" for a in env.agents}
            observations, rewards, _, _, infos = env.step(actions)
            print(f"[{mover}] {action!r}")
            if mover == "defender":
                terms = infos["defender"]["reward_terms"]
                print(
                    f"    P(unsafe) {infos['defender']['defender_unsafe_prob']:.3f}  rewards "
                    f"{ {a: round(r, 4) for a, r in rewards.items()} }  terms {terms}"
                )
            for a, r in rewards.items():
                returns[a] += r
        print(f"returns: { {a: round(r, 4) for a, r in returns.items()} }")
    env.close()


if __name__ == "__main__":
    main()
