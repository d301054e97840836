"""The adversary's actor-critic: a causal LM with its bottom layers frozen and an MLP critic."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from redteam_gym.models import (
    PrefixCache,
    Samples,
    SamplingConfig,
    encode_chat,
    left_pad,
    sample,
)
from redteam_gym.models.chat_lm import eos_token_ids


def transformer_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The stack of decoder blocks of a causal LM (Llama/Qwen/Mistral/GPT-2 layouts)."""
    base = getattr(model, "base_model", model)
    for path in ("layers", "h", "decoder.layers", "model.layers", "transformer.h"):
        module: object = base
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"cannot find the transformer layers of {type(model).__name__}")


def freeze_bottom(model: PreTrainedModel, fraction: float) -> int:
    """Freeze the input embeddings and the bottom `fraction` of layers (seed paper 3.5: the
    adversary trains only its top half). With tied embeddings the output head stays frozen
    too. Returns the number of frozen layers."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"frozen_fraction must be in [0, 1], got {fraction}")
    layers = transformer_layers(model)
    n_frozen = int(len(layers) * fraction)
    if n_frozen > 0:
        model.get_input_embeddings().requires_grad_(False)
    for layer in layers[:n_frozen]:
        layer.requires_grad_(False)
    return n_frozen


class Critic(nn.Module):
    """Two hidden ReLU layers on the actor's final hidden state, one value per position.

    The output layer starts at zero, so the first updates' advantages are the returns
    themselves rather than the noise of a randomly initialised value function (whose outputs
    would otherwise dwarf a judge score of a few hundredths).
    """

    def __init__(self, input_size: int, hidden_size: int = 2048) -> None:
        super().__init__()
        # built in order (the seed's random draws stay those of the recorded runs), then zeroed
        first, second, head = (
            nn.Linear(input_size, hidden_size),
            nn.Linear(hidden_size, hidden_size),
            nn.Linear(hidden_size, 1),
        )
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        self.net = nn.Sequential(first, nn.ReLU(), second, nn.ReLU(), head)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        dtype = next(self.net.parameters()).dtype
        return self.net(hidden.to(dtype)).squeeze(-1)


class ActorCritic(nn.Module):
    """The adversary policy (`actor`, a causal LM) and its value function (`critic`).

    The critic reads the actor's final hidden states detached, so the value loss trains the
    critic alone and never moves the policy (the actor and critic are separate networks with
    separate objectives in Perez et al. 2022 and the seed paper).
    """

    def __init__(
        self,
        actor: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        critic_hidden_size: int = 2048,
        frozen_fraction: float = 0.5,
    ) -> None:
        super().__init__()
        self.actor = actor
        self.tokenizer = tokenizer
        self.critic = Critic(actor.config.hidden_size, critic_hidden_size).to(actor.device)
        self.num_frozen_layers = freeze_bottom(actor, frozen_fraction)
        self.eos_token_ids = eos_token_ids(actor, tokenizer)

    @property
    def device(self) -> torch.device:
        return self.actor.device

    def value(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.critic(hidden.detach())

    def encode(self, chat: Sequence[dict[str, str]]) -> list[int]:
        return encode_chat(self.tokenizer, chat, add_generation_prompt=True)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingConfig,
        generator: torch.Generator | None,
        prefix_cache: PrefixCache | None = None,
    ) -> Samples:
        """Sample utterances with per-token logprobs and values, in one batched pass.

        `Samples.cache` holds the KV cache afterwards: passing it back as `prefix_cache` for
        the same dialogues' next turn prefills only their new messages (see `sample`)."""
        was_training = self.training
        self.eval()
        try:
            return sample(
                self.actor,
                prompts,
                sampling,
                eos_token_ids=self.eos_token_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                generator=generator,
                value_head=self.value,
                prefix_cache=prefix_cache,
                keep_cache=True,
            )
        finally:
            self.train(was_training)

    def evaluate(
        self,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        *,
        temperature: float = 1.0,
        with_values: bool = True,
        full: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Logprobs (and values) of `responses` given `prompts`, right-padded `[N, T]`.

        Returns `(logprobs, values, mask)`; position t of a row scores response token t
        from the hidden state just before it. With `full`, logprobs are the whole
        next-token distributions `[N, T, vocab]`.
        """
        return response_logprobs(
            self.actor,
            prompts,
            responses,
            pad_token_id=self.tokenizer.pad_token_id,
            temperature=temperature,
            value_head=self.value if with_values else None,
            full=full,
        )


def response_logprobs(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    temperature: float = 1.0,
    value_head=None,
    full: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One forward pass over `prompt + response` rows (left padded); the response tokens'
    logprobs under `model` (and `value_head` of the states that produced them). With `full`,
    the whole next-token log-distribution at each response position, `[N, T, vocab]`."""
    rows = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(rows, pad_token_id, device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    width = max(len(r) for r in responses)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        output_hidden_states=value_head is not None,
        logits_to_keep=width + 1,
    )
    # rows are left padded, so every response ends at the last column: the `width` states
    # before the end predict the (right-aligned) response tokens
    logits = out.logits[:, -width - 1 : -1, :].float() / temperature
    targets = input_ids[:, -width:]
    log_dist = logits.log_softmax(-1)
    logprobs_aligned = log_dist if full else log_dist.gather(-1, targets[..., None]).squeeze(-1)
    values_aligned = None
    if value_head is not None:
        values_aligned = value_head(out.hidden_states[-1][:, -width - 1 : -1, :]).float()
    # move each row's response to the left (right padding), the layout the losses use
    lengths = torch.tensor([len(r) for r in responses], device=device)
    mask = torch.arange(width, device=device)[None, :] < lengths[:, None]
    index = (torch.arange(width, device=device)[None, :] + (width - lengths)[:, None]).clamp(
        max=width - 1
    )
    if full:
        logprobs = logprobs_aligned.gather(
            1, index[..., None].expand(-1, -1, logprobs_aligned.shape[-1])
        ).masked_fill(~mask[..., None], 0.0)
    else:
        logprobs = logprobs_aligned.gather(1, index).masked_fill(~mask, 0.0)
    values = None
    if values_aligned is not None:
        values = values_aligned.gather(1, index).masked_fill(~mask, 0.0)
    return logprobs, values, mask
