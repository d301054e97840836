"""How each summary metric is named, formatted and ranked in reports and comparisons.

Directions are those of the seed paper's Table 1 ("which direction of values we believe is
preferred for automated LM red-teaming"), extended to the diversity and risk metrics:
a red-team adversary should be fluent (low perplexity), look innocuous (low adversary
toxicity), elicit unsafe replies (high defender toxicity, ASR, implicit toxicity), be
diverse (low Self-BLEU, high embedding diversity and Dist-n) and succeed even on its
worst openers (high lower-tail return CVaR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["METRICS", "MetricSpec", "best_index", "format_metric"]


@dataclass(frozen=True)
class MetricSpec:
    """One row of a results table."""

    key: str
    """Key in ``summary.json``."""
    label: str
    """Column or row header (seed-paper wording where it has one)."""
    better: Literal["up", "down"]
    """Which direction is better for the red team."""
    kind: Literal["float", "percent"] = "float"
    """``percent`` values are shares in [0, 1] shown as percentages."""
    table: Literal["attack", "diversity"] = "attack"
    """Which report table it belongs to."""

    @property
    def arrow(self) -> str:
        return "↑" if self.better == "up" else "↓"

    @property
    def header(self) -> str:
        return f"{self.label} {self.arrow}"


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("avg_adv_perplexity", "Avg Adv Perplexity", "down"),
    MetricSpec("avg_adv_toxicity", "Avg Adv Tox", "down"),
    MetricSpec("avg_def_toxicity", "Avg Def Tox", "up"),
    MetricSpec("asr", "ASR", "up", "percent"),
    MetricSpec("implicit_toxicity", "Implicit Toxicity", "up", "percent"),
    MetricSpec("self_bleu", "Self-BLEU", "down", table="diversity"),
    MetricSpec("embedding_diversity", "Emb. Diversity", "up", table="diversity"),
    MetricSpec("dist_1", "Dist-1", "up", table="diversity"),
    MetricSpec("dist_2", "Dist-2", "up", table="diversity"),
    MetricSpec("dist_3", "Dist-3", "up", table="diversity"),
    MetricSpec("return_cvar", "Return CVaR", "up", table="diversity"),
    MetricSpec("mean_return", "Mean Return", "up", table="diversity"),
)
"""Rows of every results table, in the seed paper's order first."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def format_metric(spec: MetricSpec, value: Any, ci: Any = None) -> str:
    """A table cell: ``12.5%`` / ``3.034``; ``n/a`` for null; ``ci`` as ``[lo, hi]``."""
    number = _number(value)
    if number is None:
        return "n/a"
    text = f"{100 * number:.1f}%" if spec.kind == "percent" else f"{number:.3f}"
    if ci is not None and len(ci) == 2 and all(_number(c) is not None for c in ci):
        lo, hi = (float(c) for c in ci)
        text += (
            f" [{100 * lo:.1f}, {100 * hi:.1f}]"
            if spec.kind == "percent"
            else f" [{lo:.3f}, {hi:.3f}]"
        )
    return text


def best_index(spec: MetricSpec, values: list[Any]) -> list[int]:
    """Indices of the best value(s) in ``values`` (ties all win; nulls never do)."""
    numbers = [_number(v) for v in values]
    present = [v for v in numbers if v is not None]
    if not present:
        return []
    best = max(present) if spec.better == "up" else min(present)
    # Compare at display precision, so two cells that read the same are both bold.
    shown = format_metric(spec, best)
    return [i for i, v in enumerate(numbers) if v is not None and format_metric(spec, v) == shown]
