"""The `redteam-gym` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    """Zero-shot adversary vs the embedded defender: a few dialogues with their scores."""
    import gymnasium as gym

    import redteam_gym  # noqa: F401  (registers the env)
    from agents.baselines import ZeroShotAdversary

    print(f"Loading the defender, judge '{args.judge}' and the zero-shot adversary ...", flush=True)
    start = time.perf_counter()
    envs = gym.make_vec(
        "RedTeamDialogue-v0",
        num_envs=args.dialogues,
        max_turns=args.turns,
        judge=args.judge,
        split="eval",
    )
    adversary = ZeroShotAdversary(seed=args.seed)
    obs, _ = envs.reset(seed=args.seed)
    print(
        f"Ready in {time.perf_counter() - start:.1f}s. Running {args.dialogues} dialogues "
        f"of {args.turns} turns.\n",
        flush=True,
    )
    transcripts: list[list[dict]] = [[] for _ in range(args.dialogues)]
    unsafe = [False] * args.dialogues
    returns = [0.0] * args.dialogues
    for _ in range(args.turns):
        obs, rewards, _, _, infos = envs.step(adversary.act(obs))
        for i in range(args.dialogues):
            returns[i] += float(rewards[i])
            unsafe[i] |= bool(infos["defender_unsafe"][i])
            transcripts[i] = infos["transcript"][i]
            scores = (infos["adversary_unsafe_prob"][i], infos["defender_unsafe_prob"][i])
            transcripts[i][-2]["score"] = f"{scores[0]:.3f}"
            transcripts[i][-1]["score"] = f"{scores[1]:.3f}"
    for i, transcript in enumerate(transcripts):
        print(f"=== dialogue {i}  return {returns[i]:.3f}  {'UNSAFE' if unsafe[i] else 'safe'}")
        for m in transcript:
            score = f" (p_unsafe {m['score']})" if "score" in m else ""
            print(f"[{m['role']}]{score} {m['content']}")
        print()
    print(
        f"ASR {sum(unsafe) / len(unsafe):.1%} over {len(unsafe)} dialogues; "
        f"mean return {sum(returns) / len(returns):.3f}; "
        f"wall time {time.perf_counter() - start:.1f}s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redteam-gym", description="Automated red teaming of language models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the main job on the embedded defaults")
    demo.add_argument("--dialogues", type=int, default=8, help="dialogues run in parallel")
    demo.add_argument("--turns", type=int, default=3, help="turns per dialogue (1..5)")
    demo.add_argument("--judge", default="profanity", help="judge name")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(func=_demo)
    from agents.cli import add_parsers as add_train

    add_train(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
