"""The `redteam-gym` command line: `demo`, `train`, `eval`, `compare`, `audit` and `game`.

It sits above the three packages (`benchmarks` -> `agents` -> `redteam_gym`), so none of them
imports upwards to build it: `agents.cli` adds `train`, `benchmarks.cli` the rest.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from agents.cli import add_parsers as add_train
    from benchmarks.cli import add_parsers as add_benchmarks

    parser = argparse.ArgumentParser(
        prog="redteam-gym", description="Automated red teaming of language models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_benchmarks(sub, ("demo",))
    add_train(sub)
    add_benchmarks(sub, ("eval", "compare", "audit", "game"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
