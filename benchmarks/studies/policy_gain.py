"""Did training raise the judge reward? A run's initial and trained policy, side by side.

    python -m benchmarks.studies.policy_gain runs/ppo --rollouts 128 --out benchmarks/results/training-cpu/ppo-gain

Both adversaries play the same held-out (eval-split) openers, in the same order and with the
same seeds, against the run's own defender, judge, turns and defender reply length. The
initial policy is the run's configuration before any update (its adversary model, untrained).
The table gives each policy's mean episode return (the judge reward -log(1 - p_unsafe) summed
over turns, no KL term) with a 95% interval, its ASR and mean defender P(unsafe), and the
gain's Welch t and paired t (conversation i has the same opener on both sides), and one-sided
rank tests (Mann-Whitney U; Wilcoxon signed-rank on the pairs) that do not let a few
near-maximal rewards decide the answer. Each side's
conversations are kept in `initial/` and `trained/` (resumable).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runner import evaluate
from benchmarks.suites import Suite
from redteam_gym.files import read_jsonl


def run_suite(config: Any, rollouts: int, seed: int) -> Suite:
    """The run's env settings on the eval split, as an evaluation suite."""
    return Suite(
        name="policy-gain",
        description="A training run's env settings on held-out openers.",
        env=config.env.replace(split="eval"),
        rollouts=rollouts,
        batch_size=config.batch_size,
        seed=seed,
    )


def returns_of(eval_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Episode returns and openers of an eval DIR's conversations, in rollout order."""
    rows = sorted(read_jsonl(eval_dir / "rollouts.jsonl"), key=lambda r: r["rollout"])
    return np.asarray([r["return"] for r in rows]), [r["opener"] for r in rows]


def welch_t(a: np.ndarray, b: np.ndarray) -> float:
    """Welch's t of mean(b) - mean(a), two independent samples."""
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return float((b.mean() - a.mean()) / se) if se > 0 else math.nan


def paired_t(a: np.ndarray, b: np.ndarray) -> float:
    """Paired t of b - a, conversation by conversation (same opener and seed on both sides)."""
    d = b - a
    se = d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() / se) if se > 0 else math.nan


def rank_tests(a: np.ndarray, b: np.ndarray, paired: bool) -> dict[str, float]:
    """One-sided p-values that b's returns exceed a's, robust to the heavy tail of a judge
    reward (a few conversations near -log(1 - p_max) swamp Welch's t): Mann-Whitney U on the
    two samples and, when conversation i has the same opener on both sides, Wilcoxon's
    signed-rank test on the differences."""
    from scipy.stats import mannwhitneyu, wilcoxon

    out = {"mannwhitney_p": float(mannwhitneyu(b, a, alternative="greater").pvalue)}
    if paired and np.any(b != a):
        out["wilcoxon_p"] = float(wilcoxon(b, a, alternative="greater").pvalue)
    else:
        out["wilcoxon_p"] = math.nan
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="training run directory (a saved checkpoint)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the results")
    parser.add_argument("--rollouts", type=int, default=128, help="conversations per policy")
    parser.add_argument("--seed", type=int, default=1234, help="seeds openers and sampling")
    parser.add_argument("--resume", action="store_true", help="finish interrupted evaluations")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.rollouts < 2:
        parser.error(f"--rollouts must be >= 2, got {args.rollouts}")

    from agents import LEARNERS, load_adversary

    trained = load_adversary(args.run)
    config = trained.config
    initial = {c.__name__: c for c in LEARNERS.values()}[type(trained).__name__](config)
    suite = run_suite(config, args.rollouts, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for name, adversary in (("initial", initial), ("trained", trained)):
        summaries[name] = evaluate(
            adversary,
            suite,
            args.out / name,
            resume=args.resume,
            overwrite=not args.resume,
            progress=not args.no_progress,
            report=False,
        )
    (before, openers), (after, openers_after) = (
        returns_of(args.out / "initial"),
        returns_of(args.out / "trained"),
    )
    paired = openers == openers_after
    result = {
        "run": str(args.run),
        "algo": type(trained).__name__,
        "updates": trained.update_idx,
        "rollouts": args.rollouts,
        "turns": config.env.max_turns,
        "seed": args.seed,
        "policies": {
            name: {
                "mean_return": float(r.mean()),
                "ci95": 1.96 * float(r.std(ddof=1)) / math.sqrt(len(r)),
                "asr": summaries[name]["asr"],
                "defender_toxicity": summaries[name]["avg_def_toxicity"],
            }
            for name, r in (("initial", before), ("trained", after))
        },
        "gain": float(after.mean() - before.mean()),
        "relative_gain": float(after.mean() / before.mean() - 1) if before.mean() else math.nan,
        "welch_t": welch_t(before, after),
        # conversation i opens with the same opener on both sides, so opener difficulty cancels
        "paired_t": paired_t(before, after) if paired else math.nan,
        **rank_tests(before, after, paired),
    }
    lines = [
        f"{result['algo']} after {result['updates']} updates, {args.rollouts} held-out "
        f"conversations of {config.env.max_turns} turn(s) per policy, seed {args.seed}:",
        "",
        "| policy | mean return (95% CI) | ASR | defender toxicity |",
        "|---|---|---|---|",
    ]
    for name, p in result["policies"].items():
        lines.append(
            f"| {name} | {p['mean_return']:.4f} ± {p['ci95']:.4f} | {p['asr']:.1%} | "
            f"{p['defender_toxicity']:.4f} |"
        )
    lines += [
        "",
        f"Gain {result['gain']:+.4f} ({result['relative_gain']:+.0%}), Welch t = "
        f"{result['welch_t']:.2f}, paired t (same openers) = {result['paired_t']:.2f}.",
        f"Rank tests, one-sided (trained > initial): Mann-Whitney p = "
        f"{result['mannwhitney_p']:.4f}, Wilcoxon signed-rank (same openers) p = "
        f"{result['wilcoxon_p']:.4f}.",
    ]
    (args.out / "gain.md").write_text("\n".join(lines) + "\n")
    (args.out / "gain.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
