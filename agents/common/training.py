"""Pieces the learners' `train` steps share: batching segments, autocast, grad clipping."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from agents.common.policy import ActorCritic, response_logprobs
from agents.common.rollout import Segment, pack


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on devices that support it (CUDA with bf16); a no-op elsewhere."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate_segments(
    policy: ActorCritic,
    segments: Sequence[Segment],
    groups: Sequence[int],
    *,
    temperature: float,
    full: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The current policy's logprobs and values of the rollout's tokens, as trajectories.

    Returns `(logprobs [B, L], values [B, L], log_dist [S, T, vocab] or None)`; the full
    distributions stay per segment (A2C's exact KL), the rest is packed per dialogue.
    """
    out, values, _ = policy.evaluate(
        [s.prompt for s in segments],
        [s.tokens for s in segments],
        temperature=temperature,
        full=full,
    )
    assert values is not None
    if full:
        tokens = torch.zeros(out.shape[:2], dtype=torch.long, device=out.device)
        for i, s in enumerate(segments):
            tokens[i, : len(s.tokens)] = torch.tensor(s.tokens, device=out.device)
        logprobs = out.gather(-1, tokens[..., None]).squeeze(-1)
    else:
        logprobs = out
    logprobs_t, _ = pack(segments, list(logprobs), groups)
    values_t, _ = pack(segments, list(values), groups)
    return logprobs_t, values_t, out if full else None


def micro_batches(rows: Sequence[int], size: int) -> list[list[int]]:
    """`rows` in consecutive chunks of `size` (one chunk when `size` is 0)."""
    rows = [int(r) for r in rows]
    if size <= 0:
        return [rows]
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of `x` where `mask` is true (entries outside it never reach the sum, NaN included)."""
    return torch.where(mask, x, torch.zeros_like(x)).sum()


@torch.no_grad()
def reference_distributions(
    ref_model: nn.Module, segments: Sequence[Segment], *, pad_token_id: int, temperature: float
) -> torch.Tensor:
    """The frozen reference's next-token log-distributions at each segment's tokens,
    `[S, T, vocab]` right padded: the layout `evaluate_segments(full=True)` returns."""
    out, _, _ = response_logprobs(
        ref_model,
        [s.prompt for s in segments],
        [s.tokens for s in segments],
        pad_token_id=pad_token_id,
        temperature=temperature,
        full=True,
    )
    return out


def clip_and_step(
    optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter], max_norm: float
) -> float:
    """Clip the gradient norm of `params`, step, and return the norm before clipping."""
    norm = nn.utils.clip_grad_norm_([p for p in params if p.requires_grad], max_norm)
    optimizer.step()
    return float(norm)


class RunningMeanStd:
    """Running mean and variance of returns, for the critic's value normalisation."""

    def __init__(self, epsilon: float = 1e-4) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, epsilon

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        if x.numel() == 0:
            return
        batch_mean, batch_var, n = x.mean().item(), x.var(unbiased=False).item(), x.numel()
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (
            self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        ) / total
        self.count = total

    @property
    def std(self) -> float:
        return max(self.var, 1e-8) ** 0.5

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]
