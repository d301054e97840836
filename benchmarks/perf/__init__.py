"""Speed benchmarks, each runnable as a module and writing a markdown result file.

- `python -m benchmarks.perf.vector_env`: the native batched `RedTeamDialogueVectorEnv`
  against Gymnasium's `SyncVectorEnv` over single envs, timed side by side in one process.
- `python -m benchmarks.perf.model_load`: first (GGUF conversion) and cached loads of the
  embedded defender, one single-env step, and `gym.make` construction.
- `python -m benchmarks.perf.learners`: seconds per update and peak memory of each learner.
- `python -m benchmarks.perf.ppo_vs_trl`: our PPO update beside TRL's `PPOTrainer` on the same
  work, and against the floor of its compute.
- `python -m benchmarks.perf.frozen_inference`: the frozen defender's decode tokens/s and
  seconds per reply at batch 1 and 8, ours in fp32, bf16 and int8 beside llama.cpp on the
  shipped GGUF (its worker `llamacpp_worker.py` in a venv of its own), with equal work checked
  token by token, the greedy replies' agreement with fp32, and the judge's texts/s.
- `python -m benchmarks.perf.soak`: RSS after every reset over a few hundred conversations of
  the native vector env (a leak shows as a climb across resets).
- `python -m benchmarks.perf.scale_out`: dialogues per second in-process, with the defender
  served (`transformers serve` on the loopback) and on Ray replicas, side by side, and what
  serving adds per turn.

Results go to `benchmarks/results/perf-*.md`, each with the command that produced it. Every
benchmark's `main` is `run_benchmark` over its own `measure` and `render`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "RESULT_PREFIX",
    "command_line",
    "cpu_model",
    "emit_result",
    "ensure_venv",
    "load_average",
    "machine_info",
    "report_header",
    "run_benchmark",
    "run_child",
    "write_report",
]

_Result = TypeVar("_Result")

RESULT_PREFIX = "RESULT "
"""A benchmark's child process prints its result as one line: this prefix, then JSON."""


def cpu_model() -> str:
    """The CPU's model name from `/proc/cpuinfo` (or `platform.processor()` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    """What a timing depends on: cores, CPU, Python, torch and its thread count, load."""
    import torch
    import transformers

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return {
        "nproc": str(usable),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "transformers": transformers.__version__,
        "load average (1/5/15 min) at start": load_average(),
    }


def command_line() -> str:
    """The command that ran this benchmark, as a user would type it."""
    module = sys.modules["__main__"].__spec__
    head = f"python -m {module.name}" if module is not None else f"python {sys.argv[0]}"
    return " ".join([head, *sys.argv[1:]])


def load_average() -> str:
    """The 1/5/15-minute load averages, as a report line gives them."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return " / ".join(f"{x:.2f}" for x in load)


def report_header(title: str, command: str, info: Mapping[str, str]) -> list[str]:
    """The lines every perf report opens with: its title, the command, when, the machine."""
    from datetime import datetime, timezone

    return [
        f"# {title}",
        "",
        "```",
        command,
        "```",
        "",
        f"Run {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        "",
    ]


def write_report(path: Path, report: str) -> None:
    """Write a benchmark's markdown report (creating its folder) and print it."""
    from redteam_gym.files import atomic_write

    atomic_write(path, report)
    print(report)


def emit_result(result: Mapping[str, Any]) -> None:
    """In a child process: print the result line that `run_child` reads."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_child(
    command: Sequence[str], label: str, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run a benchmark's child process (each one's peak memory and caches are its own) and
    return its result line; a failure raises with the end of its stderr."""
    proc = subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else dict(env),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX)]
    if not lines:
        raise RuntimeError(f"{label} printed no result line:\n{proc.stdout[-2000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def run_benchmark(
    module: str,
    argv: Sequence[str] | None,
    args: argparse.Namespace,
    measure: Callable[[list[str]], _Result],
    render: Callable[[str, dict[str, str], _Result], str],
    child: Callable[[], Mapping[str, Any]] | None = None,
) -> int:
    """A perf benchmark's `main`, whatever it measures.

    Sets torch's thread count when `args.torch_threads` is given. With `child` (the
    benchmark's own subprocess), prints its result line for `run_child` and stops. Otherwise
    notes the command (`python -m module ARGS`) and the machine, runs `measure(ARGS)`, notes
    the load at the end, and writes `render(command, machine, result)` to `args.out`.
    """
    threads = getattr(args, "torch_threads", None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if child is not None:
        emit_result(child())
        return 0
    raw = list(sys.argv[1:] if argv is None else argv)
    command = command_line() if argv is None else " ".join(["python -m", module, *raw])
    info = machine_info()
    result = measure(raw)
    info["load average (1/5/15 min) at end"] = load_average()
    write_report(args.out, render(command, info, result))
    return 0


def ensure_venv(
    path: Path, requirements: Sequence[str], *, first: Sequence[str] = (), note: str = ""
) -> Path:
    """A peer library's own virtual environment (`path`): its python, created and installed
    on first use, and reused while its marker file holds the same `requirements`. `first`
    are installed alone before the rest (torch, so that pip takes the local CPU build)."""
    python = path / "bin" / "python"
    marker = path / "redteam-gym-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if python.is_file() and marker.is_file() and marker.read_text() == wanted:
        return python
    print(f"creating {path} with {' '.join(requirements)} (once{note}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if first:
        subprocess.run([*pip, *first], check=True)
    subprocess.run([*pip, *requirements], check=True)
    marker.write_text(wanted)
    return python
