"""Risk-averse batch selection for RA-RLHF (Chaudhary et al., "Risk-Averse Fine-tuning
of Large Language Models"): the soft-risk schedule, lowest-return selection and CVaR.

RA-RLHF (Algorithm 1, section 4) samples B trajectories per update and trains
only on the B0 with the lowest episode return; B0 shrinks from B to ceil(alpha*B)
following the soft-risk schedule (after Greenberg et al. 2022, CeSoR).

Convention: ``update_idx`` is 0-based (the first update is 0). With ``n`` warm-up
updates and ``end = ceil(rho * M)``:

* ``i < n``:          B0 = B  (warm start: "recognition of positive episodes")
* ``n <= i < end``:   B0 = ceil(B * max(alpha, 1 - K * (i - n))),  K = (1 - alpha) / (end - n)
* ``i >= end``:       B0 = ceil(alpha * B)

At ``i == n`` the middle formula gives B (continuous with the warm start), and at
``i == end`` it gives ceil(alpha * B) (continuous with the tail). If ``end <= n``
there is no ramp: B0 jumps to ceil(alpha * B) right after the warm start.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from redteam_gym.metrics.risk import cvar as metrics_cvar

__all__ = [
    "cvar",
    "select_lowest_returns",
    "soft_risk_batch_size",
    "soft_risk_level",
]

_CEIL_DECIMALS = 9


def _ceil(x: float) -> int:
    """``ceil`` that ignores float noise: 0.07 * 100 == 7.000000000000001 must give 7."""
    return math.ceil(round(x, _CEIL_DECIMALS))


def _check_int(name: str, value: Any, minimum: int) -> int:
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_schedule_args(
    update_idx: int, alpha: float, n_warmup: int, rho: float, total_updates: int
) -> tuple[int, float, int, float, int]:
    update_idx = _check_int("update_idx", update_idx, 0)
    n_warmup = _check_int("n_warmup", n_warmup, 0)
    total_updates = _check_int("total_updates", total_updates, 1)
    alpha = float(alpha)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    rho = float(rho)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    return update_idx, alpha, n_warmup, rho, total_updates


def soft_risk_level(
    update_idx: int,
    alpha: float = 0.2,
    n_warmup: int = 30,
    rho: float = 0.95,
    total_updates: int = 100,
) -> float:
    """Fraction of the batch kept at 0-based update ``update_idx`` (before rounding).

    1.0 during warm-up, then a linear ramp to ``alpha`` reached at ``ceil(rho * total_updates)``
    (RA-RLHF section 4, soft-risk scheduling, items A-C). Useful for logging ``risk/alpha``.
    """
    i, alpha, n, rho, total = _check_schedule_args(update_idx, alpha, n_warmup, rho, total_updates)
    end = _ceil(rho * total)
    if i < n:
        return 1.0
    if end <= n or i >= end:
        return alpha
    slope = (1.0 - alpha) / (end - n)  # K in RA-RLHF section 4, item C
    return max(alpha, 1.0 - slope * (i - n))


def soft_risk_batch_size(
    update_idx: int,
    batch_size: int,
    alpha: float = 0.2,
    n_warmup: int = 30,
    rho: float = 0.95,
    total_updates: int = 100,
) -> int:
    """B0, the number of lowest-return trajectories to train on at update ``update_idx``.

    ``ceil(batch_size * soft_risk_level(...))``: B during warm-up, ``ceil(alpha * B)``
    from ``ceil(rho * total_updates)`` on (0-based ``update_idx``; see module docstring).
    Defaults are RA-RLHF's Jigsaw-Gen values (Table 8): alpha 0.2, n 30, rho 0.95.
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    level = soft_risk_level(update_idx, alpha, n_warmup, rho, total_updates)
    return min(batch_size, max(1, _ceil(batch_size * level)))


def _check_returns(returns: torch.Tensor) -> torch.Tensor:
    returns = torch.as_tensor(returns)
    if returns.dim() != 1:
        raise ValueError(
            f"returns must be 1-D (one episode return each), got shape {tuple(returns.shape)}"
        )
    if returns.is_floating_point() and bool(torch.isnan(returns).any()):
        raise ValueError("returns contains NaN")
    return returns


def select_lowest_returns(returns: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` trajectories with the lowest episode return (RA-RLHF Alg. 1, line 10).

    A ``LongTensor`` of shape ``[k]``, ordered by ascending return; ties are broken
    by the lower index first (stable sort), so the selection is deterministic.
    """
    returns = _check_returns(returns)
    k = _check_int("k", k, 0)
    if k > returns.numel():
        raise ValueError(f"k must be <= the number of returns ({returns.numel()}), got {k}")
    order = torch.sort(returns, stable=True).indices
    return order[:k].to(torch.long)


def cvar(returns: torch.Tensor, alpha: float) -> torch.Tensor:
    """Empirical lower-tail CVaR_alpha: the mean of the lowest ``ceil(alpha * n)`` returns.

    The sample version of ``E[R | R <= q_alpha(R)]`` (RA-RLHF eq. (6)), as a 0-dim
    float tensor on the returns' device. ``alpha = 1`` gives the plain mean. It is a
    statistic to log, not a loss: the value is :func:`redteam_gym.metrics.risk.cvar`
    (one estimator for the learner's ``risk/cvar`` and the benchmarks' ``return_cvar``),
    so it carries no gradient.
    """
    returns = _check_returns(returns)
    if returns.numel() == 0:
        raise ValueError("returns is empty")
    dtype = returns.dtype if returns.is_floating_point() else torch.get_default_dtype()
    value = metrics_cvar(returns.detach().cpu().double().numpy(), float(alpha))
    return torch.tensor(value, dtype=dtype, device=returns.device)
