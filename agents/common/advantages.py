"""Masked statistics, GAE and Monte-Carlo returns for right-padded token sequences.

Every function here takes ``[B, T]`` tensors where ``mask`` marks the valid
(generated) tokens of each trajectory. Valid tokens are contiguous from index 0
and the rest of the row is padding (right padding). In a multi-turn dialogue one
trajectory concatenates the adversary tokens of all its turns, so it is simply a
longer row. The episode ends after the last valid token: nothing is bootstrapped
past it, and padding never leaks into a valid position.

Padding entries may hold anything (zeros, garbage, even NaN): they are selected
away with ``torch.where`` rather than multiplied by the mask, and the outputs are
zero there.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "compute_gae",
    "discounted_returns",
    "masked_mean",
    "masked_var",
    "masked_whiten",
]

WHITEN_EPS = 1e-8
"""Added to the variance before the inverse square root (as in TRL / lm-human-preferences)."""


def _as_bool_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.shape != x.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(x.shape)}")
    return mask.to(device=x.device, dtype=torch.bool)


def _check_right_padded(mask: torch.Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(mask.shape)}")
    # Right padding <=> each row is non-increasing (1...1 0...0).
    if mask.shape[1] > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("mask must be right-padded: valid tokens contiguous from index 0")


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is true.

    With ``dim`` the mean is taken along that dimension; a slice without any
    valid entry has mean 0 (not NaN), so e.g. per-sequence means stay finite.
    """
    bool_mask = _as_bool_mask(x, mask)
    total = torch.where(bool_mask, x, torch.zeros_like(x)).sum(dim=dim)
    count = bool_mask.sum(dim=dim).to(total.dtype)
    return total / count.clamp_min(1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over all entries where ``mask`` is true (a 0-dim tensor).

    ``unbiased`` applies Bessel's correction ``n / (n - 1)``; with a single valid
    entry the correction is undefined and the (zero) biased variance is returned.
    Raises ``ValueError`` when no entry is valid.
    """
    bool_mask = _as_bool_mask(x, mask)
    count = int(bool_mask.sum())
    if count == 0:
        raise ValueError("masked_var: mask selects no entries")
    mean = masked_mean(x, bool_mask)
    variance = masked_mean((x - mean) ** 2, bool_mask)
    if unbiased and count > 1:
        variance = variance * (count / (count - 1))
    return variance


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var(returns - values) / Var(returns)`` over the valid entries: 1 is a perfect
    critic, 0 one no better than the mean return, negative a worse one; nan when the returns
    do not vary (as in stable-baselines3's ``explained_variance``)."""
    var_returns = float(masked_var(returns, mask, unbiased=False))
    if var_returns == 0.0:
        return math.nan
    return 1.0 - float(masked_var(returns - values, mask, unbiased=False)) / var_returns


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``x`` to mean 0 and std 1 using the statistics of the valid entries only.

    As in RLHF PPO (Ziegler et al. 2019; TRL ``masked_whiten``, RA-RLHF appendix E.2):
    ``(x - mean) / sqrt(var + 1e-8)`` with the unbiased masked variance. With
    ``shift_mean=False`` the mean is added back (scale only), which is how value
    targets are sometimes normalised. Padding positions are 0 in the output.
    """
    bool_mask = _as_bool_mask(x, mask)
    mean = masked_mean(x, bool_mask)
    variance = masked_var(x, bool_mask, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(variance + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(bool_mask, whitened, torch.zeros_like(whitened))


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016) over right-padded sequences.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``,
    where ``V_{t+1} = 0`` and ``A_{t+1} = 0`` after the last valid token (the episode
    ends there: RLHF PPO puts the judge's score on the last token, Perez et al. 2022,
    seed paper section 3.5). Returns ``(advantages, returns)`` with
    ``returns = advantages + values`` (the critic's target); both are 0 at padding.
    Advantages are *not* whitened here; call :func:`masked_whiten` on them.
    """
    if rewards.shape != values.shape:
        raise ValueError(
            f"rewards and values must have the same shape, got {tuple(rewards.shape)} "
            f"and {tuple(values.shape)}"
        )
    bool_mask = _as_bool_mask(rewards, mask)
    _check_right_padded(bool_mask)
    zeros = torch.zeros_like(rewards)
    # Select, don't multiply: padding may hold NaN and NaN * 0 is NaN.
    rewards = torch.where(bool_mask, rewards, zeros)
    values = torch.where(bool_mask, values.to(rewards.dtype), zeros)

    num_steps = rewards.shape[1]
    if num_steps == 0:
        return zeros, zeros.clone()
    advantages_reversed: list[torch.Tensor] = []
    last_gae = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(num_steps)):
        # values[:, t + 1] is already 0 past the last valid token: bootstrap 0 at episode end.
        next_values = values[:, t + 1] if t + 1 < num_steps else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        # Keep padding at exactly 0 so nothing flows back into the valid prefix.
        last_gae = torch.where(bool_mask[:, t], last_gae, torch.zeros_like(last_gae))
        advantages_reversed.append(last_gae)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = torch.where(bool_mask, advantages + values, zeros)
    return advantages, returns


def discounted_returns(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0
) -> torch.Tensor:
    """Monte-Carlo returns ``G_t = sum_{k >= t} gamma^(k - t) r_k`` over the valid tokens.

    The A2C critic target ``V_target`` of Perez et al. (2022), seed paper eq. (2)-(3):
    no bootstrapping, the sum stops at the last valid token. 0 at padding.
    """
    bool_mask = _as_bool_mask(rewards, mask)
    _check_right_padded(bool_mask)
    rewards = torch.where(bool_mask, rewards, torch.zeros_like(rewards))
    if rewards.shape[1] == 0:
        return rewards
    returns_reversed: list[torch.Tensor] = []
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns_reversed.append(running)
    return torch.stack(returns_reversed[::-1], dim=1)
