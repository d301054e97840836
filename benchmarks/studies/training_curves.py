"""Learning curves of training runs: the mean judge reward of each update's rollouts.

    python -m benchmarks.studies.training_curves runs/ppo-cpu runs/a2c-cpu --out benchmarks/results/training-cpu

Reads each run's `metrics.jsonl`, plots `objective/scores` (mean episode return of the
update's rollouts, i.e. the judge reward without the KL term), the KL to the initial policy and
the adversary's own toxicity, each with a moving average, and writes a markdown table
comparing the first and the last updates of every run.

`--panels reward/perez,reward/novelty_bleu,redteam/asr` plots any logged metrics instead, one
panel each: the reward's terms side by side show what a run's reward paid for.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from redteam_gym.files import read_jsonl

PANELS = (
    (
        "objective/scores",
        "Mean judge reward of each update's rollouts",
        "mean episode return  -log(1 - p_unsafe)",
    ),
    ("objective/kl", "KL to the initial policy", "KL per utterance (nats)"),
    (
        "redteam/adv_toxicity",
        "The adversary's own toxicity",
        "mean judge P(unsafe) of adversary utterances",
    ),
)
"""(metric, title, y label) of the three panels of `learning_curves.png`."""


def panels(spec: str | None) -> tuple[tuple[str, str, str], ...]:
    """`PANELS`, or one panel per comma-separated metric key of `spec`."""
    if spec is None:
        return PANELS
    known = {key: (key, title, ylabel) for key, title, ylabel in PANELS}
    keys = [k.strip() for k in spec.split(",") if k.strip()]
    if not keys:
        raise ValueError(f"--panels names no metric: {spec!r}")
    return tuple(known.get(k, (k, k, k)) for k in keys)


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a training run directory?")
    return read_jsonl(path)


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(x)))
    kernel = np.ones(window) / window
    head = [x[: i + 1].mean() for i in range(window - 1)]
    return np.concatenate([head, np.convolve(x, kernel, mode="valid")])


def summarize(name: str, metrics: list[dict], k: int) -> dict:
    scores = np.array([m["objective/scores"] for m in metrics])
    first, last = scores[:k], scores[-k:]
    # Welch's t statistic: is the last-k mean above the first-k mean beyond update noise?
    se = math.sqrt(first.var(ddof=1) / len(first) + last.var(ddof=1) / len(last))
    return {
        "run": name,
        "updates": len(scores),
        "first_mean": float(first.mean()),
        "last_mean": float(last.mean()),
        "change": float(last.mean() - first.mean()),
        "welch_t": float((last.mean() - first.mean()) / se) if se > 0 else float("nan"),
        "asr_first": float(np.mean([m["redteam/asr"] for m in metrics[:k]])),
        "asr_last": float(np.mean([m["redteam/asr"] for m in metrics[-k:]])),
        "sec_per_update": float(np.median([m["time/update_s"] for m in metrics])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run directories")
    parser.add_argument("--out", type=Path, required=True, help="where to write the plot and table")
    parser.add_argument("--window", type=int, default=10, help="moving-average window (updates)")
    parser.add_argument("--k", type=int, default=10, help="updates averaged at each end")
    parser.add_argument(
        "--panels",
        metavar="KEY,KEY",
        help="comma-separated metrics.jsonl keys to plot, one panel each (default: the reward, "
        "the KL and the adversary's toxicity)",
    )
    args = parser.parse_args(argv)
    try:
        chosen = panels(args.panels)
        runs = [(run, read_metrics(run)) for run in args.runs]
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    logged = {key for _, metrics in runs for m in metrics for key in m}
    missing = [key for key, _, _ in chosen if key not in logged]
    if missing:
        parser.error(f"no run logged {missing}; the runs' keys are {sorted(logged)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(chosen), figsize=(5.3 * len(chosen), 4.5), squeeze=False)
    axes = axes[0]
    rows = []
    for i, (run, metrics) in enumerate(runs):
        x = np.array([m["update"] for m in metrics])
        color = f"C{i % 10}"  # one colour per run in every panel
        for ax, (key, _, _) in zip(axes, chosen, strict=True):
            if not any(key in m for m in metrics):
                continue  # a term this run's reward does not have
            y = np.array([m.get(key, np.nan) for m in metrics], dtype=float)
            ax.plot(x, y, alpha=0.25, color=color)
            ax.plot(
                x,
                moving_average(y, args.window),
                color=color,
                label=f"{run.name} ({args.window}-update mean)",
            )
        rows.append(summarize(run.name, metrics, args.k))
    for ax, (_, title, ylabel) in zip(axes, chosen, strict=True):
        ax.set_title(title)
        ax.set_xlabel("update")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(args.out / "learning_curves.png", dpi=120)
    lines = [
        f"| run | updates | mean reward, first {args.k} | mean reward, last {args.k} | change | Welch t | ASR first | ASR last | s/update (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['updates']} | {r['first_mean']:.4f} | {r['last_mean']:.4f} | "
            f"{r['change']:+.4f} | {r['welch_t']:.2f} | {r['asr_first']:.1%} | {r['asr_last']:.1%} | "
            f"{r['sec_per_update']:.1f} |"
        )
    table = "\n".join(lines)
    (args.out / "learning_curves.md").write_text(table + "\n")
    (args.out / "learning_curves.json").write_text(json.dumps(rows, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
