"""Conversations per second of `redteam-gym eval`, one defender weights setting beside another.

```
python -m benchmarks.perf.eval_throughput [--weights dense int4] [--suite perez-eval]
    [--rollouts 32] [--rounds 1] [--torch-threads N]
    [--out benchmarks/results/perf-eval-throughput.md]
```

Each eval is the command a user types (`redteam-gym eval --adversary zero-shot --suite SUITE
--rollouts N --defender-weights W`, into a temporary DIR), run in a subprocess of its own so
that its peak memory is its own; the settings alternate for `--rounds` rounds, so a drift in
the machine's speed hits all of them. The report gives each eval's conversations/s as the eval
itself records it (`summary.json`: the rollouts over the generation time, the models' loading
apart), its wall time and peak RSS, and the share of defender replies that each setting makes
identical to the first one's (same seed: the adversary's first lines and the sampling draws
are the same until the defenders part).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.perf import report_header, run_benchmark, run_child

MODULE = "benchmarks.perf.eval_throughput"


def _child(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.cli import add_parsers

    weights, out = args.child
    command = [
        "eval",
        "--adversary",
        "zero-shot",
        "--suite",
        args.suite,
        "--rollouts",
        str(args.rollouts),
        "--defender-weights",
        weights,
        "--no-progress",
        "--overwrite",
        "--out",
        out,
    ]
    parser = argparse.ArgumentParser(prog="redteam-gym")
    add_parsers(parser.add_subparsers(dest="command", required=True), ("eval",))
    parsed = parser.parse_args(command)  # `redteam-gym eval`'s own parser and function
    start = time.perf_counter()
    status = int(parsed.func(parsed))
    if status:
        raise RuntimeError(f"redteam-gym {' '.join(command)} exited with {status}")
    summary = json.loads((Path(out) / "summary.json").read_text(encoding="utf-8"))
    rollouts = [json.loads(line) for line in (Path(out) / "rollouts.jsonl").open()]
    rollouts.sort(key=lambda r: r["rollout"])
    return {
        "wall_s": time.perf_counter() - start,
        "rollouts_per_s": summary["rollouts_per_s"],
        "generation_s": summary["generation_time_s"],
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "replies": [[t["defender"] for t in r["turns"]] for r in rollouts],
        "command": "redteam-gym " + " ".join(command[:-2]),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Conversations/s of redteam-gym eval for each defender weights setting.",
    )
    p.add_argument("--weights", nargs="+", default=["dense", "int4"], help="(default: dense int4)")
    p.add_argument("--suite", default="perez-eval", help="(default: perez-eval)")
    p.add_argument("--rollouts", type=int, default=32, help="conversations per eval (default 32)")
    p.add_argument("--rounds", type=int, default=1, help="evals per setting (default 1)")
    p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/perf-eval-throughput.md"))
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rollouts < 1 or args.rounds < 1:
        p.error("--rollouts and --rounds must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(
        MODULE,
        argv,
        args,
        lambda raw: measure(args, raw),
        lambda command, info, runs: render_report(args, command, info, runs),
        child=(lambda: _child(args)) if args.child else None,
    )


def measure(args: argparse.Namespace, raw: list[str]) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {w: [] for w in args.weights}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for weights in args.weights:
                print(f"round {r + 1}: {weights} ...", flush=True)
                out = str(Path(tmp) / f"{weights}-{r}")
                result = run_child(
                    [sys.executable, "-m", MODULE, *raw, "--child", weights, out], weights
                )
                runs[weights].append(result)
                print(f"    {result['rollouts_per_s']:.3f} conversations/s", flush=True)
    return runs


def render_report(
    args: argparse.Namespace,
    command: str,
    info: dict[str, str],
    runs: dict[str, list[dict[str, Any]]],
) -> str:
    first = args.weights[0]
    lines = [
        *report_header("Eval throughput: conversations/s by defender weights", command, info),
        "## Work",
        "",
        f"Each eval: `{runs[first][0]['command']}`, in a subprocess of its own; "
        f"{args.rounds} round(s), the settings alternating.",
        "",
        "## Results",
        "",
        f"| defender weights | conversations/s (median) | vs {first} | generation s | wall s "
        f"| peak RSS | replies identical to {first}'s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base_rate = statistics.median(r["rollouts_per_s"] for r in runs[first])
    base_replies = [x for conv in runs[first][0]["replies"] for x in conv]
    for weights, results in runs.items():
        rate = statistics.median(r["rollouts_per_s"] for r in results)
        replies = [x for conv in results[0]["replies"] for x in conv]
        same = sum(a == b for a, b in zip(replies, base_replies, strict=False))
        lines.append(
            f"| {weights} | {rate:.3f} | {rate / base_rate:.2f}x "
            f"| {statistics.median(r['generation_s'] for r in results):.1f} "
            f"| {statistics.median(r['wall_s'] for r in results):.1f} "
            f"| {max(r['max_rss_mib'] for r in results) / 1024:.2f} GiB "
            f"| {same}/{len(base_replies)} |"
        )
    lines += [
        "",
        "Conversations/s is the eval's own figure: its rollouts over the time spent generating "
        "and judging them (model loading apart). Identical replies: the same seed, so the "
        "adversary's lines and the sampling draws agree until the defenders' replies part; "
        "after that the conversations differ.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
