"""Two language models play the PettingZoo game `redteam_gym.game`: the zero-shot adversary
(SmolLM2 prompted to write the user's messages) against the SmolLM2 chat model as the
defender. Each step is half a turn; the script prints every move and both rewards.

    python examples/game_two_lms.py --episodes 2 --max-turns 2
    python examples/game_two_lms.py --defender-format completion  # the defender reads a thread
"""

from __future__ import annotations

import argparse

from agents.baselines import ZeroShotAdversary
from redteam_gym.defenders import make_defender
from redteam_gym.envs.config import DEFENDER_FORMATS
from redteam_gym.game import parallel_env
from redteam_gym.models import SamplingConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge", default="profanity")
    parser.add_argument("--defender-format", choices=DEFENDER_FORMATS, default="chat")
    args = parser.parse_args()

    env = parallel_env(
        max_turns=args.max_turns, judge=args.judge, defender_format=args.defender_format
    )
    adversary = ZeroShotAdversary()
    # the defender LM reads the conversation in the game's format (a chat, or a text thread
    # whose reply's first tokens cannot end it, as the envs' frozen defenders do)
    thread = env.thread_format
    sampling = SamplingConfig(
        max_new_tokens=48,
        temperature=0.7,
        min_new_tokens=env.engine.config.defender_min_new_tokens if thread else 0,
    )
    defender = make_defender(sampling=sampling, thread=thread)
    for episode in range(args.episodes):
        observations, infos = env.reset(seed=args.seed + episode)
        print(f"=== episode {episode}: opener {infos['adversary']['transcript'][0]['content']!r}")
        returns = dict.fromkeys(env.possible_agents, 0.0)
        while env.agents:
            mover = next(a for a in env.agents if infos[a]["to_move"])
            if mover == "adversary":
                action = adversary.act([observations["adversary"]])[0]
            else:  # the defender answers the conversation as it reads it
                action = defender.respond([infos["defender"]["defender_view"]])[0] or "..."
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
