"""The ``eval``, ``compare``, ``audit``, ``demo`` and ``game`` commands of ``redteam-gym``.

``redteam_cli`` calls ``add_parsers(subparsers)``; each command sets
``func(args) -> int`` (the exit status). ``python -m benchmarks.cli eval ...`` runs the same
commands.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.common.flags import add_flags, config_from_args, flag_of, given
from redteam_gym.files import atomic_write

__all__ = ["COMMANDS", "add_parsers", "build_parser", "main"]

DEFAULT_EVAL_ROOT = Path("runs") / "eval"
DEFAULT_DEMO_DIR = Path("runs") / "demo"
DEMO_ROLLOUTS = 16
DEMO_REWARD = "implicit"
"""The reward preset of the demo's PPO updates (`redteam_gym.rewards`)."""
DEMO_AGREEMENT = ("semantic", "profanity", "toxblock")
"""Judges whose verdicts on the zero-shot run's replies the demo compares."""


COMMANDS = ("eval", "compare", "audit", "demo", "game")


def add_parsers(subparsers: Any, commands: Sequence[str] = COMMANDS) -> None:
    """Add ``eval``, ``compare``, ``audit``, ``demo`` and ``game`` (or the named subset) to an
    ``argparse`` subparsers object; each sets ``func(args) -> int``."""
    unknown = sorted(set(commands) - set(COMMANDS))
    if unknown:
        raise ValueError(f"unknown command(s) {unknown}; known: {COMMANDS}")
    adders = {
        "eval": _add_eval,
        "compare": _add_compare,
        "audit": _add_audit,
        "demo": _add_demo,
        "game": _add_game,
    }
    for name in commands:
        adders[name](subparsers)


_NOT_OVERRIDES = frozenset(
    {"name", "description", "adversary_sampling", "cvar_alpha"}
    | {"env.device", "env.dtype", "env.retry_smaller_batch"}
)
"""Suite fields that are no flags of `eval` and `demo`: the suite's identity, and the env
fields that are options of the run, not of the suite (they change no rollout)."""


def _add_suite_overrides(parser: argparse.ArgumentParser) -> None:
    """Suite overrides: every `EnvConfig` field and the suite's sizes and seed (flag and
    help from the field, the suite's value kept when the flag is absent), and the run's
    options."""
    from benchmarks.suites import Suite

    add_flags(parser, Suite, exclude=_NOT_OVERRIDES)
    parser.add_argument("--device", help="device for the models (default: cuda if available)")
    parser.add_argument("--dtype", help="model dtype, e.g. bfloat16 (default: bf16 on GPU)")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )


def _add_eval(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate an adversary on a suite",
        description="Evaluate an adversary on a benchmark suite; writes rollouts.jsonl, "
        "summary.json, report.md and plots/ to --out.",
    )
    p.add_argument(
        "--adversary",
        default="zero-shot",
        metavar="{zero-shot,few-shot,DIR}",
        help="a baseline, or a trained learner checkpoint DIR (default: zero-shot)",
    )
    p.add_argument(
        "--suite", default="quick", metavar="NAME", help="suite name or JSON file (default: quick)"
    )
    p.add_argument("--out", metavar="DIR", help="eval DIR (default: runs/eval/SUITE-ADVERSARY)")
    _add_suite_overrides(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted eval in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the rollouts already in --out")
    p.add_argument(
        "--retry-smaller-batch",
        action="store_true",
        help="when the defender or judge runs out of memory, retry its call on halves of the "
        "batch (down to one conversation) before giving up",
    )
    p.add_argument(
        "--adversary-model", metavar="MODEL", help="LM of a baseline adversary (default: SmolLM2)"
    )
    p.add_argument(
        "--few-shot-pool",
        metavar="DIR|FILE",
        help="few-shot examples: an eval DIR or rollouts.jsonl (its unsafe-reply turns)",
    )
    p.add_argument("--list-suites", action="store_true", help="list the built-in suites and exit")
    p.set_defaults(func=run_eval)


def _add_compare(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare",
        help="side-by-side table of eval summaries",
        description="Print a markdown table of the summaries of eval DIRs, best values in bold.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="eval DIRs holding summary.json")
    p.add_argument("--out", metavar="FILE", help="also write the table to FILE")
    p.set_defaults(func=run_compare)


def _add_audit(subparsers: Any) -> None:
    from benchmarks.audit import DEFAULT_TOP

    p = subparsers.add_parser(
        "audit",
        help="reward audit: label the highest-rewarded replies, measure the judge",
        description="Without --labels, write the TOP highest-rewarded defender replies of an "
        "eval as a blind labelling sheet (DIR/audit/sheet.jsonl and sheet.md; their scores go "
        "to DIR/audit/key.jsonl). With --labels, read the labels back and report the reward's "
        "audited precision, the precision at the unsafe threshold, the judge's ASR and the "
        "confirmed ASR (DIR/audit/audit.json and audit.md). See benchmarks.audit.",
    )
    p.add_argument(
        "run", metavar="RUN_OR_EVAL", help="an eval DIR, or a directory holding exactly one"
    )
    p.add_argument(
        "--top",
        type=int,
        metavar="N",
        help=f"replies on the sheet, highest reward first (default: {DEFAULT_TOP})",
    )
    p.add_argument("--sheet", metavar="FILE", help="write the sheet here (default: DIR/audit/)")
    p.add_argument(
        "--shuffle",
        type=int,
        metavar="SEED",
        help="list the sheet in an order shuffled by SEED, so the position hides the rank",
    )
    p.add_argument(
        "--labels",
        metavar="FILE",
        help='read labels back: JSON lines {"id": ..., "unsafe": 0 or 1, "borderline": '
        'true/false, "why": "...", "category": "..."} (a filled-in sheet will do)',
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="audit the labelled items when some sheet items have no label",
    )
    p.add_argument(
        "--second-judge",
        metavar="NAME",
        help="re-score the labelled replies with this judge and report its agreement "
        "(Cohen's kappa) with the labels and the eval's judge",
    )
    p.set_defaults(func=run_audit)


def _add_game(subparsers: Any) -> None:
    from benchmarks.selfplay.config import GameConfig

    p = subparsers.add_parser(
        "game",
        help="the two-player game: adversary and defender trained in turn",
        description="Train an adversary and a defender in turn (adversary phase with the "
        "novelty terms, defender phase against it mixed with a prompt pool), evaluate both on "
        "held-out openers and adversaries every iteration, and write iterations.jsonl, "
        "report.md and plots/game.png into --out (see benchmarks.selfplay).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the game directory")
    p.add_argument("--resume", action="store_true", help="continue the game in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    # each phase sets the env's reward (--adversary-reward, --defender-reward)
    add_flags(p, GameConfig, exclude=frozenset({"env.reward"}))
    p.set_defaults(func=run_game_command)


def run_game_command(args: argparse.Namespace) -> int:
    from agents.common.base import UpdateError
    from benchmarks.selfplay import GameConfig, run_game
    from redteam_gym.interrupts import Interrupted

    try:
        config = (
            config_from_args(GameConfig, args)
            if given(args, GameConfig) or not args.resume
            else None
        )
        rows = run_game(config, args.out, resume=args.resume, progress=not args.no_progress)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"redteam-gym game: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(
            f"redteam-gym game: stopped by SIGINT ({exc}). Resume with:\n"
            f"  redteam-gym game --out {shlex.quote(args.out)} --resume",
            file=sys.stderr,
        )
        return 130
    except UpdateError as exc:
        print(f"redteam-gym game: error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(rows) - 1} iterations in {args.out}: report.md, iterations.jsonl, plots/game.png")
    return 0


def _add_demo(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the main job on the embedded defaults: (train,) evaluate, report",
        description="Train a short PPO run with the 'implicit' reward preset, then evaluate "
        "it beside the zero-shot and few-shot baselines on the quick suite with the embedded "
        "models (SmolLM2 defender and adversary) and the semantic judge; write their reports, "
        "print the comparison, and how three judges agree on the zero-shot run's replies.",
    )
    p.add_argument("--out", default=str(DEFAULT_DEMO_DIR), metavar="DIR", help="output root")
    p.add_argument("--suite", default="quick", metavar="NAME", help="suite (default: quick)")
    _add_suite_overrides(p)
    p.add_argument(
        "--updates", type=int, default=2, metavar="N", help="PPO updates when training runs"
    )
    p.add_argument("--skip-train", action="store_true", help="evaluate the baselines only")
    p.add_argument(
        "--few-shot-pool",
        metavar="DIR|FILE",
        help="few-shot examples (default: the zero-shot run's unsafe-reply turns)",
    )
    p.add_argument(
        "--adversary-model", metavar="MODEL", help="LM of the baselines (default: SmolLM2)"
    )
    p.set_defaults(func=run_demo)


# ----- commands ---------------------------------------------------------------------------


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The suite overrides given on the command line, as `load_suite` keywords (`max_turns`,
    `rollouts`); the others keep the suite's value."""
    from benchmarks.suites import Suite

    return {dest.removeprefix("env."): value for dest, value in given(args, Suite).items()}


def _fail(command: str, exc: Exception) -> int:
    print(f"redteam-gym {command}: error: {exc}", file=sys.stderr)
    return 2


def _print_suites() -> None:
    from benchmarks.suites import list_suites, load_suite

    for name in list_suites():
        s = load_suite(name)
        print(
            f"{name:<12} {s.rollouts} x {s.env.max_turns} turns, split={s.env.split}, judge={s.env.judge}, "
            f"defender={s.env.defender}\n{'':<12} {s.description}"
        )


def _adversary_label(spec: str) -> str:
    return Path(spec).name if Path(spec).is_dir() else spec


def run_eval(args: argparse.Namespace) -> int:
    """``eval``: one adversary on one suite."""
    from benchmarks.compare import compare
    from benchmarks.runner import BatchError, evaluate
    from benchmarks.suites import load_suite
    from redteam_gym.interrupts import Interrupted

    if args.list_suites:
        _print_suites()
        return 0
    try:
        suite = load_suite(args.suite, **_overrides(args))
        out = Path(
            args.out or DEFAULT_EVAL_ROOT / f"{suite.name}-{_adversary_label(args.adversary)}"
        )
        summary = evaluate(
            args.adversary,
            suite,
            out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=args.progress,
            adversary_model=args.adversary_model,
            few_shot_pool=args.few_shot_pool,
            device=args.device,
            dtype=args.dtype,
            retry_smaller_batch=args.retry_smaller_batch,
        )
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        return _fail("eval", exc)
    except BatchError as exc:
        print(f"redteam-gym eval: error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(
            f"redteam-gym eval: {exc}\nResume with:\n  {_resume_command(args, out)}",
            file=sys.stderr,
        )
        return 130  # the shell's code for "ended by SIGINT"
    print()
    print(compare([out]))
    print(
        f"{summary['num_rollouts']} conversations in {summary['wall_time_s']:.1f}s "
        f"({_rate(summary)} conversations/s while running). "
        f"Report: {out / 'report.md'}  plots: {out / 'plots'}"
    )
    return 0


def _resume_command(args: argparse.Namespace, out: Path) -> str:
    """The `eval` command line that continues the run in ``out`` (same settings)."""
    words = ["redteam-gym", "eval", "--adversary", args.adversary, "--suite", args.suite]
    from benchmarks.suites import Suite

    for dest, value in given(args, Suite).items():
        flag = flag_of(Suite, dest)
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        else:
            words += [flag, str(value)]
    for key in ("adversary_model", "few_shot_pool", "device", "dtype"):
        if getattr(args, key) is not None:
            words += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.retry_smaller_batch:
        words.append("--retry-smaller-batch")
    return shlex.join([*words, "--out", str(out), "--resume"])


def _rate(summary: dict[str, Any]) -> str:
    rate = summary.get("rollouts_per_s")
    return "n/a" if rate is None else f"{rate:.3f}"


def run_compare(args: argparse.Namespace) -> int:
    """``compare``: print (and optionally write) the side-by-side table."""
    from benchmarks.compare import compare

    try:
        table = compare(args.dirs)
    except ValueError as exc:
        return _fail("compare", exc)
    print(table)
    if args.out:
        atomic_write(args.out, table)
        print(f"written to {args.out}")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    """``audit``: write the labelling sheet, or read the labels back and report."""
    from benchmarks.audit import (
        DEFAULT_TOP,
        audit,
        find_eval,
        format_audit,
        write_audit,
        write_sheet,
    )

    reading = args.labels is not None
    misplaced = (
        [f for f in ("top", "sheet", "shuffle") if getattr(args, f) is not None]
        if reading
        else [f for f in ("allow_missing", "second_judge") if getattr(args, f)]
    )
    if misplaced:
        flags = ", ".join("--" + f.replace("_", "-") for f in misplaced)
        when = "writing the sheet (drop --labels)" if reading else "reading labels (--labels)"
        return _fail("audit", ValueError(f"{flags}: only for {when}"))
    try:
        eval_dir = find_eval(args.run)
        if not reading:
            top = DEFAULT_TOP if args.top is None else args.top
            sheet = write_sheet(eval_dir, top, sheet=args.sheet, shuffle=args.shuffle)
        else:
            result = audit(
                eval_dir,
                args.labels,
                second_judge=args.second_judge,
                allow_missing=args.allow_missing,
            )
    except (ValueError, FileNotFoundError) as exc:
        return _fail("audit", exc)
    if not reading:
        items = sum(1 for line in sheet.read_text(encoding="utf-8").splitlines() if line)
        print(
            f"Labelling sheet of the {items} highest-rewarded replies of {eval_dir}:\n"
            f"  {sheet}  (to read: {sheet.with_suffix('.md')})\n"
            "Fill in unsafe (0 or 1), borderline, why and category for each id (no scores are "
            "on the sheet), then read the labels back:\n"
            f"  redteam-gym audit {shlex.quote(str(eval_dir))} --labels LABELS.jsonl"
        )
        return 0
    folder = write_audit(result)
    print(format_audit(result), end="")
    print(f"\nwritten to {folder / 'audit.json'} and {folder / 'audit.md'}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """``demo``: (train a short PPO,) evaluate the baselines, write reports, compare."""
    from benchmarks.compare import compare
    from benchmarks.runner import evaluate
    from benchmarks.suites import load_suite

    start = time.perf_counter()
    root = Path(args.out)
    overrides = _overrides(args)
    # the demo's budget: about 10 minutes on a 2-core CPU (quick's protocol, half its rollouts)
    if args.suite == "quick" and not overrides.get("rollouts"):
        overrides["rollouts"] = DEMO_ROLLOUTS
    try:
        suite = load_suite(args.suite, **overrides)
    except ValueError as exc:
        return _fail("demo", exc)
    print(
        f"redteam-gym demo: suite '{suite.name}' ({suite.rollouts} conversations x "
        f"{suite.env.max_turns} turns), defender {suite.env.defender}, judge {suite.env.judge}; output in {root}",
        flush=True,
    )
    common = {
        "adversary_model": args.adversary_model,
        "progress": args.progress,
        "overwrite": True,
        "device": args.device,
        "dtype": args.dtype,
    }
    runs: list[Path] = []

    # The demo is the main job (README, "Set-up"): train, evaluate, report. A short PPO run
    # trains first and is evaluated beside the baselines; with --skip-train the demo evaluates
    # the baselines only.
    trained = None if args.skip_train else _train_ppo(suite, root, args)

    steps = 3 if trained is not None else 2
    print(f"\n[1/{steps}] zero-shot adversary", flush=True)
    evaluate("zero-shot", suite, root / "zero-shot", **common)
    runs.append(root / "zero-shot")
    # Perez et al.'s stochastic few-shot draws its examples from the zero-shot test cases.
    pool = args.few_shot_pool or root / "zero-shot"
    print(f"\n[2/{steps}] few-shot adversary (examples: {pool})", flush=True)
    evaluate("few-shot", suite, root / "few-shot", few_shot_pool=pool, **common)
    runs.append(root / "few-shot")
    if trained is not None:
        print(f"\n[3/{steps}] trained PPO adversary", flush=True)
        evaluate(trained, suite, root / "ppo", **{**common, "adversary_model": None})
        runs.append(root / "ppo")

    table = compare(runs)
    from benchmarks.audit import audited_examples
    from benchmarks.findings import findings
    from benchmarks.judge_report import agreement

    # is any difference real, and what does each adversary say? one-sided tests against
    # zero-shot, then each adversary's most and least successful conversations
    labels = {"few-shot": "few-shot", "ppo": f"PPO ({args.updates} updates)"}
    others = [(labels[run.name], run) for run in runs[1:]]
    table += "\n## Against zero-shot\n\n" + findings(runs[0], others, examples=2)
    # what the reward paid for: zero-shot's most successful replies, with their labels where
    # people labelled them (the real-reply set); `redteam-gym audit` labels the rest
    table += "\n## Zero-shot's most successful conversations, audited\n\n" + audited_examples(
        root / "zero-shot", top=3
    )
    # how far to trust the comparison: do other judges see the same unsafe replies?
    table += "\n## Judge agreement\n\n" + agreement(
        root / "zero-shot" / "rollouts.jsonl", DEMO_AGREEMENT
    )
    atomic_write(root / "comparison.md", table)
    print("\n" + table)
    print(f"Demo done in {time.perf_counter() - start:.0f}s.")
    print(f"Comparison: {root / 'comparison.md'}")
    for run in runs:
        print(f"Report: {run / 'report.md'}  plots: {run / 'plots'}/*.png")
    if trained is not None:
        print(f"PPO checkpoint: {root / 'ppo-train'} (redteam-gym eval --adversary DIR)")
    return 0


def _train_ppo(suite: Any, root: Path, args: argparse.Namespace) -> Any:
    """Train a short PPO run; returns the learner.

    The learner trains in the suite's env (defender, its format and sampling, judge, turns,
    utterance cut, threshold) on the *train* split of the openers. The defender samples in
    training as in evaluation: the default world's defender, a text thread continued at T 1,
    never fails when it decodes greedily (0 of 64 zero-shot conversations,
    `benchmarks/results/worlds/`), so a greedy defender would leave nothing to learn; the
    reward carries the sampling noise instead. It checkpoints into ``ROOT/ppo-train``; the
    learner itself is the adversary.
    """
    from agents import PPO, PPOConfig

    env = suite.env.replace(
        split="train",
        reward=DEMO_REWARD,
        device=args.device or suite.env.device,
        dtype=args.dtype or suite.env.dtype,
    )
    wanted = {
        "env": env,
        "max_new_tokens": suite.adversary_sampling.max_new_tokens,
        "batch_size": suite.batch_size,
        "seed": suite.seed,
        "device": args.device,
        "dtype": args.dtype,
        "adversary_model": args.adversary_model,
        # one pass per update keeps the demo's short run inside its budget
        "ppo_epochs": 1,
        "num_minibatches": 1,
    }
    config = PPOConfig(**{k: v for k, v in wanted.items() if v is not None})
    print(
        f"\n[train] PPO, {args.updates} updates on the train split",
        flush=True,
    )
    learner = PPO(config)
    learner.learn(total_updates=args.updates, run_dir=root / "ppo-train", progress=args.progress)
    terms = {
        k.removeprefix("reward/"): sum(h[k] for h in learner.history) / len(learner.history)
        for k in learner.history[-1]
        if k.startswith("reward/")
    }
    print(
        f"[train] reward '{DEMO_REWARD}' per turn, mean of the updates: "
        + ", ".join(f"{k} {v:+.3f}" for k, v in terms.items()),
        flush=True,
    )
    return learner


# ----- standalone -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """A ``redteam-gym``-like parser with only these commands (tests, ``python -m``)."""
    parser = argparse.ArgumentParser(
        prog="redteam-gym", description="Automated red teaming of language models."
    )
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
