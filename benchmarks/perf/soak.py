"""Soak: a few hundred conversations through the native vector env, watching memory.

```
python -m benchmarks.perf.soak [--conversations 300] [--num-envs 8] [--turns 2]
    [--defender-max-new-tokens 12] [--warmup 2] [--out benchmarks/results/perf-soak.md]
```

The embedded defaults (SmolLM2-135M-Instruct defender, `profanity` judge, `builtin`
openers) run batch after batch with scripted adversary lines. After every `reset` the
process's resident set size (RSS, from `/proc/self/status`) is recorded against the number
of conversations started so far. A leak shows as a steady climb across resets; a flat
series means that what one batch of dialogues allocates is given back before the next.

The slope is a least-squares fit of RSS on conversations, over the samples after the first
`--warmup` resets (the first steps allocate the model's working buffers and the judge's
vectoriser once).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.perf import (
    report_header,
    run_benchmark,
)
from benchmarks.perf.vector_env import UTTERANCES

MODULE = "benchmarks.perf.soak"
FLAT_MIB_PER_100 = 2.0
"""Growth per 100 conversations under which the series counts as flat."""


def rss_mib() -> float:
    """This process's resident set size in MiB (`VmRSS` of `/proc/self/status`)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import psutil  # not on Linux: psutil reads the same figure

    return psutil.Process().memory_info().rss / 2**20


def live_objects() -> tuple[float, int]:
    """MiB of tensor storage reachable from Python objects, and the number of objects the
    garbage collector tracks: what grows when the code (not the allocator) leaks."""
    import gc

    import torch

    seen: set[int] = set()
    total = 0
    objects = gc.get_objects()
    with warnings.catch_warnings():  # isinstance on torch's deprecated aliases warns
        warnings.simplefilter("ignore", FutureWarning)
        tensors = [obj for obj in objects if isinstance(obj, torch.Tensor)]
    for tensor in tensors:
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total / 2**20, len(objects)


def slope_per_100(conversations: Sequence[int], rss: Sequence[float]) -> float:
    """Least-squares growth of RSS (MiB) per 100 conversations; 0 with under two samples."""
    if len(conversations) < 2:
        return 0.0
    x = np.asarray(conversations, dtype=np.float64)
    y = np.asarray(rss, dtype=np.float64)
    return float(np.polyfit(x, y, 1)[0] * 100)


def run(args: argparse.Namespace) -> tuple[list[int], list[float], list[tuple[float, int]], float]:
    """The series: conversations started, RSS and live objects after each reset, seconds."""
    import gymnasium as gym

    import redteam_gym  # noqa: F401  (registers the env id)

    envs = gym.make_vec(
        "RedTeamDialogue-v0",
        num_envs=args.num_envs,
        max_turns=args.turns,
        defender_max_new_tokens=args.defender_max_new_tokens,
    )
    started: list[int] = []
    series: list[float] = []
    live: list[tuple[float, int]] = []
    begin = time.perf_counter()
    batch = 0
    while batch * args.num_envs < args.conversations:
        envs.reset(seed=args.seed + batch)
        started.append((batch + 1) * args.num_envs)
        series.append(rss_mib())
        live.append(live_objects())
        for turn in range(args.turns):
            actions = [
                UTTERANCES[(i + turn + batch) % len(UTTERANCES)] for i in range(args.num_envs)
            ]
            envs.step(actions)
        batch += 1
        if batch % 5 == 0 or batch * args.num_envs >= args.conversations:
            print(
                f"{started[-1]:>5} conversations  RSS {series[-1]:7.1f} MiB  tensors "
                f"{live[-1][0]:6.1f} MiB  objects {live[-1][1]}  "
                f"({time.perf_counter() - begin:.0f} s)",
                flush=True,
            )
    envs.close()
    return started, series, live, time.perf_counter() - begin


def render_report(
    args: argparse.Namespace,
    command: str,
    info: dict[str, str],
    started: list[int],
    series: list[float],
    live: list[tuple[float, int]],
    seconds: float,
) -> str:
    warm = min(args.warmup, len(series) - 1)
    slope = slope_per_100(started[warm:], series[warm:])
    flat = abs(slope) < FLAT_MIB_PER_100
    tensors = [t for t, _ in live]
    objects = [n for _, n in live]
    lines = [
        *report_header("Soak: RSS across resets of the native vector env", command, info),
        "## Settings",
        "",
        "- embedded defaults: SmolLM2-135M-Instruct defender, `profanity` judge, `builtin` "
        "openers (train split), fp32 on CPU",
        f"- {args.num_envs} envs, {args.turns} turn(s) per conversation, defender replies up to "
        f"{args.defender_max_new_tokens} tokens, scripted adversary lines",
        f"- {len(series)} resets, {started[-1]} conversations in {seconds:.0f} s",
        "",
        "## Results",
        "",
        "| figure | RSS (MiB) |",
        "|---|---:|",
        f"| first (after reset 1, before any step) | {series[0]:.1f} |",
        f"| after warm-up (reset {warm + 1}) | {series[warm]:.1f} |",
        f"| last (reset {len(series)}) | {series[-1]:.1f} |",
        f"| max | {max(series):.1f} |",
        f"| slope after warm-up, per 100 conversations | {slope:+.2f} |",
        "",
        "What the code holds, beside what the allocator holds:",
        "",
        "| figure | first | after warm-up | last | max | slope per 100 conversations |",
        "|---|---:|---:|---:|---:|---:|",
        f"| live tensor storage (MiB) | {tensors[0]:.1f} | {tensors[warm]:.1f} | "
        f"{tensors[-1]:.1f} | {max(tensors):.1f} | "
        f"{slope_per_100(started[warm:], tensors[warm:]):+.2f} |",
        f"| objects tracked by the gc | {objects[0]} | {objects[warm]} | {objects[-1]} | "
        f"{max(objects)} | {slope_per_100(started[warm:], objects[warm:]):+.1f} |",
        "",
        f"Verdict: {'flat' if flat else 'GROWING'} (|slope| "
        f"{'<' if flat else '>='} {FLAT_MIB_PER_100:g} MiB per 100 conversations).",
        "",
        "## Series",
        "",
        "| conversations | RSS (MiB) | live tensors (MiB) | gc objects |",
        "|---:|---:|---:|---:|",
        *(
            f"| {n} | {r:.1f} | {t:.1f} | {o} |"
            for n, r, (t, o) in zip(started, series, live, strict=True)
        ),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    p.add_argument("--conversations", type=int, default=300, help="conversations to run")
    p.add_argument("--num-envs", type=int, default=8, help="sub-envs (conversations per reset)")
    p.add_argument("--turns", type=int, default=2, help="turns per conversation")
    p.add_argument("--defender-max-new-tokens", type=int, default=12, help="reply length cap")
    p.add_argument("--warmup", type=int, default=2, help="resets left out of the slope")
    p.add_argument("--seed", type=int, default=0, help="seed of the first reset")
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/perf-soak.md"), help="report file"
    )
    args = p.parse_args(argv)
    if args.conversations < 1 or args.num_envs < 1:
        p.error("--conversations and --num-envs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(
        MODULE,
        argv,
        args,
        lambda _: measure(args),
        lambda command, info, result: render_report(args, command, info, *result),
    )


def measure(
    args: argparse.Namespace,
) -> tuple[list[int], list[float], list[tuple[float, int]], float]:
    """`run`, with its summary printed."""
    started, series, live, seconds = run(args)
    warm = min(args.warmup, len(series) - 1)
    slope = slope_per_100(started[warm:], series[warm:])
    print(
        f"RSS first {series[0]:.1f} MiB, last {series[-1]:.1f} MiB, max {max(series):.1f} MiB, "
        f"slope {slope:+.2f} MiB per 100 conversations (after {warm} warm-up resets)"
    )
    return started, series, live, seconds


if __name__ == "__main__":
    raise SystemExit(main())
