"""Seconds per update and peak memory of each learner on the embedded defaults.

```
python -m benchmarks.perf.learners [--algos ppo a2c ra-rlhf] [--turns 1 3] [--updates 3]
    [--batch-size 8] [--max-new-tokens 24] [--defender-max-new-tokens 64]
    [--defender-weights dense int4]
    [--torch-threads N] [--micro-batch-size N] [--profile]
    [--out benchmarks/results/perf-learners.md]
```

Each (learner, turns) pair trains for `--updates` updates in a fresh Python subprocess, so
its peak resident memory (`ru_maxrss`) is its own: the actor, the frozen reference shared with
the defender (a copy of its own when the defender runs 4-bit weights: `--defender-weights`), the critic, AdamW states, the judge and the rollout. The first update is
reported apart (it also builds the env and warms the allocator); the table gives the median of
the others, split into rollout collection (of which the env's step: the defender and the
judge) and the optimisation step. With `--profile`, the last update of each run is profiled
with `torch.profiler`, and the report lists the operators with the most self CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.perf import (
    report_header,
    run_benchmark,
    run_child,
)

MODULE = "benchmarks.perf.learners"


def _child(algo: str, turns: int, weights: str, args: argparse.Namespace) -> dict[str, Any]:
    from agents import LEARNERS
    from redteam_gym.envs import EnvConfig

    start = time.perf_counter()
    cls = LEARNERS[algo]
    config = cls.config_class(
        env=EnvConfig(
            max_turns=turns,
            defender_max_new_tokens=args.defender_max_new_tokens,
            defender_temperature=args.defender_temperature,
            defender_weights=weights,
        ),
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        seed=0,
        **({"micro_batch_size": args.micro_batch_size} if args.micro_batch_size else {}),
    )
    learner = cls(config)
    built = time.perf_counter() - start
    updates: list[dict[str, float]] = []
    learner.total_updates = args.updates
    env_seconds = [0.0]
    defender_tokens = [0]
    profile = None
    for u in range(args.updates):
        t0 = time.perf_counter()
        if learner.update_idx == 0:
            env = learner.env  # the env is built lazily: count it in the first update
            env.step = _timed(env.step, env_seconds, defender_tokens, _defender_tokenizer(env))
        env_seconds[0] = 0.0
        defender_tokens[0] = 0
        profiler = _profiler() if args.profile and u == args.updates - 1 else None
        with profiler or contextlib.nullcontext():
            rollout = learner.collect_rollout()
            t1 = time.perf_counter()
            learner.train(rollout)
        learner.update_idx += 1
        t2 = time.perf_counter()
        if profiler is not None:
            profile = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        updates.append(
            {
                "rollout_s": t1 - t0,
                "env_s": env_seconds[0],
                "train_s": t2 - t1,
                "tokens": float(sum(len(s.tokens) for s in rollout.segments)),
                "defender_tokens": float(defender_tokens[0]),
            }
        )
    return {
        "profile": profile,
        "build_s": built,
        "updates": updates,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_params": sum(p.numel() for p in learner.policy.parameters() if p.requires_grad),
    }


def _defender_tokenizer(env: Any) -> Any:
    engine = getattr(getattr(env, "unwrapped", env), "engine", None)
    return getattr(getattr(engine, "defender", None), "tokenizer", None)


def _timed(step, total: list[float], tokens: list[int], tokenizer: Any):
    """`step`, timed into `total[0]`, with the defender's replies' tokens (their text
    re-tokenised) counted into `tokens[0]`: the two sides of a comparison do equal work only
    if their defenders say as much."""

    def timed(actions):
        t0 = time.perf_counter()
        try:
            out = step(actions)
        finally:
            total[0] += time.perf_counter() - t0
        replies = out[-1].get("defender_response", ()) if isinstance(out[-1], dict) else ()
        if tokenizer is not None:
            tokens[0] += sum(
                len(tokenizer(str(r), add_special_tokens=False).input_ids) for r in replies if r
            )
        return out

    return timed


def _profiler():
    import torch

    return torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])


def _run_child(algo: str, turns: int, weights: str, argv: list[str]) -> dict[str, Any]:
    return run_child(
        [sys.executable, "-m", MODULE, *argv, "--child", algo, str(turns), weights],
        f"{algo} turns={turns} defender weights={weights}",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Seconds per update and peak memory of each learner, one subprocess each.",
    )
    p.add_argument("--algos", nargs="+", default=["ppo", "a2c"], help="(default: ppo a2c)")
    p.add_argument("--turns", nargs="+", type=int, default=[1, 3], help="(default: 1 3)")
    p.add_argument("--updates", type=int, default=3, help="updates per run (default 3)")
    p.add_argument("--batch-size", type=int, default=8, help="dialogues per update (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="adversary tokens (default 24)")
    p.add_argument("--defender-max-new-tokens", type=int, default=64, help="(default 64)")
    p.add_argument(
        "--defender-temperature", type=float, default=0.0, help="(default 0: greedy, the env's)"
    )
    p.add_argument(
        "--defender-weights",
        nargs="+",
        default=["dense"],
        choices=["dense", "int4"],
        help="the defender's weights, each in runs of its own (default: dense)",
    )
    p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument(
        "--micro-batch-size", type=int, default=0, help="dialogues per backward (default: all)"
    )
    p.add_argument("--profile", action="store_true", help="profile the last update of each run")
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/perf-learners.md"), help="report"
    )
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.updates < 2:
        p.error("--updates must be >= 2 (the first update is reported apart)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    child = None
    if args.child:
        algo, turns, weights = args.child
        child = lambda: _child(algo, int(turns), weights, args)  # noqa: E731
    return run_benchmark(
        MODULE,
        argv,
        args,
        lambda raw: measure(args, raw),
        lambda command, info, rows: render_report(args, command, info, rows),
        child=child,
    )


Row = tuple[str, int, str, dict[str, Any]]
"""`(algo, turns, defender weights, result)`."""


def measure(args: argparse.Namespace, raw: list[str]) -> list[Row]:
    """Each learner, turn count and defender weights in a subprocess of its own."""
    rows = []
    for algo in args.algos:
        for turns in args.turns:
            for weights in args.defender_weights:
                print(f"{algo}, {turns} turn(s), {weights} defender ...", flush=True)
                result = _run_child(algo, turns, weights, raw)
                rows.append((algo, turns, weights, result))
                later = result["updates"][1:]
                per = statistics.median(u["rollout_s"] + u["train_s"] for u in later)
                print(f"    {per:.1f} s/update, peak {result['max_rss_mib']:.0f} MiB", flush=True)
    return rows


def render_report(
    args: argparse.Namespace,
    command: str,
    info: dict[str, str],
    rows: list[Row],
) -> str:
    lines = [
        *report_header("Learners: seconds per update and peak memory", command, info),
        "## Settings",
        "",
        "- embedded defaults: SmolLM2-135M-Instruct adversary (bottom half frozen, fp32) and "
        "defender, `profanity` judge, on CPU. A `dense` defender is one shared frozen fp32 copy, "
        "also the KL reference; an `int4` one runs the GGUF's 4-bit weights "
        '(`weights="int4"`, the default\'s choice on this CPU) beside its own fp32 reference',
        f"- batch {args.batch_size} dialogues, {args.max_new_tokens}-token utterances, "
        f"defender replies up to {args.defender_max_new_tokens} tokens, "
        + (f"sampled at T {args.defender_temperature:g}" if args.defender_temperature else "greedy")
        + "; every other setting is "
        "the learner config's default (PPO and RA-RLHF: 4 epochs x 2 minibatches)",
        f"- {args.updates} updates per run, each run in a fresh subprocess",
        "",
        "## Results",
        "",
        "| learner | turns | defender weights | s/update (median of updates 2..) | rollout s | of which env s | train s | first update s | adversary tokens/update | defender tokens/update | peak RSS |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for algo, turns, weights, r in rows:
        later = r["updates"][1:]
        lines.append(
            f"| {algo} | {turns} | {weights} | "
            f"{statistics.median(u['rollout_s'] + u['train_s'] for u in later):.1f} | "
            f"{statistics.median(u['rollout_s'] for u in later):.1f} | "
            f"{statistics.median(u.get('env_s', float('nan')) for u in later):.1f} | "
            f"{statistics.median(u['train_s'] for u in later):.1f} | "
            f"{r['updates'][0]['rollout_s'] + r['updates'][0]['train_s']:.1f} | "
            f"{statistics.median(u['tokens'] for u in later):.0f} | "
            f"{statistics.median(u.get('defender_tokens', float('nan')) for u in later):.0f} | "
            f"{r['max_rss_mib'] / 1024:.2f} GiB |"
        )
    lines += [
        "",
        "Peak RSS is the subprocess's `ru_maxrss`: Python, torch, the models and the rollout. "
        "Defender tokens are its replies' text re-tokenised: two rows compare equal work only "
        "where these (and the adversary's) match.",
    ]
    for algo, turns, weights, r in rows:
        if r.get("profile"):
            lines += [
                "",
                f"### Profile: {algo}, {turns} turn(s), {weights} defender, last update "
                "(top self CPU time)",
                "",
                "```",
                r["profile"].rstrip(),
                "```",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
