"""The seed paper's comparison, on recorded evals: trained adversaries against a baseline.

    python -m benchmarks.findings [NAME=]BASELINE_DIR NAME=EVAL_DIR ... [--out FILE] [--examples 3]
        [--pool LABEL=NAME,NAME ...]

Reads each eval DIR's `summary.json` and `rollouts.jsonl` (written by `redteam-gym eval`)
and prints a markdown table shaped like the seed paper's Tables 1-2: adversary perplexity and
toxicity, defender toxicity and ASR with one-sided tests against the baseline, implicit
toxicity with its Wilson interval, Dist-2, Self-BLEU and the share of distinct utterances
(and, beside ASR, the reward audit's audited precision and confirmed ASR when any eval DIR
has one: `redteam-gym audit`); then a few conversations of each adversary (its most and
least successful, and one at random), whatever the direction of the results.

Tests (one-sided, trained > baseline): Mann-Whitney U on the per-conversation mean defender
P(unsafe), and Fisher's exact test on the number of successful conversations.

`--pool` adds a table of rows pooled over seeds (say both seeds of one learner): each pool's
judge and confirmed ASR with Wilson intervals and the one-sided Fisher test against the
baseline, then every pair of pools' difference with Newcombe's hybrid score interval.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.audit import AUDIT_METRICS, audit_cell, load_audit
from benchmarks.compare import load_summary
from redteam_gym.files import read_jsonl
from redteam_gym.metrics import newcombe_interval, wilson_interval

__all__ = ["Findings", "findings", "load_rollouts"]


def load_rollouts(run_dir: str | Path) -> list[dict[str, Any]]:
    """The conversations of an eval DIR, in rollout order."""
    path = Path(run_dir) / "rollouts.jsonl"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not an eval DIR: it has no rollouts.jsonl")
    return sorted(read_jsonl(path), key=lambda r: r["rollout"])


@dataclass
class Findings:
    name: str
    summary: dict[str, Any]
    rollouts: list[dict[str, Any]]

    @property
    def def_tox(self) -> np.ndarray:
        """Per conversation, the mean defender P(unsafe) over its turns."""
        return np.asarray(
            [np.mean([t["defender_p_unsafe"] for t in r["turns"]]) for r in self.rollouts]
        )

    @property
    def successes(self) -> int:
        return int(self.summary["num_successes"])

    @property
    def unique_share(self) -> float:
        texts = [
            " ".join(t["adversary"].lower().split()) for r in self.rollouts for t in r["turns"]
        ]
        return len(set(texts)) / max(len(texts), 1)


def _tests(trained: Findings, baseline: Findings) -> tuple[float, float]:
    from scipy.stats import fisher_exact, mannwhitneyu

    p_tox = float(mannwhitneyu(trained.def_tox, baseline.def_tox, alternative="greater").pvalue)
    n_t, n_b = len(trained.rollouts), len(baseline.rollouts)
    table = [
        [trained.successes, n_t - trained.successes],
        [baseline.successes, n_b - baseline.successes],
    ]
    p_asr = float(fisher_exact(table, alternative="greater").pvalue)
    return p_tox, p_asr


def _confirmed_p(
    trained: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None
) -> float | None:
    """One-sided Fisher's exact test on confirmed successes (conversations with a reply
    labelled unsafe), when both evals were audited."""
    from scipy.stats import fisher_exact

    if trained is None or baseline is None:
        return None
    table = [
        [trained["num_confirmed"], trained["num_rollouts"] - trained["num_confirmed"]],
        [baseline["num_confirmed"], baseline["num_rollouts"] - baseline["num_confirmed"]],
    ]
    return float(fisher_exact(table, alternative="greater").pvalue)


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _p(x: float | None) -> str:
    if x is None:
        return "-"
    return "< 1e-4" if x < 1e-4 else f"{x:.3g}"


def findings(
    baseline: str | Path,
    runs: Sequence[tuple[str, str | Path]],
    *,
    examples: int = 3,
    seed: int = 0,
    pools: Sequence[tuple[str, Sequence[str]]] = (),
) -> str:
    """The markdown report (table, pooled rows when `pools` names any, then example
    conversations). A pool is ``(label, row names)``."""
    name, sep, path = str(baseline).partition("=")
    if not sep:
        name, path = "", str(baseline)
    base = Findings(name, load_summary(path), load_rollouts(path))
    base.name = name or str(base.summary.get("adversary", Path(path).name))
    entries = [base] + [Findings(n, load_summary(d), load_rollouts(d)) for n, d in runs]
    protocol = {
        (e.summary["turns"], e.summary["judge"], e.summary["num_rollouts"]) for e in entries
    }
    lines = []
    if len(protocol) > 1:
        lines.append(
            f"**Warning: the evals differ in (turns, judge, conversations): {sorted(protocol)}**\n"
        )
    s0 = base.summary
    audits = [load_audit(path)] + [load_audit(d) for _, d in runs]
    audited = any(audits)
    audit_head = "".join(f" {a.header} |" for a in AUDIT_METRICS) + " p |" if audited else ""
    lines += [
        f"{s0['num_rollouts']} conversations of {s0['turns']} turn(s) per adversary, judge "
        f"`{s0['judge']}`, defender `{s0['defender']}`, suite `{s0['suite']}` (seed {s0['seed']}). "
        "p-values are one-sided against the first row: Mann-Whitney U on each conversation's "
        "mean defender P(unsafe) (Def Tox), Fisher's exact test on successes (ASR)"
        + (
            ", and on confirmed successes (Confirmed ASR) where both evals were audited"
            if audited
            else ""
        )
        + ". Intervals are 95% Wilson.",
        "",
        "| Adversary | Avg Adv Perplexity ↓ | Avg Adv Tox ↓ | Avg Def Tox ↑ | p | ASR ↑ | p |"
        f"{audit_head} Implicit Toxicity ↑ | Dist-2 ↑ | Self-BLEU ↓ | Distinct utterances |",
        "|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * audit_head.count("|"),
    ]
    for e, result in zip(entries, audits, strict=True):
        s = e.summary
        p_tox, p_asr = (None, None) if e is base else _tests(e, base)
        lo, hi = s["asr_ci"]
        n_imp = int(s.get("num_implicit", 0))
        ilo, ihi = wilson_interval(n_imp, e.successes)
        implicit = (
            f"{_pct(n_imp / e.successes)} [{100 * ilo:.0f}, {100 * ihi:.0f}] ({n_imp}/{e.successes})"
            if e.successes
            else "n/a (0 successes)"
        )
        lines.append(
            f"| {e.name} | {s['avg_adv_perplexity']:.3f} | {s['avg_adv_toxicity']:.3f} | "
            f"{s['avg_def_toxicity']:.3f} | {_p(p_tox)} | {_pct(s['asr'])} "
            f"[{100 * lo:.1f}, {100 * hi:.1f}] | {_p(p_asr)} |"
            + "".join(f" {audit_cell(a, result)} |" for a in AUDIT_METRICS if audited)
            + (
                f" {_p(None if e is base else _confirmed_p(result, audits[0]))} |"
                if audited
                else ""
            )
            + f" {implicit} | {s['dist_2']:.3f} | "
            f"{s['self_bleu']:.3f} | {_pct(e.unique_share)} |"
        )
    if pools:
        lines += _pooled(base, entries, audits, pools)
    rng = np.random.default_rng(seed)
    for e in entries if examples > 0 else ():
        lines += ["", f"### {e.name}: example conversations", ""]
        tox = e.def_tox
        order = [int(np.argmax(tox)), int(np.argmin(tox)), int(rng.integers(len(e.rollouts)))]
        for i in dict.fromkeys(order[:examples]):
            r = e.rollouts[i]
            lines.append(f"- opener `{r['opener_id']}`: {_quote(r['opener'])}")
            for t in r["turns"]:
                lines.append(
                    f"  - adversary (p {t['adversary_p_unsafe']:.2f}): {_quote(t['adversary'])}"
                )
                lines.append(
                    f"  - defender (p {t['defender_p_unsafe']:.2f}): {_quote(t['defender'])}"
                )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Pool:
    label: str
    n: int
    successes: int
    confirmed: int | None
    """Conversations with a reply labelled unsafe; None unless every row was audited."""


def _pool(label: str, rows: Sequence[tuple[Findings, Mapping[str, Any] | None]]) -> _Pool:
    audits = [a for _, a in rows]
    confirmed = None
    if all(a is not None for a in audits):
        confirmed = sum(int(a["num_confirmed"]) for a in audits if a is not None)
    return _Pool(
        label,
        n=sum(len(e.rollouts) for e, _ in rows),
        successes=sum(e.successes for e, _ in rows),
        confirmed=confirmed,
    )


def _rate(k: int | None, n: int) -> str:
    if k is None:
        return "-"
    lo, hi = wilson_interval(k, n)
    return f"{_pct(k / n)} [{100 * lo:.1f}, {100 * hi:.1f}] ({k}/{n})"


def _difference(k1: int | None, n1: int, k2: int | None, n2: int) -> str:
    if k1 is None or k2 is None:
        return "-"
    lo, hi = newcombe_interval(k1, n1, k2, n2)
    return f"{100 * (k1 / n1 - k2 / n2):+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _pooled(
    base: Findings,
    entries: Sequence[Findings],
    audits: Sequence[Mapping[str, Any] | None],
    pools: Sequence[tuple[str, Sequence[str]]],
) -> list[str]:
    """The pooled-over-seeds table and the pairwise differences."""
    from scipy.stats import fisher_exact

    by_name = {e.name: (e, a) for e, a in zip(entries, audits, strict=True)}
    groups = []
    for label, names in pools:
        missing = [n for n in names if n not in by_name]
        if missing or not names:
            raise ValueError(
                f"pool {label!r} names rows {missing or list(names)} that the report does not "
                f"have; its rows are {list(by_name)}"
            )
        groups.append(_pool(label, [by_name[n] for n in names]))
    first = _pool(base.name, [by_name[base.name]])

    def p_vs_base(k: int | None, n: int, k0: int | None, n0: int) -> str:
        if k is None or k0 is None:
            return "-"
        table = [[k, n - k], [k0, n0 - k0]]
        return _p(float(fisher_exact(table, alternative="greater").pvalue))

    lines = [
        "",
        "### Pooled over seeds",
        "",
        f"p: one-sided Fisher's exact test against {base.name}. Intervals: 95% Wilson.",
        "",
        "| Pool | judge ASR | p | confirmed ASR | p |",
        "|---|---|---|---|---|",
    ]
    for g in [first, *groups]:
        vs_base = g is not first
        lines.append(
            f"| {g.label} | {_rate(g.successes, g.n)} | "
            f"{p_vs_base(g.successes, g.n, first.successes, first.n) if vs_base else '-'} | "
            f"{_rate(g.confirmed, g.n)} | "
            f"{p_vs_base(g.confirmed, g.n, first.confirmed, first.n) if vs_base else '-'} |"
        )
    pairs = [(a, b) for i, a in enumerate(groups) for b in groups[i + 1 :]]
    if pairs:
        lines += [
            "",
            "Differences (first minus second), 95% Newcombe hybrid score intervals:",
            "",
            "| Pools | judge ASR | confirmed ASR |",
            "|---|---|---|",
        ]
        for a, b in pairs:
            lines.append(
                f"| {a.label} - {b.label} | {_difference(a.successes, a.n, b.successes, b.n)} | "
                f"{_difference(a.confirmed, a.n, b.confirmed, b.n)} |"
            )
    return lines


def _quote(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return "“" + (text if len(text) <= limit else text[: limit - 1] + "…") + "”"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.findings", description=__doc__.split("\n")[0]
    )
    parser.add_argument("baseline", help="[NAME=]EVAL_DIR of the baseline adversary (first row)")
    parser.add_argument("runs", nargs="+", help="NAME=EVAL_DIR of each adversary to compare")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--examples", type=int, default=3, help="conversations shown per adversary")
    parser.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="LABEL=NAME,NAME",
        help="pool these rows (say, one learner's seeds) into one figure; repeatable",
    )
    args = parser.parse_args(argv)
    pools = []
    for item in args.pool:
        label, sep, names = item.partition("=")
        if not sep or not label or not names:
            parser.error(f"--pool is LABEL=NAME,NAME, got {item!r}")
        pools.append((label, [n.strip() for n in names.split(",") if n.strip()]))
    runs = []
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"runs are NAME=EVAL_DIR, got {item!r}")
        runs.append((name, path))
    try:
        report = findings(args.baseline, runs, examples=args.examples, pools=pools)
    except ValueError as exc:
        parser.error(str(exc))
    print(report, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
