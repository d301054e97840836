"""The shared bottom: the actor's frozen bottom layers are the reference's, so one reference
forward gives both and training runs only the top layers.

A learner's actor freezes its input embeddings and its first `num_frozen_layers` decoder
blocks (seed paper 3.5); the KL reference is the initial model (or, with LoRA, the actor with
its adapters off). Below the boundary, the input of the first trained layer, both compute the
same states, so they are computed once. The path, in the order a rollout takes it:

1. `can_share` (from `ActorCritic.share_bottom`, once per learner): the frozen weights are
   equal, none of them trains, and on a small probe the top layers from the reference's
   boundary states give the actor's full forward. Otherwise every forward runs whole.
2. Sampling keeps the states of `boundary_layer` for every id it feeds
   (`redteam_gym.models.sample(keep_states_of=...)`); `BoundaryStates` gathers them turn by
   turn and lays them out as the token batch (`TokenBatch.boundary`).
3. The reference pass (`reference_hidden`) runs only the reference's top layers from them, or,
   without them, runs whole and keeps its own boundary states in the batch.
4. Every training epoch (`batch_hidden`, from `ActorCritic.evaluate_batch`) runs only the
   actor's top layers from `TokenBatch.boundary`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

import torch
from torch import nn
from transformers import PreTrainedModel

from agents.common.batch import TokenBatch
from redteam_gym.models import Samples


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


def final_hidden(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
) -> torch.Tensor:
    """The model's final (normalised) hidden states `[B, N, hidden]`, without the output
    projection, so that only the positions that need logits pay for the vocabulary."""
    return model.base_model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
    ).last_hidden_state


@contextlib.contextmanager
def _layers_from(model: PreTrainedModel, start: int) -> Iterator[None]:
    """Within the block, the model's decoder stack is its layers from `start` on."""
    layers = transformer_layers(model)
    owner = next(m for m in model.modules() if any(child is layers for child in m.children()))
    name = next(n for n, child in owner.named_children() if child is layers)
    setattr(owner, name, layers[start:])
    try:
        yield
    finally:
        setattr(owner, name, layers)


def top_layers(
    model: PreTrainedModel,
    boundary: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    start: int,
) -> torch.Tensor:
    """The final hidden states from the input of layer `start` on: the model's own forward
    with `boundary` as its input embeddings and its decoder stack cut to layers `start..`.

    Right for models whose forward goes embeddings -> blocks -> norm with nothing added to
    the input embeddings in between (Llama, Mistral, Qwen); `ActorCritic.share_bottom` checks
    it on a probe before any learner relies on it.
    """
    with _layers_from(model, start):
        return model.base_model(
            inputs_embeds=boundary, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state


@torch.no_grad()
def boundary_states(
    model: PreTrainedModel,
    start: int,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: `(final hidden states, the input states of layer start)`."""
    captured: list[torch.Tensor] = []

    def keep(_module, _args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    hook = transformer_layers(model)[start - 1].register_forward_hook(keep)
    try:
        hidden = final_hidden(model, input_ids, attention_mask, position_ids)
    finally:
        hook.remove()
    return hidden, captured[-1]


def _bottom_parameters(model: PreTrainedModel, start: int) -> Iterator[nn.Parameter]:
    """The parameters of the input embeddings and of the layers below `start`."""
    yield from model.get_input_embeddings().parameters()
    for layer in transformer_layers(model)[:start]:
        yield from layer.parameters()


def _bottoms_equal(actor: PreTrainedModel, reference: PreTrainedModel, start: int) -> bool:
    bottom = zip(
        transformer_layers(actor)[:start], transformer_layers(reference)[:start], strict=True
    )
    pairs = [(actor.get_input_embeddings(), reference.get_input_embeddings()), *bottom]
    for mine, theirs in pairs:
        a, b = list(mine.parameters()), list(theirs.parameters())
        if len(a) != len(b) or any(
            x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y)
            for x, y in zip(a, b, strict=True)
        ):
            return False
    return True


def boundary_layer(model: PreTrainedModel, start: int) -> nn.Module:
    """The decoder block whose output is the input of layer `start`: the one whose states
    sampling keeps."""
    return transformer_layers(model)[start - 1]


@torch.no_grad()
def can_share(
    actor: PreTrainedModel,
    reference: PreTrainedModel,
    start: int,
    reference_mode: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
) -> bool:
    """Whether the actor's layers from `start` on, fed `reference`'s boundary states, give
    the actor's own forward: the bottoms' weights are equal and frozen, and a small probe
    (one full row, one right-padded row) agrees within rounding. `reference_mode` is the
    context the reference runs in (with LoRA, the actor with its adapters off)."""
    if start == 0 or start >= len(transformer_layers(actor)):
        return False
    if not _bottoms_equal(actor, reference, start):
        return False
    if any(p.requires_grad for p in _bottom_parameters(actor, start)):
        return False  # a trained bottom (adapters in it) is no longer the reference's
    device = actor.device
    probe = torch.arange(3, 15, device=device).remainder(actor.config.vocab_size)
    input_ids = probe.reshape(2, 6)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 4:] = 0  # a right-padded row, as batches have
    position_ids = torch.arange(6, device=device).expand(2, -1)
    full = final_hidden(actor, input_ids, attention_mask, position_ids)
    with reference_mode():
        _, boundary = boundary_states(reference, start, input_ids, attention_mask, position_ids)
    try:
        top = top_layers(actor, boundary, attention_mask, position_ids, start)
    except (TypeError, ValueError, AttributeError, RuntimeError):
        return False
    kept = attention_mask.bool()
    tol = 1e-4 if full.dtype == torch.float32 else 2e-2
    scale = full[kept].abs().max().clamp_min(1.0)
    return bool(((top - full)[kept].abs().max() / scale) <= tol)


class BoundaryStates:
    """Each dialogue's boundary states over a rollout, as sampling fed its ids, turn by turn."""

    def __init__(self, num_dialogues: int) -> None:
        self.rows: list[torch.Tensor | None] = [None] * num_dialogues

    def add(self, samples: Samples, dialogues: Sequence[int]) -> None:
        """The states one `sample` call kept for `dialogues` (its rows, in order): each row's
        start from where its prefix cache ended, so a turn replaces what was fed after it."""
        if samples.states is None or samples.states_start is None:
            return
        for row, i in enumerate(dialogues):
            start, states = samples.states_start[row], samples.states[row]
            before = self.rows[i]
            self.rows[i] = states if before is None else torch.cat([before[:start], states])

    def stack(self, sequences: Sequence[Sequence[int]], width: int) -> torch.Tensor | None:
        """`[D, width, hidden]` boundary states, right padded (None unless every dialogue has
        them). The sampler never feeds a dialogue's last id, so its row stays zero: being
        last, it changes no state the losses read (causal attention), as the rows of padding
        do not."""
        if any(b is None for b in self.rows):
            return None
        first = next(b for b in self.rows if b is not None)
        out = first.new_zeros((len(self.rows), width, first.shape[-1]))
        for i, (states, ids) in enumerate(zip(self.rows, sequences, strict=True)):
            assert states is not None
            n = min(len(states), len(ids))
            if n < len(ids) - 1:
                raise RuntimeError(
                    f"dialogue {i}: the sampler kept boundary states for {n} of {len(ids)} ids"
                )
            out[i, :n] = states[:n]
        return out


def batch_hidden(model: PreTrainedModel, batch: TokenBatch, start: int | None) -> torch.Tensor:
    """`model`'s final hidden states over a token batch: with a shared bottom (`start`, the
    first trained layer) and the batch's boundary states, the layers from `start` alone;
    otherwise the whole forward."""
    if start is not None and batch.boundary is not None:
        return top_layers(model, batch.boundary, batch.attention_mask, batch.position_ids, start)
    return final_hidden(model, batch.input_ids, batch.attention_mask, batch.position_ids)


@torch.no_grad()
def reference_hidden(model: PreTrainedModel, batch: TokenBatch, start: int | None) -> torch.Tensor:
    """The reference's final hidden states over a token batch. With a shared bottom
    (`start`), from the batch's boundary states through the top layers, or, without them, one
    whole forward that also fills `batch.boundary` for the training epochs."""
    if start is not None and batch.boundary is None:
        hidden, batch.boundary = boundary_states(
            model, start, batch.input_ids, batch.attention_mask, batch.position_ids
        )
        return hidden
    return batch_hidden(model, batch, start)
