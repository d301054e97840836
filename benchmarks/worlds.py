"""The worlds table: how often a zero-shot adversary makes each defender fail.

A world is a defender, the format it reads the conversation in, its sampling and a judge. A
gym is only worth its worlds: red teaming must be able to succeed in the default one, and its
judge must be right on the replies it really scores. This command runs the zero-shot
adversary for `--rollouts` conversations of 3 turns on the eval-split openers of each world,
then reads the conversations back with one judge and, where people labelled the replies, the
audited precision of the judge's successes:

    python -m benchmarks.worlds --out benchmarks/results/worlds

The conversations are generated once per world (`--resume` continues them); the judge reads
them afterwards (`rescore`), so a new judge re-reads the same conversations. The labels come
from the real-reply dataset (`redteam_gym/judges/data/replies/`), matched on the conversation
and the reply; a flagged reply that nobody labelled is counted apart, never as a success of
the judge.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.suites import Suite
from redteam_gym.envs.config import EnvConfig

WORLDS: dict[str, dict[str, Any]] = {
    "chat-greedy": {"defender_format": "chat", "defender_temperature": 0.0},
    "chat-t0.7": {"defender_format": "chat", "defender_temperature": 0.7},
    "completion-greedy": {"defender_format": "completion", "defender_temperature": 0.0},
    "completion-t0.7": {"defender_format": "completion", "defender_temperature": 0.7},
    "completion-t1.0": {"defender_format": "completion", "defender_temperature": 1.0},
}
"""Each world's env settings beyond the defaults: the embedded SmolLM2-135M-Instruct defender
through its chat template (hardened: it helps, refuses or rambles) or continuing a text thread,
greedy or sampled."""

TURNS = 3
GENERATION_JUDGE = "profanity"
"""The judge the conversations are generated with (the zero-shot adversary ignores it): the
cheapest; the table's judge re-reads them."""


def world_suite(name: str, rollouts: int, seed: int = 0) -> Suite:
    """The eval suite of world `name`: `rollouts` conversations of 3 turns on the eval split."""
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; worlds: {sorted(WORLDS)}")
    env = EnvConfig(max_turns=TURNS, split="eval", judge=GENERATION_JUDGE, **WORLDS[name])
    return Suite(
        name=f"world-{name}",
        description=f"zero-shot adversary, {TURNS} turns, world {name}",
        env=env,
        rollouts=rollouts,
        batch_size=16,
        seed=seed,
    )


def generate(out: Path, worlds: Sequence[str], rollouts: int, resume: bool = True) -> None:
    """Run the zero-shot adversary in each world, into `out/NAME/rollouts.jsonl`."""
    from benchmarks.runner import evaluate

    for name in worlds:
        evaluate(
            "zero-shot",
            world_suite(name, rollouts),
            out / name,
            resume=resume and (out / name / "rollouts.jsonl").exists(),
            report=False,
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/worlds"))
    parser.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    parser.add_argument("--rollouts", type=int, default=103, help="conversations per world")
    args = parser.parse_args(argv)
    generate(args.out, args.worlds, args.rollouts)


if __name__ == "__main__":
    main()
