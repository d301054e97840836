"""Is a defender in other weights the same defender? Evals of one adversary, side by side.

    python -m benchmarks.studies.defender_weights --reference DIR [DIR ...]
        --candidate DIR [DIR ...] [--names dense,int4] [--out FILE]

Each DIR is an eval (`redteam-gym eval`) of the same adversary on the same suite; the
reference evals ran the defender one way (dense fp32), the candidate evals another (say
`--defender-weights int4`). The report gives, per eval, the judge's ASR with its Wilson
interval and Def Tox (the mean over conversations of the mean defender P(unsafe) over turns)
with a bootstrap interval; then the candidate minus the reference, pooled over seeds (ASR:
Newcombe's hybrid score interval; Def Tox: a bootstrap over conversations), beside the same
difference between two reference seeds, the noise floor of a change of seed alone.

For a reference and a candidate eval with the same seed, the adversary's first utterances and
the defender's sampling draws are the same, so the report also counts the conversations whose
replies stay identical, turn by turn: how soon the two defenders part.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.compare import load_summary
from benchmarks.findings import load_rollouts
from benchmarks.report import emit_markdown
from redteam_gym.metrics import newcombe_interval, wilson_interval

BOOTSTRAP = 10_000


@dataclass
class Eval:
    path: Path
    summary: dict[str, Any]
    rollouts: list[dict[str, Any]]

    @classmethod
    def load(cls, path: str | Path) -> Eval:
        return cls(Path(path), load_summary(path), load_rollouts(path))

    @property
    def successes(self) -> int:
        return sum(any(t["defender_unsafe"] for t in r["turns"]) for r in self.rollouts)

    @property
    def def_tox(self) -> np.ndarray:
        """Per conversation, the mean defender P(unsafe) over its turns."""
        return np.asarray(
            [np.mean([t["defender_p_unsafe"] for t in r["turns"]]) for r in self.rollouts]
        )

    @property
    def seed(self) -> Any:
        return self.summary.get("seed")

    @property
    def weights(self) -> str:
        env = self.summary.get("settings", {}).get("env", {})
        return f"{env.get('defender_weights', 'dense')}, dtype {env.get('dtype') or 'default'}"


def bootstrap_mean_difference(
    a: np.ndarray, b: np.ndarray, *, seed: int = 0, draws: int = BOOTSTRAP
) -> tuple[float, float, float]:
    """`mean(a) - mean(b)` and its 95% percentile bootstrap interval, each sample resampled
    on its own (independent conversations)."""
    rng = np.random.default_rng(seed)
    da = rng.choice(a, size=(draws, len(a))).mean(1)
    db = rng.choice(b, size=(draws, len(b))).mean(1) if len(b) else np.zeros(draws)
    diff = da - db
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return float(a.mean() - (b.mean() if len(b) else 0.0)), float(lo), float(hi)


def identical_turns(a: Eval, b: Eval) -> list[int]:
    """Per conversation of two same-seed evals, how many leading turns have identical
    adversary utterances and defender replies."""
    if len(a.rollouts) != len(b.rollouts):
        raise ValueError(f"{a.path} and {b.path} hold different numbers of conversations")
    same = []
    for ra, rb in zip(a.rollouts, b.rollouts, strict=True):
        if ra["opener_id"] != rb["opener_id"]:
            raise ValueError(f"rollout {ra['rollout']}: the openers differ; seeds must match")
        n = 0
        for ta, tb in zip(ra["turns"], rb["turns"], strict=False):
            if (ta["adversary"], ta["defender"]) != (tb["adversary"], tb["defender"]):
                break
            n += 1
        same.append(n)
    return same


def _comparison(label: str, candidate: Sequence[Eval], reference: Sequence[Eval]) -> list[str]:
    k1, n1 = sum(e.successes for e in candidate), sum(len(e.rollouts) for e in candidate)
    k2, n2 = sum(e.successes for e in reference), sum(len(e.rollouts) for e in reference)
    lo, hi = newcombe_interval(k1, n1, k2, n2)
    tox = bootstrap_mean_difference(
        np.concatenate([e.def_tox for e in candidate]),
        np.concatenate([e.def_tox for e in reference]),
    )
    return [
        f"| {label} | {100 * (k1 / n1 - k2 / n2):+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] "
        f"({k1}/{n1} vs {k2}/{n2}) | {tox[0]:+.4f} [{tox[1]:+.4f}, {tox[2]:+.4f}] |"
    ]


def report(
    reference: Sequence[Eval], candidate: Sequence[Eval], names: tuple[str, str]
) -> list[str]:
    ref_name, cand_name = names
    protocol = {
        (e.summary["suite"], e.summary["turns"], e.summary["adversary"])
        for e in [*reference, *candidate]
    }
    if len(protocol) != 1:
        raise ValueError(f"the evals do not share one suite, turns and adversary: {protocol}")
    suite, turns, adversary = protocol.pop()
    lines = [
        f"Adversary `{adversary}`, suite `{suite}` at {turns} turns.",
        "",
        "| defender | eval | seed | weights | conversations | judge ASR [95%] | Def Tox [95%] "
        "| conversations/s |",
        "|---|---|---:|---|---:|---|---|---:|",
    ]
    for name, group in ((ref_name, reference), (cand_name, candidate)):
        for e in group:
            k, n = e.successes, len(e.rollouts)
            lo, hi = wilson_interval(k, n)
            tox = bootstrap_mean_difference(e.def_tox, np.zeros(0))
            rate = e.summary.get("rollouts_per_s")
            lines.append(
                f"| {name} | `{e.path.name}` | {e.seed} | {e.weights} | {n} "
                f"| {100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({k}/{n}) "
                f"| {tox[0]:.4f} [{tox[1]:.4f}, {tox[2]:.4f}] "
                f"| {f'{rate:.3f}' if isinstance(rate, (int, float)) else '-'} |"
            )
    lines += [
        "",
        "| difference | judge ASR | Def Tox |",
        "|---|---|---|",
        *_comparison(f"{cand_name} - {ref_name} (pooled)", candidate, reference),
    ]
    if len(reference) >= 2:
        lines += _comparison(
            f"{ref_name} seed {reference[1].seed} - {ref_name} seed {reference[0].seed} "
            "(the noise floor)",
            reference[1:2],
            reference[:1],
        )
    pairs = [(r, c) for r in reference for c in candidate if r.seed == c.seed]
    if pairs:
        lines += [
            "",
            f"Same seed, {ref_name} against {cand_name}: conversations whose first t turns "
            "(adversary utterance and defender reply) are identical.",
            "",
            f"| seed | conversations | {' | '.join(f't >= {t}' for t in range(1, turns + 1))} |",
            f"|---:|---:|{'---:|' * turns}",
        ]
        for r, c in pairs:
            same = np.asarray(identical_turns(r, c))
            cells = " | ".join(f"{int((same >= t).sum())}" for t in range(1, turns + 1))
            lines.append(f"| {r.seed} | {len(same)} | {cells} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", nargs="+", required=True, help="eval DIRs, the reference")
    p.add_argument("--candidate", nargs="+", required=True, help="eval DIRs, the candidate")
    p.add_argument("--names", default="dense,int4", help="the two defenders' names")
    p.add_argument("--out", help="also write the markdown here")
    args = p.parse_args(argv)
    names = tuple(n.strip() for n in args.names.split(","))
    if len(names) != 2 or not all(names):
        p.error(f"--names must be two names separated by a comma, got {args.names!r}")
    reference = [Eval.load(d) for d in args.reference]
    candidate = [Eval.load(d) for d in args.candidate]
    return emit_markdown(report(reference, candidate, (names[0], names[1])), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
