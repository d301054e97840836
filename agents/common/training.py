"""Pieces the learners' `train` steps share: batching segments, autocast, grad clipping."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from agents.common.policy import ActorCritic
from agents.common.rollout import TokenBatch, reference_logits


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA devices with bf16; a no-op elsewhere.

    Not on the CPU, even one with AVX512-BF16: there it makes an epoch about 1.4-1.6x faster
    but moves the logprobs by 0.03 nats on average and up to 0.3 (`benchmarks/results/
    perf-bf16-autocast.md`), so PPO's first-epoch ratio to the fp32 sampler would be off by
    up to a third instead of 1.
    """
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def micro_batches(rows: Sequence[int], size: int) -> list[list[int]]:
    """`rows` in consecutive chunks of `size` (one chunk when `size` is 0)."""
    rows = [int(r) for r in rows]
    if size <= 0:
        return [rows]
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of `x` where `mask` is true (entries outside it never reach the sum, NaN included)."""
    return torch.where(mask, x, torch.zeros_like(x)).sum()


def reference_distributions(
    ref_model: PreTrainedModel, policy: ActorCritic, batch: TokenBatch, *, temperature: float
) -> torch.Tensor:
    """The frozen reference's next-token log-distributions at the batch's trained tokens,
    `[B, L, vocab]`: the layout `ActorCritic.evaluate_batch(full=True)` returns
    (`reference_logits`: the top layers alone when the actor shares its bottom)."""
    logits = reference_logits(batch, ref_model, policy, temperature=temperature)
    return logits.log_softmax(-1).masked_fill(~batch.mask[..., None], 0.0)


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
