"""`redteam-gym train`: the learners' command line, built from the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

from redteam_gym.envs.config import field_docs

ALIASES = {"env.max_turns": "--turns"}
UNPREFIXED = ("env",)
"""Nested configs whose fields keep their own flag names (`env.judge` -> `--judge`), unless
an outer field has the name (`env.device` -> `--env-device`)."""


def _scalar_type(annotation: Any) -> type:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return type(args[0])
    if args:
        return _scalar_type(args[0])
    return annotation if isinstance(annotation, type) else str


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    prefix: str = "",
    outer: frozenset[str] = frozenset(),
    exclude: frozenset[str] = frozenset(),
) -> None:
    """One option per config field, nested configs flattened (`kl.coef` -> `--kl-coef`; the
    env's fields keep their names, `env.judge` -> `--judge`), but the `exclude`d ones (by
    destination, `env.reward`)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    names = frozenset(f.name for f in dataclasses.fields(cls))
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        dest = f"{prefix}{f.name}"
        if dest in exclude:
            continue
        if dataclasses.is_dataclass(hint):
            add_config_arguments(parser, hint, f"{dest}.", names, exclude)  # type: ignore[arg-type]
            continue
        shown = dest
        if prefix.rstrip(".") in UNPREFIXED and f.name not in outer:
            shown = f.name
        flag = ALIASES.get(dest, "--" + shown.replace("_", "-").replace(".", "-"))
        kind = _scalar_type(hint)
        kwargs: dict[str, Any] = {
            "dest": dest,
            "default": argparse.SUPPRESS,
            "help": docs.get(f.name, ""),
        }
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = f.name.upper()
            if typing.get_origin(hint) is typing.Literal:
                kwargs["choices"] = typing.get_args(hint)
        parser.add_argument(flag, **kwargs)


def config_from_args(cls: type, args: argparse.Namespace):
    """Build `cls` from the options given on the command line (defaults elsewhere)."""
    given = vars(args)
    values: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            sub = {k.split(".", 1)[1]: v for k, v in given.items() if k.startswith(f"{f.name}.")}
            if sub:
                default = (
                    f.default_factory()
                    if f.default_factory is not dataclasses.MISSING
                    else hints[f.name]()
                )  # type: ignore[misc]
                values[f.name] = dataclasses.replace(default, **sub)
        elif f.name in given:
            values[f.name] = given[f.name]
    return cls(**values)


def config_dests(cls: type, prefix: str = "") -> set[str]:
    """The argparse destinations of `cls`'s options (`add_config_arguments`), nested ones
    dotted (`kl.coef`, `env.judge`)."""
    hints = typing.get_type_hints(cls)
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out |= config_dests(hints[f.name], f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            out.add(f"{prefix}{f.name}")
    return out


def _train(args: argparse.Namespace) -> int:
    from agents import LEARNERS
    from agents.common.base import UpdateError
    from agents.common.checkpoint import CheckpointError
    from redteam_gym.interrupts import Interrupted

    cls = LEARNERS[args.algo]
    out = Path(args.out)
    if args.resume:
        try:
            learner = cls.load(out)
        except (CheckpointError, FileNotFoundError) as exc:
            raise SystemExit(f"redteam-gym train: cannot resume {out}: {exc}") from None
        print(f"Resuming {args.algo} from update {learner.update_idx} in {out}", flush=True)
    else:
        from agents import A2CConfig, RARLHFConfig

        every = config_dests(RARLHFConfig) | config_dests(A2CConfig)
        foreign = sorted((set(vars(args)) & every) - config_dests(cls.config_class))
        if foreign:
            flags = ", ".join("--" + k.replace("_", "-").replace(".", "-") for k in foreign)
            raise SystemExit(f"{flags} do(es) not apply to --algo {args.algo}")
        if (out / "checkpoint").exists():
            raise SystemExit(f"{out} already holds a checkpoint: pass --resume or another --out")
        learner = cls(config_from_args(cls.config_class, args))
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


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` to the `redteam-gym` command."""
    from agents import LEARNERS, A2CConfig, PPOConfig, RARLHFConfig

    train = subparsers.add_parser(
        "train",
        help="train an adversary (A2C, PPO or RA-RLHF)",
        description="Train a token-level red-teaming adversary against RedTeamDialogue-v0.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument("--algo", choices=sorted(LEARNERS), default="ppo", help="learner")
    train.add_argument("--updates", type=int, required=True, help="total updates of the run")
    train.add_argument("--out", required=True, help="run directory (logs, checkpoint)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    # every config field of every learner; each learner reads the ones it has
    seen: set[str] = set()
    for cls in (RARLHFConfig, PPOConfig, A2CConfig):
        group = argparse.ArgumentParser(add_help=False)
        add_config_arguments(group, cls)
        for action in group._actions:
            if action.dest not in seen:
                seen.add(action.dest)
                train._add_action(action)
    train.set_defaults(func=_train)
