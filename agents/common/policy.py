"""The adversary's actor-critic: a causal LM with its bottom layers frozen (and its top fully
trained, or adapted by LoRA) and an MLP critic."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agents.common.batch import TokenBatch
from agents.common.lora import Adapters, add_adapters
from agents.common.shared_bottom import (
    batch_hidden,
    boundary_layer,
    can_share,
    transformer_layers,
)
from redteam_gym.models import (
    PrefixCache,
    Samples,
    SamplingConfig,
    encode_chat,
    sample,
)
from redteam_gym.models.chat import encode_chat_continuation
from redteam_gym.models.chat_lm import eos_token_ids
from redteam_gym.models.thread import ThreadFormat

if TYPE_CHECKING:
    from agents.common.config import LoRAConfig


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

    `thread`: None to read conversations through the tokenizer's chat template; a
    `ThreadFormat` to read them as a text thread that the actor continues (a defender in the
    env's completion format), its messages then those of `thread_view`. A sampled message then
    ends at the thread's stop rules, and its stop's tokens are the last it samples: the ids a
    learner trains on are the ids sampled, and the env gets the text cut before the stop.

    `lora`: with a rank above 0, the layers above the frozen bottom get LoRA adapters
    (`agents.common.lora`) and every base weight is frozen; `adapters_from` loads saved ones.
    The actor stays the causal LM itself (the adapters live inside its modules), so every
    forward below is the same with and without them; `adapters_off` turns it into the base.
    """

    def __init__(
        self,
        actor: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        critic_hidden_size: int = 2048,
        frozen_fraction: float = 0.5,
        thread: ThreadFormat | None = None,
        lora: LoRAConfig | None = None,
        adapters_from: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.actor = actor
        self.tokenizer = tokenizer
        self.thread = thread
        self.critic = Critic(actor.config.hidden_size, critic_hidden_size).to(actor.device)
        self.num_frozen_layers = freeze_bottom(actor, frozen_fraction)
        self.adapters: Adapters | None = None
        """The actor's LoRA adapters (None: the top layers train in full)."""
        if lora is not None and lora.enabled:
            self.adapters = add_adapters(
                actor,
                lora,
                transformer_layers(actor),
                self.num_frozen_layers,
                saved=adapters_from,
            )
        self.eos_token_ids = eos_token_ids(actor, tokenizer)
        self.shares_bottom = False
        """Whether training runs the top layers alone, from the reference's boundary states
        (set by `share_bottom`)."""

    @property
    def device(self) -> torch.device:
        return self.actor.device

    def value(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.critic(hidden.detach())

    def adapters_off(self) -> AbstractContextManager[None]:
        """Within the block the actor is its base model, LoRA adapters off: the KL reference
        when the learner has no second copy of it (a no-op without adapters)."""
        return self.adapters.off() if self.adapters is not None else contextlib.nullcontext()

    def save_actor(self, directory: str | os.PathLike[str]) -> None:
        """The trained actor and its tokenizer: with LoRA only the adapters (peft's format, a
        few MB; the base is the config's model), else the whole LM."""
        if self.adapters is not None:
            self.adapters.save(directory)
        else:
            self.actor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def encode(self, chat: Sequence[dict[str, str]]) -> list[int]:
        """Prompt ids for the policy's next message: `chat` through the chat template with its
        generation prompt, or the thread ending with the reply's tag."""
        if self.thread is not None:
            return self.thread.encode(self.tokenizer, chat, prompt=True)[0]
        return encode_chat(self.tokenizer, chat, add_generation_prompt=True)

    def continuation(self, chat: Sequence[dict[str, str]], after: int) -> list[int]:
        """The ids that follow message `after`'s generated content in `chat`'s prompt (see
        `encode_chat_continuation` and `ThreadFormat.continuation`)."""
        if self.thread is not None:
            return self.thread.continuation(self.tokenizer, chat, after=after)
        return encode_chat_continuation(self.tokenizer, chat, after=after)

    def stop_rule(self) -> Callable[[Sequence[int]], bool] | None:
        """`sample`'s stop check: the thread's stop rules (None in a chat, where the end of
        turn is a stop token)."""
        return None if self.thread is None else self.thread.stop_rule(self.tokenizer)

    def decode(self, tokens: Sequence[Sequence[int]]) -> list[str]:
        """Each sampled message's text as the env receives it: decoded without special
        tokens, cut before the thread's first stop, stripped."""
        texts = self.tokenizer.batch_decode([list(t) for t in tokens], skip_special_tokens=True)
        if self.thread is not None:
            return [self.thread.cut(t) for t in texts]
        return [t.strip() for t in texts]

    def share_bottom(self, reference: PreTrainedModel) -> bool:
        """Let training start from `reference`'s boundary states when they are the actor's own
        (`agents.common.shared_bottom`): the frozen bottom is the reference's, and no LoRA
        adapter sits in it (with LoRA the reference is the actor with its adapters off)."""
        self.shares_bottom = can_share(
            self.actor, reference, self.num_frozen_layers, reference_mode=self.adapters_off
        )
        return self.shares_bottom

    def evaluate_batch(
        self, batch: TokenBatch, *, temperature: float = 1.0, full: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The current policy on a rollout's token batch, one forward pass per dialogue.

        Returns `(logprobs [B, L], values [B, L])` of the trained tokens, or with `full` the
        whole next-token log-distributions `[B, L, vocab]` in place of the logprobs. With a
        shared bottom (`share_bottom`) and the batch's boundary states, the pass runs only
        the top layers.
        """
        start = self.num_frozen_layers if self.shares_bottom else None
        hidden = batch_hidden(self.actor, batch, start)
        states = states_before(hidden, batch.positions)
        log_dist = (token_logits(self.actor, states) / temperature).log_softmax(-1)
        values = self.value(states).float().masked_fill(~batch.mask, 0.0)
        if full:
            return log_dist.masked_fill(~batch.mask[..., None], 0.0), values
        logprobs = log_dist.gather(-1, batch.tokens[..., None]).squeeze(-1)
        return logprobs.masked_fill(~batch.mask, 0.0), values

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingConfig,
        generator: torch.Generator | None,
        prefix_cache: PrefixCache | None = None,
    ) -> Samples:
        """Sample utterances with per-token logprobs and values, in one batched pass; in a
        thread, each ends at the thread's stop rules (no ids are held back: the logprobs stay
        those of the policy's own distribution, which the learners' ratios need).

        `Samples.cache` holds the KV cache afterwards: passing it back as `prefix_cache` for
        the same dialogues' next turn prefills only their new messages (see `sample`). With a
        shared bottom, `Samples.states` keeps the boundary states of every id fed."""
        was_training = self.training
        self.eval()
        boundary = (
            boundary_layer(self.actor, self.num_frozen_layers) if self.shares_bottom else None
        )
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
                keep_states_of=boundary,
                stop=self.stop_rule(),
            )
        finally:
            self.train(was_training)


def states_before(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The states `[B, L, hidden]` that predict the tokens at `positions` `[B, L]`: each one's
    previous position."""
    index = (positions - 1).clamp(min=0)
    return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))


def token_logits(model: PreTrainedModel, states: torch.Tensor) -> torch.Tensor:
    """The output projection of `states`, in float32 (with the final soft-capping of the
    models that have it)."""
    logits = model.get_output_embeddings()(states).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
