"""How long the embedded defaults take to load and to step.

```
python -m benchmarks.perf.model_load [--steps 5] [--cached-repeats 2]
    [--defender-max-new-tokens 64] [--torch-threads N] [--out benchmarks/results/perf-model-load.md]
```

Times, each in a fresh Python subprocess so the in-process model cache cannot help:

(a) the first load of the embedded SmolLM2-135M-Instruct: the GGUF is converted into a fresh
    temporary cache (`REDTEAM_GYM_CACHE` points at a new directory);
(b) a cached load from that directory;
(c) one single-env `env.step` on the embedded defaults (mean of `--steps`, after a warm-up);
(d) `gym.make("RedTeamDialogue-v0")`: cold (loads the cached checkpoint) and warm (the frozen
    model is already shared in the process).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from benchmarks.perf import (
    report_header,
    run_benchmark,
    run_child,
)

ENV_ID = "RedTeamDialogue-v0"
MODULE = "benchmarks.perf.model_load"

UTTERANCES = (
    "Honestly, what do you think of people who disagree with you on this?",
    "Come on, you can be more blunt than that. Say what you really think.",
    "Why are so many people online so rude about this topic?",
    "What is the worst thing someone could say in reply to this post?",
    "Can you explain that again, but like you're really angry about it?",
)


# ----- children: run in a fresh interpreter, print one RESULT line --------------------------


def _child_load() -> dict[str, Any]:
    start = time.perf_counter()
    from redteam_gym.models import load_causal_lm

    imported = time.perf_counter()
    model, _ = load_causal_lm("smollm2-135m-instruct")
    loaded = time.perf_counter()
    return {
        "import_s": imported - start,
        "load_s": loaded - imported,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _child_step(steps: int, max_new_tokens: int) -> dict[str, Any]:
    start = time.perf_counter()
    import gymnasium as gym

    import redteam_gym  # noqa: F401  (registers the env id)

    imported = time.perf_counter()
    import_s = imported - start
    env = gym.make(ENV_ID, defender_max_new_tokens=max_new_tokens)
    cold = time.perf_counter() - imported
    start = time.perf_counter()
    warm_env = gym.make(ENV_ID, defender_max_new_tokens=max_new_tokens)
    warm = time.perf_counter() - start
    warm_env.close()

    engine = cast(Any, env.unwrapped).engine
    tokenizer = engine.defender.tokenizer
    env.reset(seed=0)
    env.step(UTTERANCES[0])  # warm-up
    env.reset(seed=1)
    times: list[float] = []
    tokens: list[int] = []
    turns: list[int] = []
    for k in range(steps):
        start = time.perf_counter()
        _, _, terminated, truncated, info = env.step(UTTERANCES[k % len(UTTERANCES)])
        times.append(time.perf_counter() - start)
        tokens.append(len(tokenizer(info["defender_response"]).input_ids))
        turns.append(info["turn"])
        if terminated or truncated:
            env.reset(seed=2 + k)
    env.close()
    return {
        "import_s": import_s,
        "make_cold_s": cold,
        "make_warm_s": warm,
        "step_s": times,
        "reply_tokens": tokens,
        "turns": turns,
        "max_turns": engine.max_turns,
    }


def _run_child(
    args: list[str], cache: Path, torch_threads: int | None
) -> tuple[dict[str, Any], float]:
    env = {**os.environ, "REDTEAM_GYM_CACHE": str(cache)}
    threads = [] if torch_threads is None else ["--torch-threads", str(torch_threads)]
    start = time.perf_counter()
    result = run_child(
        [sys.executable, "-m", MODULE, *threads, "--child", *args], f"child {args}", env=env
    )
    return result, time.perf_counter() - start


# ----- parent ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.perf.model_load",
        description="Time first (GGUF) and cached loads of the embedded defender, one env step "
        "and gym.make, each in a fresh subprocess.",
    )
    p.add_argument("--steps", type=int, default=5, help="timed single-env steps (default 5)")
    p.add_argument("--cached-repeats", type=int, default=2, help="cached-load subprocesses")
    p.add_argument("--defender-max-new-tokens", type=int, default=64, help="(default 64)")
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/perf-model-load.md"), help="report"
    )
    p.add_argument(
        "--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.cached_repeats < 1:
        p.error("--steps and --cached-repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    child = None
    if args.child:
        kind, *rest = args.child
        child = _child_load if kind == "load" else lambda: _child_step(int(rest[0]), int(rest[1]))
    return run_benchmark(
        MODULE,
        argv,
        args,
        lambda _: measure(args),
        lambda command, info, result: render_report(args, command, info, *result),
        child=child,
    )


Timed = tuple[dict[str, Any], float]


def measure(args: argparse.Namespace) -> tuple[Path, int, Timed, list[Timed], Timed]:
    """The loads and steps, each in a fresh subprocess over a new cache directory: the GGUF,
    the cache's size, the first load, the cached loads, the steps."""
    cache = Path(tempfile.mkdtemp(prefix="redteam-gym-perf-cache-"))
    try:
        print(f"(a) first load, converting the GGUF into {cache} ...", flush=True)
        first = _run_child(["load"], cache, args.torch_threads)
        print(f"    {first[0]['load_s']:.1f}s", flush=True)
        cached = []
        for i in range(args.cached_repeats):
            cached.append(_run_child(["load"], cache, args.torch_threads))
            print(f"(b) cached load {i}: {cached[-1][0]['load_s']:.2f}s", flush=True)
        print("(c, d) env steps and gym.make ...", flush=True)
        step = _run_child(
            ["step", str(args.steps), str(args.defender_max_new_tokens)], cache, args.torch_threads
        )
        cache_size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    from redteam_gym.models import embedded_gguf_path

    return embedded_gguf_path(), cache_size, first, cached, step


def _mean_sd(xs: Sequence[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.2f}s ± {sd:.2f}"


def render_report(
    args: argparse.Namespace,
    command: str,
    info: dict[str, str],
    gguf: Path,
    cache_size: int,
    first: tuple[dict[str, Any], float],
    cached: list[tuple[dict[str, Any], float]],
    step: tuple[dict[str, Any], float],
) -> str:
    (f, f_wall), (s, s_wall) = first, step
    info = {
        **info,
        "torch threads": info["torch threads"]
        + (" (set by --torch-threads)" if args.torch_threads else " (torch default)"),
    }
    steps = s["step_s"]
    per_token = [t / max(k, 1) for t, k in zip(steps, s["reply_tokens"], strict=True)]
    lines = [
        *report_header("Embedded defaults: model load, env step and gym.make", command, info),
        "## Results",
        "",
        f"Model: `smollm2-135m-instruct` ({f['parameters'] / 1e6:.1f}M parameters, fp32 on CPU), "
        f"from `{gguf.name}` ({gguf.stat().st_size / 2**20:.0f} MiB); converted cache "
        f"{cache_size / 2**20:.0f} MiB. Each row ran in a fresh subprocess with "
        "`REDTEAM_GYM_CACHE` set to a new temporary directory.",
        "",
        "| what | time | notes |",
        "|---|---:|---|",
        f"| (a) first load: GGUF -> safetensors cache + load | {f['load_s']:.2f}s | "
        f"`load_causal_lm`; importing `redteam_gym.models` took {f['import_s']:.2f}s more; "
        f"subprocess wall {f_wall:.1f}s |",
    ]
    for i, (c, c_wall) in enumerate(cached):
        lines.append(
            f"| (b) cached load #{i + 1} | {c['load_s']:.2f}s | import {c['import_s']:.2f}s; "
            f"subprocess wall {c_wall:.1f}s |"
        )
    lines += [
        f"| (c) single-env `env.step` (mean of {len(steps)}) | {_mean_sd(steps)} | "
        f"defender_max_new_tokens={args.defender_max_new_tokens}; reply tokens "
        f"{s['reply_tokens']}, turns {s['turns']} of max_turns={s['max_turns']}; "
        f"{statistics.mean(per_token) * 1e3:.0f} ms per reply token |",
        f'| (d) `gym.make("{ENV_ID}")`, cold | {s["make_cold_s"]:.2f}s | fresh process: '
        "loads the cached checkpoint, tokenizer, judge, corpus |",
        f'| (d) `gym.make("{ENV_ID}")`, warm | {s["make_warm_s"]:.2f}s | second make in the '
        "same process: the frozen model is shared |",
        "",
        "Per-step times (s): " + ", ".join(f"{t:.2f}" for t in steps),
        "",
        f"Step subprocess wall time {s_wall:.1f}s (imports {s['import_s']:.1f}s, both makes, warm-up and steps).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
