"""Log perplexity of utterances given their conversation context under a causal LM.

"Avg Adv Perplexity" in the seed paper (section 5.1, "log prompt perplexity of
adversarial actions with regard to the frozen defender model") is the mean over
adversary utterances of ``log_perplexity``: the mean negative log-likelihood in nats
per token, i.e. ``log(perplexity)``. Its reported values (~3.03) are on this scale.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["log_perplexity", "span_log_perplexity"]


def _token_ids(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    return [list(map(int, ids)) for ids in encoded]


def log_perplexity(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    utterances: Sequence[str],
    batch_size: int = 8,
    add_context_special_tokens: bool = False,
) -> np.ndarray:
    """Per utterance, the mean NLL (nats/token) of its tokens given its context.

    ``model`` is a Hugging Face causal LM (``model(input_ids, attention_mask).logits``)
    and ``tokenizer`` its tokenizer. ``contexts[i]`` is the conversation before
    ``utterances[i]``, already rendered by the caller (chat template and generation
    header included), so it is tokenized without adding special tokens unless
    ``add_context_special_tokens``. The utterance is tokenized separately, never with
    special tokens, and its ids are appended to the context ids: the boundary is exact
    and only the utterance tokens enter the loss::

        log_ppl_i = -1/|u_i| * sum_{t in u_i} log p(x_t | x_<t)

    An empty context is replaced by the BOS token (there must be something to
    predict the first utterance token from). An utterance with no tokens gives nan.
    Sequences are sorted by length and right-padded in batches of ``batch_size``;
    causal attention keeps padding from changing any score. Runs on the model's
    device without gradients; a model in training mode is switched to eval mode for
    the call and back afterwards.
    """
    if len(contexts) != len(utterances):
        raise ValueError(f"contexts has {len(contexts)} entries, utterances has {len(utterances)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    context_ids = _token_ids(tokenizer, contexts, add_context_special_tokens)
    utterance_ids = _token_ids(tokenizer, utterances, False)
    bos = getattr(tokenizer, "bos_token_id", None)
    for i, ids in enumerate(context_ids):
        if not ids:
            if bos is None:
                raise ValueError(
                    f"contexts[{i}] is empty and the tokenizer has no BOS token to start from"
                )
            context_ids[i] = [int(bos)]

    todo = [i for i, ids in enumerate(utterance_ids) if ids]
    scores = span_log_perplexity(
        model,
        [context_ids[i] + utterance_ids[i] for i in todo],
        [[(len(context_ids[i]), len(context_ids[i]) + len(utterance_ids[i]))] for i in todo],
        pad_token_id=_pad_id(tokenizer),
        batch_size=batch_size,
    )
    result = np.full(len(utterances), np.nan, dtype=np.float64)
    for i, (score,) in zip(todo, scores, strict=True):
        result[i] = score
    return result


def _pad_id(tokenizer: Any) -> int:
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        pad_id = getattr(tokenizer, "eos_token_id", None) or 0
    return int(pad_id)


def span_log_perplexity(
    model: Any,
    sequences: Sequence[Sequence[int]],
    spans: Sequence[Sequence[tuple[int, int]]],
    *,
    pad_token_id: int = 0,
    batch_size: int = 8,
) -> list[list[float]]:
    """Per sequence, per ``[start, end)`` span of its ids: the mean NLL (nats/token) of the
    span's ids given every id before them, all spans of a sequence from one forward pass.

    Scoring every adversary utterance of a conversation this way costs one pass over the
    conversation instead of one pass per utterance over its growing context. Spans need
    ``1 <= start < end <= len(sequence)``. Sequences are sorted by length and right-padded
    in batches of ``batch_size``; causal attention keeps padding from changing any score.
    Where the model allows it, only the positions that predict a span's ids go through its
    output layer (`_logits_at`).
    """
    if len(sequences) != len(spans):
        raise ValueError(f"sequences has {len(sequences)} entries, spans has {len(spans)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i, (seq, seq_spans) in enumerate(zip(sequences, spans, strict=True)):
        for start, end in seq_spans:
            if not 1 <= start < end <= len(seq):
                raise ValueError(
                    f"span ({start}, {end}) of sequence {i} (length {len(seq)}) must satisfy "
                    "1 <= start < end <= length"
                )
    import torch  # deferred: the other metrics do not need torch

    result: list[list[float]] = [[] for _ in sequences]
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    device = getattr(model, "device", None) or next(model.parameters()).device
    was_training = bool(getattr(model, "training", False))
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            for first in range(0, len(order), batch_size):
                batch = order[first : first + batch_size]
                width = max(len(sequences[i]) for i in batch)
                input_ids = torch.full((len(batch), width), int(pad_token_id), dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                # logits at position p predict the id at p + 1: a span needs [start - 1, end - 1)
                needed = torch.zeros((len(batch), width), dtype=torch.bool)
                for row, i in enumerate(batch):
                    row_ids = torch.as_tensor(list(sequences[i]), dtype=torch.long)
                    input_ids[row, : len(row_ids)] = row_ids
                    attention_mask[row, : len(row_ids)] = 1
                    for start, end in spans[i]:
                        needed[row, start - 1 : end - 1] = True
                kept = _logits_at(model, input_ids.to(device), attention_mask.to(device), needed)
                # kept holds the needed positions in order, row by row: where each one lies
                at = needed.flatten().cumsum(0).reshape(needed.shape) - 1
                for row, i in enumerate(batch):
                    for start, end in spans[i]:
                        pred = kept[at[row, start - 1 : end - 1].to(kept.device)].float()
                        targets = input_ids[row, start:end].to(pred.device)
                        logprobs = torch.log_softmax(pred, dim=-1)
                        nll = -logprobs.gather(-1, targets[:, None]).mean()
                        result[i].append(float(nll))
    finally:
        if was_training:
            model.train()
    return result


def _logits_at(model: Any, input_ids: Any, attention_mask: Any, needed: Any) -> Any:
    """The model's logits at the positions where `needed` is True, `[needed.sum(), vocab]`,
    row by row and in order within a row (as `logits[needed]` orders them).

    A transformers causal LM that takes a boolean `logits_to_keep` runs its output layer on
    those positions alone. An adversary's utterances are a fraction of a conversation, and
    the output layer over the whole vocabulary is a fifth of a small model's forward pass and
    most of its memory. Any other model computes every position's logits.
    """
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        try:
            kept = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                logits_to_keep=needed.to(input_ids.device),
            ).logits
        except IndexError:  # a model that slices only by an int or a list of positions
            kept = None
        if kept is not None and kept.ndim == 2 and kept.shape[0] == int(needed.sum()):
            return kept
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits[needed.to(logits.device)]
