"""Tail (risk) metrics of episode returns, as in RA-RLHF (Chaudhary et al.).

For red teaming the returns are the adversary's episode rewards, so the *lower* tail
holds the prompts where the attack did worst. ``cvar`` is that lower tail: the
risk-averse CVaR_alpha of RA-RLHF section 3,
``CVaR_alpha(R) = E[R | R <= q_alpha(R)]``, estimated as the mean of the
``ceil(alpha * n)`` lowest returns (the "B_0 lowest-return trajectories" of RA-RLHF
eq. 7). ``upper_cvar`` is the mirror image (mean of the highest returns: the worst
case for the defender).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "QuantileCurve",
    "cvar",
    "reward_by_quantile",
    "tail_count",
    "upper_cvar",
    "value_at_risk",
]


def _as_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not bool(np.all(np.isfinite(arr))):
        raise ValueError(f"{name} holds a non-finite value")
    return arr


def tail_count(alpha: float, n: int) -> int:
    """Number of samples in an alpha-tail of ``n``: ``ceil(alpha * n)``, at least 1.

    ``alpha * n`` is rounded to 9 decimals first so float noise does not add a sample
    (``0.1 * 30 == 3.0000000000000004`` must give 3, not 4).
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    return max(1, math.ceil(round(alpha * n, 9)))


def value_at_risk(returns: Sequence[float] | np.ndarray, alpha: float) -> float:
    """Empirical alpha-quantile ``q_alpha = inf{x : F(x) >= alpha}`` (nan if empty)."""
    arr = _as_1d(returns, "returns")
    if arr.size == 0:
        return math.nan
    return float(np.sort(arr)[tail_count(alpha, arr.size) - 1])


def cvar(returns: Sequence[float] | np.ndarray, alpha: float) -> float:
    """Lower-tail CVaR_alpha: mean of the ``ceil(alpha * n)`` lowest returns (nan if empty).

    Risk-averse, worst case for the adversary (RA-RLHF). ``alpha = 1`` is the mean.
    """
    arr = _as_1d(returns, "returns")
    if arr.size == 0:
        return math.nan
    k = tail_count(alpha, arr.size)
    return float(np.sort(arr)[:k].mean())


def upper_cvar(returns: Sequence[float] | np.ndarray, alpha: float) -> float:
    """Upper-tail CVaR: mean of the ``ceil(alpha * n)`` highest returns (nan if empty)."""
    arr = _as_1d(returns, "returns")
    return -cvar(-arr, alpha) if arr.size else math.nan


@dataclass(frozen=True)
class QuantileCurve:
    """Mean reward per prompt-score quantile bin (RA-RLHF figures 1-2, column 5)."""

    bin_upper_quantiles: np.ndarray
    """Share of prompts in this bin and all earlier ones: ``(b + 1) / num_bins`` when
    ``num_bins`` divides the number of prompts. The x-axis of the plot."""
    mean_rewards: np.ndarray
    """Mean reward of the prompts in each bin. The y-axis."""
    counts: np.ndarray
    """Number of prompts in each bin (sizes differ by at most one)."""
    score_edges: np.ndarray
    """Prompt score range of each bin, shape ``[num_bins, 2]`` (first, last score)."""


def reward_by_quantile(
    prompt_scores: Sequence[float] | np.ndarray,
    rewards: Sequence[float] | np.ndarray,
    num_bins: int = 10,
    descending: bool = False,
) -> QuantileCurve:
    """Bin prompts by score quantile and average the rewards in each bin.

    The RA-RLHF tail plot: prompts are sorted by a per-prompt score (e.g. the
    zero-shot adversary's reward on that opener, or the opener's toxicity) and split
    by rank into ``num_bins`` contiguous bins of (nearly) equal size; bin ``b`` holds
    the prompts ranked in quantile ``(b/num_bins, (b+1)/num_bins]``. Ties are broken by
    input order (stable sort), so the result is deterministic. ``descending=True``
    puts the highest scores in the first bin (RA-RLHF orders prompts from the riskiest).
    ``prompt_scores[i]`` and ``rewards[i]`` belong to the same rollout.
    """
    scores = _as_1d(prompt_scores, "prompt_scores")
    values = _as_1d(rewards, "rewards")
    if scores.shape != values.shape:
        raise ValueError(f"prompt_scores has {scores.size} entries, rewards has {values.size}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if scores.size < num_bins:
        raise ValueError(
            f"num_bins={num_bins} is more than the {scores.size} prompts; every bin needs one"
        )
    order = np.argsort(-scores if descending else scores, kind="stable")
    bins = np.array_split(order, num_bins)
    counts = np.asarray([len(b) for b in bins], dtype=np.int64)
    return QuantileCurve(
        bin_upper_quantiles=np.cumsum(counts) / scores.size,
        mean_rewards=np.asarray([values[b].mean() for b in bins]),
        counts=counts,
        score_edges=np.asarray([[scores[b[0]], scores[b[-1]]] for b in bins]),
    )
