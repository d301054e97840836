"""Log perplexity of utterances given their conversation context under a causal LM.

"Avg Adv Perplexity" in the seed paper (section 5.1, "log prompt perplexity of
adversarial actions with regard to the frozen defender model") is the mean over
adversary utterances of ``log_perplexity``: the mean negative log-likelihood in nats
per token, i.e. ``log(perplexity)``. Its reported values (~3.03) are on this scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["log_perplexity"]


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
    import torch  # deferred: the other metrics do not need torch

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

    result = np.full(len(utterances), np.nan, dtype=np.float64)
    todo = [i for i, ids in enumerate(utterance_ids) if ids]
    # Similar lengths share a batch: less padding, same results.
    todo.sort(key=lambda i: len(context_ids[i]) + len(utterance_ids[i]))
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        pad_id = getattr(tokenizer, "eos_token_id", None) or 0
    device = getattr(model, "device", None) or next(model.parameters()).device

    was_training = bool(getattr(model, "training", False))
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                seqs = [context_ids[i] + utterance_ids[i] for i in batch]
                width = max(len(s) for s in seqs)
                input_ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
                attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for row, seq in enumerate(seqs):
                    input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                    attention_mask[row, : len(seq)] = 1
                logits = model(
                    input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
                ).logits
                for row, i in enumerate(batch):
                    ctx_len, utt_len = len(context_ids[i]), len(utterance_ids[i])
                    # Logits at position p predict token p + 1: the utterance tokens at
                    # [ctx_len, ctx_len + utt_len) are predicted from [ctx_len - 1, ...).
                    pred = logits[row, ctx_len - 1 : ctx_len + utt_len - 1].float()
                    targets = input_ids[row, ctx_len : ctx_len + utt_len].to(pred.device)
                    logprobs = torch.log_softmax(pred, dim=-1)
                    token_logprobs = logprobs.gather(-1, targets[:, None]).squeeze(-1)
                    result[i] = float(-token_logprobs.mean())
    finally:
        if was_training:
            model.train()
    return result
