"""`redteam-gym train`: the learners' command line, built from the config dataclasses."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agents.common.config import CONFIGS
from agents.common.flags import add_flags, config_dests, config_from_args, flags


def _train(args: argparse.Namespace) -> int:
    from agents import LEARNERS
    from agents.common.base import UpdateError
    from agents.common.checkpoint import CheckpointError
    from redteam_gym.interrupts import Interrupted

    cls = LEARNERS[args.algo]
    config_class = CONFIGS[args.algo]
    out = Path(args.out)
    if args.resume:
        try:
            learner = cls.load(out)
        except (CheckpointError, FileNotFoundError) as exc:
            raise SystemExit(f"redteam-gym train: cannot resume {out}: {exc}") from None
        print(f"Resuming {args.algo} from update {learner.update_idx} in {out}", flush=True)
    else:
        mine = config_dests(config_class)
        foreign = {
            flag.flag
            for other in CONFIGS.values()
            for flag in flags(other)
            if flag.dest in vars(args) and flag.dest not in mine
        }
        if foreign:
            raise SystemExit(f"{', '.join(sorted(foreign))} do(es) not apply to --algo {args.algo}")
        if (out / "checkpoint").exists():
            raise SystemExit(f"{out} already holds a checkpoint: pass --resume or another --out")
        learner = cls(config_from_args(config_class, args))
    try:
        learner.learn(args.updates, run_dir=out, progress=not args.no_progress)
    except Interrupted:
        print(
            f"redteam-gym train: stopped by SIGINT after update {learner.update_idx} of "
            f"{args.updates}; checkpoint saved in {out / 'checkpoint'}. Resume with:\n"
            f"  redteam-gym train --algo {args.algo} --updates {args.updates} --out {out} --resume",
            file=sys.stderr,
            flush=True,
        )
        return 130  # the shell's code for "ended by SIGINT"
    except UpdateError as exc:
        print(f"redteam-gym train: error: {exc}", file=sys.stderr)
        return 1
    last = learner.history[-1] if learner.history else {}
    print(json.dumps({"run_dir": str(out), "updates": learner.update_idx, **last}, indent=2))
    return 0


def add_parsers(subparsers: Any) -> None:
    """Add `train` to the `redteam-gym` command."""
    train = subparsers.add_parser(
        "train",
        help="train an adversary (A2C, PPO or RA-RLHF)",
        description="Train a token-level red-teaming adversary against RedTeamDialogue-v0.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument("--algo", choices=sorted(CONFIGS), default="ppo", help="learner")
    train.add_argument("--updates", type=int, required=True, help="total updates of the run")
    train.add_argument("--out", required=True, help="run directory (logs, checkpoint)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    # every config field of every learner; each learner reads the ones it has
    add_flags(train, *CONFIGS.values())
    train.set_defaults(func=_train)
