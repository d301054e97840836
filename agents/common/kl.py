"""Per-token KL estimators and KL-coefficient controllers.

The estimators take the log-probabilities of the *sampled* tokens under the
policy (``logprobs``) and under the frozen reference model (``ref_logprobs``),
both ``[B, T]``. Tokens are sampled from the policy q = pi_theta, so with
``r = pi_ref(x) / pi_theta(x) = exp(ref_logprobs - logprobs)`` these are
Schulman's estimators of KL[pi_theta || pi_ref] (J. Schulman, "Approximating KL
divergence", 2020, http://joschu.net/blog/kl-approx.html):

* k1 = -log r = logprobs - ref_logprobs: unbiased, high variance, can be negative.
  This is the per-token penalty of RLHF (RA-RLHF eq. (5), seed paper eq. (1)).
* k2 = (log r)^2 / 2 (``"mse"``): biased, low variance, >= 0.
* k3 = (r - 1) - log r: unbiased, low variance, always >= 0.

Controllers hold the KL coefficient beta (``.value``): fixed (Perez et al. 2022
use alpha = 0.3, seed paper appendix 10.1) or the adaptive log-space
proportional controller of Ziegler et al. (2019), RA-RLHF eq. (4).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "KLPenaltyKind",
    "kl_k1",
    "kl_k3",
    "kl_penalty",
]

KLPenaltyKind = Literal["k1", "k3", "abs", "mse"]
KL_PENALTY_KINDS: tuple[str, ...] = ("k1", "k3", "abs", "mse")


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Schulman's k1 = ``logprobs - ref_logprobs`` per token (unbiased, may be negative)."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 = ``(r - 1) - log r`` with ``r = exp(ref_logprobs - logprobs)``.

    Unbiased and non-negative. ``expm1`` keeps precision when r is close to 1; the
    clamp only removes rounding noise below 0.
    """
    log_ratio = ref_logprobs - logprobs
    return (torch.expm1(log_ratio) - log_ratio).clamp_min(0.0)


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: KLPenaltyKind = "k1"
) -> torch.Tensor:
    """Per-token KL penalty of the given ``kind``.

    ``"k1"``: ``logprobs - ref_logprobs`` (TRL's ``"kl"``); ``"k3"``: :func:`kl_k3`;
    ``"abs"``: ``|logprobs - ref_logprobs|``; ``"mse"``: ``0.5 * (logprobs - ref_logprobs)^2``
    (Schulman's k2).
    """
    if kind == "k1":
        return kl_k1(logprobs, ref_logprobs)
    if kind == "k3":
        return kl_k3(logprobs, ref_logprobs)
    if kind == "abs":
        return (logprobs - ref_logprobs).abs()
    if kind == "mse":
        return 0.5 * (logprobs - ref_logprobs).square()
    raise ValueError(f"kind must be one of {KL_PENALTY_KINDS}, got {kind!r}")


def _finite_float(name: str, value: Any) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


class KLController:
    """Holds the KL coefficient ``value`` (beta); subclasses decide how it moves."""

    value: float

    def update(self, current_kl: float) -> float:
        """Observe the mean KL of the last batch and return the (new) coefficient."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, float]:
        """What a checkpoint needs to resume: the current coefficient."""
        return {"value": float(self.value)}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        """Restore the coefficient saved by :meth:`state_dict`."""
        if "value" not in state_dict:
            raise ValueError("state_dict has no 'value' entry")
        self.value = _finite_float("state_dict['value']", state_dict["value"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value:.6g})"


class FixedKLController(KLController):
    """Constant KL coefficient (Perez et al. 2022: alpha = 0.3, seed paper eq. (2))."""

    def __init__(self, value: float = 0.3) -> None:
        value = _finite_float("value", value)
        if value < 0:
            raise ValueError(f"value must be >= 0, got {value}")
        self.value = value

    def update(self, current_kl: float) -> float:
        """No-op: the coefficient stays fixed."""
        return self.value


class AdaptiveKLController(KLController):
    """Adaptive KL coefficient, Ziegler et al. (2019) section 2.2 / RA-RLHF eq. (4).

    Each :meth:`update` does::

        e = clip(current_kl / target - 1, -0.2, 0.2)
        value *= 1 + k_beta * e

    so beta grows when the policy drifts beyond ``target`` nats and shrinks below it.

    The two published parameterisations map onto ``k_beta``:

    * RA-RLHF (Chaudhary et al., eq. (4), Table 7): ``K_beta`` is ``k_beta``
      directly; their defaults are ``init_kl_coef=0.2, target=6.0, k_beta=0.0128``.
    * Ziegler et al. / TRL: ``mult = 1 + e * n_steps / horizon`` where ``n_steps`` is
      the number of episodes per update (the batch size), so
      ``k_beta = batch_size / horizon``: TRL's default ``horizon=10000`` with RA-RLHF's
      batch of 128 gives exactly 0.0128.
    """

    def __init__(
        self, init_kl_coef: float = 0.2, target: float = 6.0, k_beta: float = 0.0128
    ) -> None:
        init_kl_coef = _finite_float("init_kl_coef", init_kl_coef)
        target = _finite_float("target", target)
        k_beta = _finite_float("k_beta", k_beta)
        if init_kl_coef <= 0:
            raise ValueError(
                f"init_kl_coef must be > 0 (the update is multiplicative), got {init_kl_coef}"
            )
        if target <= 0:
            raise ValueError(f"target must be > 0, got {target}")
        # k_beta * |e| <= 0.2 * k_beta must stay < 1 so beta stays positive.
        if not 0 <= k_beta < 5:
            raise ValueError(f"k_beta must be in [0, 5), got {k_beta}")
        self.value = init_kl_coef
        self.target = target
        self.k_beta = k_beta

    def update(self, current_kl: float) -> float:
        """Apply one controller step for the batch's mean KL and return the new coefficient."""
        current_kl = _finite_float("current_kl", current_kl)
        # Ziegler et al. (2019) eq. in section 2.2: proportional error clipped to +-20%.
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + self.k_beta * proportional_error
        return self.value

    def __repr__(self) -> str:
        return (
            f"AdaptiveKLController(value={self.value:.6g}, target={self.target:.6g}, "
            f"k_beta={self.k_beta:.6g})"
        )
