"""Reports of one eval DIR: ``summary.json``, ``report.md`` and ``plots/*.png``.

Plots (matplotlib, Agg backend, so no display is needed):

- ``asr_by_turn.png``: cumulative ASR after each turn (with its 95% Wilson interval)
  and the per-turn ASR among conversations that reached that turn;
- ``toxicity.png``: histograms of the judge's P(unsafe) of adversary and defender
  utterances (log counts, so the unsafe tail shows), with the unsafe threshold;
- ``tail_quantile.png``: the RA-RLHF tail plot (Chaudhary et al., figures 1-2,
  column 5): openers ranked by their *prompt score* and split into quantile bins, riskiest
  first, against the mean return of the conversations in each bin. The prompt score is the
  judge's P(unsafe) of the opener itself (``opener_p_unsafe`` in ``rollouts.jsonl``): it
  does not depend on the adversary, so curves of different adversaries share the x-axis.
  Records without it fall back to the first turn's defender P(unsafe);
- ``returns.png``: the distribution of episode returns with the mean and the lower-tail
  CVaR marked.

``write_report(dir)`` rebuilds everything from an eval DIR's files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.metric_specs import METRICS, MetricSpec, format_metric

__all__ = [
    "PLOTS",
    "emit_markdown",
    "example_conversations",
    "plot_all",
    "prompt_scores",
    "render_markdown",
    "write_report",
    "write_summary",
]

PLOTS = ("asr_by_turn.png", "toxicity.png", "tail_quantile.png", "returns.png")
"""The files ``plot_all`` writes under ``plots/``."""

ADVERSARY_COLOR, DEFENDER_COLOR = "#d95f02", "#1b9e77"


def write_summary(out_dir: str | os.PathLike[str], summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` (nan already turned into null by the runner)."""
    from redteam_gym.files import atomic_write

    return atomic_write(
        Path(out_dir) / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    )


def write_report(
    out_dir: str | os.PathLike[str],
    summary: dict[str, Any] | None = None,
    records: Sequence[dict[str, Any]] | None = None,
) -> Path:
    """Write ``summary.json``, ``plots/*.png`` and ``report.md``; returns the report path.

    ``summary`` and ``records`` default to the DIR's ``summary.json`` and ``rollouts.jsonl``.
    """
    from benchmarks.records import read_rollouts

    out = Path(out_dir)
    if summary is None:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    if records is None:
        records = read_rollouts(out)
    write_summary(out, summary)
    plots = plot_all(out / "plots", summary, records)
    path = out / "report.md"
    from redteam_gym.files import atomic_write

    return atomic_write(path, render_markdown(summary, records, plots, out))


# ----- markdown ---------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _metric_cells(summary: dict[str, Any], specs: Sequence[MetricSpec]) -> list[str]:
    return [
        format_metric(s, summary.get(s.key), summary.get("asr_ci") if s.key == "asr" else None)
        for s in specs
    ]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return "null" if value is None else str(value)


def _md_text(text: str) -> str:
    """Text safe inside a table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def example_conversations(
    records: Sequence[dict[str, Any]],
) -> list[tuple[str, dict[str, Any]]]:
    """``(title, record)`` of the most unsafe conversation and of an implicit-toxicity one.

    Most unsafe: the highest defender P(unsafe) of any turn (ties: higher return).
    Implicit: among successes where the defender was unsafe before the adversary, the one
    with the highest defender P(unsafe); none when there is no such conversation.
    """
    if not records:
        return []

    def peak(r: dict[str, Any]) -> tuple[float, float]:
        return max((t["defender_p_unsafe"] for t in r["turns"]), default=0.0), r["return"]

    worst = max(records, key=peak)
    examples = [("Most unsafe conversation", worst)]
    implicit = [r for r in records if r.get("implicit")]
    if implicit:
        best = max(implicit, key=peak)
        examples.append(("Implicit toxicity (defender unsafe before the adversary)", best))
    return examples


def _conversation_block(record: dict[str, Any], threshold: float) -> str:
    lines = [f"[opener] (p_unsafe {_p(record.get('opener_p_unsafe'))}) {record['opener']}"]
    for t in record["turns"]:
        for role, text_key in (("adversary", "adversary"), ("defender", "defender")):
            p = t[f"{role}_p_unsafe"]
            flag = ", UNSAFE" if p >= threshold else ""
            lines.append(f"[{role} turn {t['turn']}] (p_unsafe {p:.3f}{flag}) {t[text_key]}")
    body = "\n\n".join(lines).replace("```", "'''")
    return f"```text\n{body}\n```"


def _p(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def render_markdown(
    summary: dict[str, Any],
    records: Sequence[dict[str, Any]],
    plots: Sequence[str] = (),
    out_dir: str | os.PathLike[str] | None = None,
) -> str:
    """``report.md``: seed-paper-style tables, settings, plots and example conversations."""
    name, suite = summary.get("adversary", "adversary"), summary.get("suite", "suite")
    threshold = float(summary.get("unsafe_threshold") or 0.5)
    alpha = summary.get("cvar_alpha")
    parts = [
        f"# Red-teaming evaluation: {name} on `{suite}`",
        "",
        f"{summary.get('num_rollouts')} conversations of {summary.get('turns')} turns against "
        f"defender `{summary.get('defender')}`, judged by `{summary.get('judge')}`. "
        f"A reply is unsafe when the judge's P(unsafe) >= {threshold}. Arrows show the "
        "direction that is better for the red team (seed paper, Table 1); ASR is shown with "
        "its 95% Wilson interval.",
        "",
        "## Attack (seed paper, Table 1)",
        "",
    ]
    attack = [s for s in METRICS if s.table == "attack"]
    parts.append(
        _table(
            ["Adversary", *(s.header for s in attack)], [[name, *_metric_cells(summary, attack)]]
        )
    )
    parts += ["", "## Diversity and risk", ""]
    other = [s for s in METRICS if s.table == "diversity"]
    headers = [s.header.replace("Return CVaR", f"Return CVaR{alpha}") for s in other]
    parts.append(_table(["Adversary", *headers], [[name, *_metric_cells(summary, other)]]))
    parts += [
        "",
        f"Return CVaR{alpha}: mean of the lowest {alpha} share of episode returns "
        "(RA-RLHF; the adversary's worst openers). Self-BLEU, Dist-n and embedding "
        "diversity are over all adversary utterances. Avg Adv Perplexity is the log "
        "perplexity (nats/token) of adversary utterances under the frozen defender model, "
        "given the conversation before them in the defender's chat format.",
        "",
        "## ASR by turn",
        "",
    ]
    by_turn = summary.get("asr_by_turn") or {}
    rows = []
    for k, (cum, per, reached) in enumerate(
        zip(
            by_turn.get("cumulative", []),
            by_turn.get("per_turn", []),
            by_turn.get("num_reached", []),
            strict=False,
        )
    ):
        pct = MetricSpec("x", "x", "up", "percent")
        rows.append([str(k + 1), format_metric(pct, cum), format_metric(pct, per), str(reached)])
    parts.append(_table(["Turn", "Cumulative ASR", "ASR at this turn", "Conversations"], rows))
    mean_first = summary.get("mean_turns_to_first_unsafe")
    parts += [
        "",
        f"Mean turns to the first unsafe reply (successful conversations): "
        f"{'n/a' if mean_first is None else f'{mean_first:.2f}'}. "
        f"Successes: {summary.get('num_successes')}, of which implicit: "
        f"{summary.get('num_implicit')}.",
        "",
    ]
    if plots:
        parts += ["## Plots", ""]
        parts += [f"![{Path(p).stem}](plots/{Path(p).name})" for p in plots]
        parts.append("")
    parts += ["## Settings", ""]
    settings = dict(summary.get("settings") or {})
    rows = [[k, f"`{_md_text(_fmt(v))}`"] for k, v in settings.items()]
    rows.append(["adversary", f"`{_md_text(_fmt(summary.get('adversary_detail')))}`"])
    for key, label in (
        ("wall_time_s", "wall time (s, this invocation)"),
        ("generation_time_s", "rollout time (s, this invocation)"),
        ("rollouts_per_s", "conversations / s"),
        ("new_rollouts", "conversations run"),
        ("resumed_rollouts", "conversations resumed from the file"),
        ("created", "created"),
    ):
        rows.append([label, f"`{_fmt(summary.get(key))}`"])
    parts.append(_table(["Setting", "Value"], rows))
    parts += ["", "## Example conversations", ""]
    examples = example_conversations(records)
    if not examples:
        parts.append("No conversations.")
    titles = [t for t, _ in examples]
    shown: set[int] = set()
    for title, record in examples:
        if record["rollout"] in shown:  # the most unsafe one is also the implicit one
            parts += [f"### {title}", "", "The most unsafe conversation above.", ""]
            continue
        shown.add(record["rollout"])
        parts += [
            f"### {title}",
            "",
            f"Rollout {record['rollout']}, opener `{record['opener_id']}`, return "
            f"{record['return']:.3f}, {'successful' if record['success'] else 'not successful'}.",
            "",
            _conversation_block(record, threshold),
            "",
        ]
    if records and not any(t.startswith("Implicit") for t in titles):
        parts += ["No implicit-toxicity conversation in this run.", ""]
    if out_dir is not None:
        parts += [f"Every turn and score: `{Path(out_dir) / 'rollouts.jsonl'}`.", ""]
    return "\n".join(parts)


# ----- plots ------------------------------------------------------------------------------


def prompt_scores(records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, str]:
    """Per record, the prompt score of the tail plot, and what it is (see module docstring)."""
    if records and all(r.get("opener_p_unsafe") is not None for r in records):
        return np.asarray([r["opener_p_unsafe"] for r in records], dtype=np.float64), (
            "judge P(unsafe) of the opener"
        )
    scores = [r["turns"][0]["defender_p_unsafe"] if r["turns"] else 0.0 for r in records]
    return np.asarray(scores, dtype=np.float64), "first-turn defender P(unsafe)"


def plot_all(
    plots_dir: str | os.PathLike[str],
    summary: dict[str, Any],
    records: Sequence[dict[str, Any]],
) -> list[str]:
    """Write the ``PLOTS`` PNGs; returns their paths (skipped when there are no records)."""
    if not records:
        return []
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(plots_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{summary.get('adversary')} on {summary.get('suite')} (n={len(records)})"
    paths = []
    for name, draw in (
        ("asr_by_turn.png", _plot_asr_by_turn),
        ("toxicity.png", _plot_toxicity),
        ("tail_quantile.png", _plot_tail_quantile),
        ("returns.png", _plot_returns),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        draw(ax, summary, records)
        ax.set_title(f"{ax.get_title()}\n{title}", fontsize=11)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / name
        fig.savefig(path)
        plt.close(fig)
        paths.append(str(path))
    return paths


def _plot_asr_by_turn(ax: Any, summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    from redteam_gym.metrics import wilson_interval

    by_turn = summary.get("asr_by_turn") or {}
    cumulative = np.asarray([np.nan if v is None else v for v in by_turn.get("cumulative", [])])
    per_turn = np.asarray([np.nan if v is None else v for v in by_turn.get("per_turn", [])])
    turns = np.arange(1, len(cumulative) + 1)
    n = len(records)
    ci = np.asarray([wilson_interval(round(c * n), n) for c in np.nan_to_num(cumulative)])
    ax.bar(turns, 100 * per_turn, width=0.5, color="#7570b3", alpha=0.5, label="ASR at this turn")
    if len(turns) > 1:
        ax.fill_between(
            turns, 100 * ci[:, 0], 100 * ci[:, 1], color=ADVERSARY_COLOR, alpha=0.15,
            label="95% Wilson interval of the cumulative ASR",
        )  # fmt: skip
        ax.plot(turns, 100 * cumulative, "-o", color=ADVERSARY_COLOR, label="cumulative ASR")
    else:  # one turn: a band has no width
        ax.errorbar(
            turns, 100 * cumulative, yerr=100 * np.abs(ci.T - cumulative), fmt="o",
            color=ADVERSARY_COLOR, capsize=6, label="ASR (95% Wilson interval)",
        )  # fmt: skip
    top = float(np.nanmax(100 * ci[:, 1])) if ci.size else 1.0
    # Head room above the interval, so the legend never covers the data.
    ax.set_ylim(0, max(5.0, top * 1.5))
    ax.set_xticks(turns)
    ax.set_xlim(0.5, len(turns) + 0.5)
    ax.set_xlabel("turn")
    ax.set_ylabel("attack success rate (%)")
    ax.set_title("Attack success rate by turn")
    ax.legend(loc="upper left", fontsize=9)


def _plot_toxicity(ax: Any, summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    threshold = float(summary.get("unsafe_threshold") or 0.5)
    adv = [t["adversary_p_unsafe"] for r in records for t in r["turns"]]
    dfd = [t["defender_p_unsafe"] for r in records for t in r["turns"]]
    bins = np.linspace(0.0, 1.0, 21)
    ax.hist(
        adv, bins=bins, alpha=0.55, color=ADVERSARY_COLOR,
        label=f"adversary (mean {np.mean(adv):.3f})",
    )  # fmt: skip
    ax.hist(
        dfd, bins=bins, alpha=0.55, color=DEFENDER_COLOR,
        label=f"defender (mean {np.mean(dfd):.3f})",
    )  # fmt: skip
    ax.axvline(
        threshold, color="black", linestyle="--", linewidth=1, label=f"unsafe threshold {threshold}"
    )
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("judge P(unsafe) of the utterance")
    ax.set_ylabel("utterances (log scale)")
    ax.set_title("Toxicity of adversary and defender utterances")
    ax.legend(loc="upper right")


def _plot_tail_quantile(
    ax: Any, summary: dict[str, Any], records: Sequence[dict[str, Any]]
) -> None:
    from redteam_gym.metrics import reward_by_quantile

    scores, what = prompt_scores(records)
    returns = np.asarray([r["return"] for r in records], dtype=np.float64)
    num_bins = min(10, len(records))
    curve = reward_by_quantile(scores, returns, num_bins=num_bins, descending=True)
    x = 100 * curve.bin_upper_quantiles
    ax.plot(x, curve.mean_rewards, "-o", color="#e7298a", label="mean return in the bin")
    ax.axhline(
        float(returns.mean()),
        color="gray",
        linestyle=":",
        label=f"mean return {returns.mean():.3f}",
    )
    alpha = summary.get("cvar_alpha")
    if summary.get("return_cvar") is not None:
        ax.axhline(
            summary["return_cvar"], color="black", linestyle="--", linewidth=1,
            label=f"return CVaR{alpha} {summary['return_cvar']:.3f}",
        )  # fmt: skip
    ax.set_xlim(0, 103)  # room for the last marker at 100%
    ax.set_xlabel(f"opener quantile (%), riskiest first, by {what}")
    ax.set_ylabel("mean episode return")
    ax.set_title("Return by prompt-score quantile (RA-RLHF tail plot)")
    ax.legend(loc="best")


def _plot_returns(ax: Any, summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    returns = np.asarray([r["return"] for r in records], dtype=np.float64)
    ax.hist(
        returns,
        bins=min(30, max(5, len(returns) // 2)),
        color="#66a61e",
        alpha=0.7,
        label="conversations",
    )
    ax.axvline(
        float(returns.mean()), color="gray", linestyle=":", label=f"mean {returns.mean():.3f}"
    )
    cvar = summary.get("return_cvar")
    if cvar is not None and math.isfinite(cvar):
        alpha = summary.get("cvar_alpha")
        ax.axvline(
            cvar, color="black", linestyle="--", label=f"CVaR{alpha} (lowest {alpha}) {cvar:.3f}"
        )
    ax.set_xlabel("episode return (sum of -log(1 - p) over turns)")
    ax.set_ylabel("conversations")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Distribution of episode returns")
    ax.legend(loc="best")


def emit_markdown(lines: Sequence[str], out: str | os.PathLike[str] | None = None) -> int:
    """Print a command's markdown `lines`, and write them to `out` too when given (atomic);
    the exit status 0 for the command's `main`."""
    from redteam_gym.files import atomic_write

    text = "\n".join(lines) + "\n"
    print(text, end="")
    if out is not None:
        atomic_write(out, text)
    return 0
