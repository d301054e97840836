"""Batched sampling with a KV cache, seeded through one `torch.Generator`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel


@dataclass
class SamplingConfig:
    """How a language model samples its replies."""

    max_new_tokens: int = 64
    """Most tokens generated per reply (the stop token included)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 disables it."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 disables it."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclass
class Samples:
    """What `sample` returns, one row per prompt."""

    tokens: list[list[int]]
    """Generated ids, the stop token included when one was sampled."""
    logprobs: list[torch.Tensor]
    """Log-probability of each generated id under the sampling distribution's logits / T."""
    values: list[torch.Tensor] | None = None
    """`value_head` applied to the final hidden state that produced each id, when given."""


def left_pad(
    rows: Sequence[Sequence[int]], pad_token_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists into `(input_ids, attention_mask)`."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def _accepts_logits_to_keep(model: PreTrainedModel) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside the top-k set and the top-p nucleus with -inf."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the mass before it already reaches top_p (the top one always stays)
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    *,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    generator: torch.Generator | None = None,
    value_head: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Samples:
    """Sample continuations of a batch of prompts in one batched, KV-cached loop.

    Rows are left padded with explicit position ids, so every row sees the same positions
    it would see alone. Sampling draws from `generator`, so a seeded generator gives the
    same tokens on the same device. With `value_head`, the final hidden state of each step is
    mapped to a value as the token is sampled, so a learner needs no second forward pass.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("sample needs at least one prompt and no empty prompts")
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompts, pad_token_id, device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    extra: dict = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    if value_head is not None:
        extra["output_hidden_states"] = True
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        **extra,
    )
    batch = len(prompts)
    eos = torch.as_tensor(list(eos_token_ids), device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    steps: list[torch.Tensor] = []
    step_logprobs: list[torch.Tensor] = []
    step_values: list[torch.Tensor] = []
    alive: list[torch.Tensor] = []
    next_position = position_ids[:, -1]
    for _ in range(config.max_new_tokens):
        logits = out.logits[:, -1, :].float()
        if config.temperature == 0:
            logprobs = logits.log_softmax(-1)
            token = logits.argmax(-1)
        else:
            logits = filter_logits(logits / config.temperature, config.top_k, config.top_p)
            logprobs = logits.log_softmax(-1)
            token = torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(-1)
        token = torch.where(done, torch.full_like(token, pad_token_id), token)
        alive.append(~done)
        steps.append(token)
        step_logprobs.append(logprobs.gather(-1, token[:, None]).squeeze(-1))
        if value_head is not None:
            step_values.append(value_head(out.hidden_states[-1][:, -1, :]).float())
        done = done | torch.isin(token, eos)
        if bool(done.all()):
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=-1)
        next_position = next_position + 1
        out = model(
            input_ids=token[:, None],
            attention_mask=attention_mask,
            position_ids=next_position[:, None],
            past_key_values=out.past_key_values,
            use_cache=True,
            **extra,
        )
    tokens_t = torch.stack(steps, 1).cpu()
    logprobs_t = torch.stack(step_logprobs, 1).cpu()
    alive_t = torch.stack(alive, 1).cpu()
    lengths = alive_t.sum(1).tolist()
    values_t = torch.stack(step_values, 1).cpu() if step_values else None
    return Samples(
        tokens=[tokens_t[i, :n].tolist() for i, n in enumerate(lengths)],
        logprobs=[logprobs_t[i, :n] for i, n in enumerate(lengths)],
        values=None if values_t is None else [values_t[i, :n] for i, n in enumerate(lengths)],
    )
