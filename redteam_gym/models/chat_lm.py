"""A causal LM that replies to conversations: the defender's dynamics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from redteam_gym.models.chat import Message, encode_chat, encode_chat_span
from redteam_gym.models.generation import PrefixCache, SamplingConfig, left_pad, sample
from redteam_gym.models.loading import load_causal_lm
from redteam_gym.models.thread import ThreadFormat, one_line, tail_cut


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a reply: the tokenizer's EOS and the generation config's (Llama 3's
    `<|eot_id|>` lives only there)."""
    ids = {tokenizer.eos_token_id}
    configured = model.generation_config.eos_token_id
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


class ChatLM:
    """Batched chat replies from a frozen causal LM.

    Args:
        model, tokenizer: a loaded causal LM (see `from_pretrained`).
        sampling: decoding settings for replies.
        system_prompt: prepended as a system message when given (a header line before a
            thread).
        thread: None to read conversations through the tokenizer's chat template; a
            `ThreadFormat` to read them as a plain text thread that the model continues (the
            completion format, for any causal LM, base or instruct). Its messages then have
            the roles `opener`, `user` and `assistant`, and a reply ends at the format's stop
            strings.
        max_context_tokens: longer prompts keep their last tokens (the reply's turn header
            survives; the earliest context is dropped).
        reuse_cache: keep the KV cache of the last batch, so that when the next call continues
            the same conversations (row for row, as the envs do turn after turn) only their new
            messages are prefilled. Costs the memory of one batch's cache between calls; the
            replies do not depend on it beyond floating-point rounding.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        sampling: SamplingConfig | None = None,
        system_prompt: str | None = None,
        max_context_tokens: int = 2048,
        reuse_cache: bool = True,
        thread: ThreadFormat | None = None,
    ) -> None:
        self.model = model
        self.thread = thread
        self.tokenizer = tokenizer
        self.sampling = sampling or SamplingConfig(max_new_tokens=64, temperature=0.7, top_p=0.9)
        self.system_prompt = system_prompt
        self.max_context_tokens = max_context_tokens
        self.reuse_cache = reuse_cache
        self._cache: PrefixCache | None = None
        self.eos_token_ids = eos_token_ids(model, tokenizer)
        self._line_break_ids: list[int] | None = None
        self.name = getattr(model, "name_or_path", type(model).__name__)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        weights: str = "dense",
        **kwargs,
    ) -> ChatLM:
        """`load_causal_lm`'s frozen model (`weights` as there) in a ChatLM; `kwargs` go to
        `ChatLM`. Dense by default, unlike `make_defender`: adversaries load here too, and the
        zero-shot one is the policy's initial model, which stays fp32."""
        model, tokenizer = load_causal_lm(
            name_or_path, device=device, dtype=dtype, frozen=True, weights=weights
        )
        chat = cls(model, tokenizer, **kwargs)
        chat.name = name_or_path
        return chat

    def clear_cache(self) -> None:
        """Free the KV cache kept from the last batch."""
        self._cache = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def format(self) -> str:
        """`"chat"` or `"completion"` (a text thread)."""
        return "chat" if self.thread is None else "completion"

    def _messages(self, conversation: Sequence[Message]) -> list[Message]:
        messages = list(conversation)
        if self.system_prompt:
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return messages

    def encode(self, conversation: Sequence[Message]) -> list[int]:
        """Prompt ids for the assistant's next reply to `conversation`."""
        messages = self._messages(conversation)
        if self.thread is not None:
            ids = self.thread.encode(self.tokenizer, messages, prompt=True)[0]
        else:
            ids = encode_chat(self.tokenizer, messages, add_generation_prompt=True)
        return ids[-self.max_context_tokens :]

    def encode_span(
        self, conversation: Sequence[Message], tail_chars: int | None = None
    ) -> tuple[list[int], tuple[int, int]]:
        """Ids of `conversation` (no generation prompt) and the `[start, end)` ids of its last
        message's content, or of that content's last `tail_chars` characters."""
        messages = self._messages(conversation)
        if self.thread is not None:
            return self.thread.encode(self.tokenizer, messages, prompt=False, tail_chars=tail_chars)
        return encode_chat_span(
            self.tokenizer, messages, add_generation_prompt=False, tail_chars=tail_chars
        )

    def line_break_ids(self) -> list[int]:
        """Every id whose text holds a line break (held back at the start of a thread reply,
        so that it cannot end before `min_new_tokens`)."""
        if self._line_break_ids is None:
            vocab = len(self.tokenizer)
            texts = self.tokenizer.batch_decode([[i] for i in range(vocab)])
            self._line_break_ids = [i for i, t in enumerate(texts) if "\n" in t or "\r" in t]
        return self._line_break_ids

    def log_likelihood(
        self,
        conversations: Sequence[Sequence[Message]],
        tail_chars: Sequence[int],
        score_chars: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> np.ndarray:
        """Per conversation, the mean log-probability per token (nats) of the last `tail_chars`
        characters of its last message given everything before them, as this LM reads the
        chat: how natural an utterance is to the defender (ASTPrompter's likelihood term).

        With `score_chars`, per conversation the `[start, end)` character ranges of the tail
        (its stripped text) whose tokens count: a token counts when it holds a character of
        one, and the others are read as context but left out of the mean (the reward scores
        an utterance's novel words so). One batched forward; nan where no token counts (an
        empty tail, or no token in `score_chars`)."""
        if len(conversations) != len(tail_chars):
            raise ValueError(
                f"{len(conversations)} conversations but {len(tail_chars)} tail lengths"
            )
        if score_chars is not None and len(score_chars) != len(conversations):
            raise ValueError(
                f"{len(conversations)} conversations but {len(score_chars)} score_chars"
            )
        rows, spans, masks, todo = [], [], [], []
        for i, (conversation, tail) in enumerate(zip(conversations, tail_chars, strict=True)):
            ids, (start, end) = self.encode_span(conversation, tail)
            mask = None
            if score_chars is not None:
                text, ranges = self._tail_text(conversation[-1], tail, score_chars[i])
                mask = _tokens_in(self.tokenizer, text, ids[start:end], ranges)
            cut = max(len(ids) - self.max_context_tokens, 0)
            kept = max(start - cut, 1)
            if mask is not None:
                mask = mask[kept + cut - start :]
            start, end = kept, end - cut
            if end > start and (mask is None or mask.any()):
                rows.append(ids[cut:])
                spans.append((start, end))
                masks.append(mask)
                todo.append(i)
        result = np.full(len(conversations), np.nan)
        if rows:
            result[todo] = self._span_logprob(rows, spans, masks)
        return result

    def _tail_text(
        self, message: Message, tail: int, ranges: Sequence[tuple[int, int]]
    ) -> tuple[str, list[tuple[int, int]]]:
        """The text `encode_span` tokenised as the last `tail` characters of `message`, and
        `ranges` (over those characters of the stripped content) moved onto it."""
        content = str(message["content"]).strip()
        start = max(len(content) - tail, 0)
        if self.thread is None:
            return content[start:], list(ranges)
        # the thread writes the message on one line after the template's gap
        flat, where = one_line(content)
        piece = self.thread.content_gap + flat
        cut = tail_cut(piece, tail)
        shift = len(self.thread.content_gap) - cut
        moved = [
            (where[start + a] + shift, where[start + b - 1] + 1 + shift)
            for a, b in ranges
            if b > a and start + b - 1 < len(where)
        ]
        return piece[cut:], moved

    @torch.inference_mode()
    def _span_logprob(
        self,
        rows: list[list[int]],
        spans: list[tuple[int, int]],
        masks: Sequence[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        # left padded, so every row ends in the last column and only the columns from the
        # earliest span start on need logits (not [B, L, vocab] for the whole context)
        input_ids, attention_mask = left_pad(rows, self.tokenizer.pad_token_id or 0, self.device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(len(ids) - start + 1 for ids, (start, _) in zip(rows, spans, strict=True))
        logits = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=keep,
        ).logits.float()
        width = input_ids.shape[1]
        out = np.empty(len(rows))
        for r, (ids, (start, end)) in enumerate(zip(rows, spans, strict=True)):
            shift = width - len(ids)  # left padding
            first = start + shift - 1 - (width - keep)  # logits column predicting `start`
            pred = logits[r, first : first + end - start].log_softmax(-1)
            targets = input_ids[r, start + shift : end + shift]
            logprobs = pred.gather(-1, targets[:, None])[:, 0]
            if masks is not None and masks[r] is not None:
                logprobs = logprobs[torch.as_tensor(masks[r], device=logprobs.device)]
            out[r] = logprobs.mean().item()
        return out

    def respond(
        self, conversations: Sequence[Sequence[Message]], generator: torch.Generator | None = None
    ) -> list[str]:
        """One reply per conversation, generated in a single batch."""
        prompts = [self.encode(c) for c in conversations]
        cache, self._cache = self._cache, None
        thread = self.thread
        samples = sample(
            self.model,
            prompts,
            self.sampling,
            eos_token_ids=self.eos_token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            generator=generator,
            prefix_cache=cache if self.reuse_cache else None,
            keep_cache=self.reuse_cache,
            held_back_ids=self.line_break_ids() if thread is not None else (),
            stop=thread.stop_rule(self.tokenizer) if thread is not None else None,
        )
        self._cache = samples.cache
        texts = self.tokenizer.batch_decode(samples.tokens, skip_special_tokens=True)
        if thread is not None:
            return [thread.cut(t) for t in texts]
        return [t.strip() for t in texts]


def _tokens_in(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    ids: Sequence[int],
    ranges: Sequence[tuple[int, int]],
) -> np.ndarray:
    """Per token of `ids` (the tokens of `text`), whether it holds a character of one of the
    `[start, end)` character `ranges` of `text`."""
    encoded = tokenizer(
        text, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True
    )
    if list(encoded.input_ids) != list(ids):
        raise ValueError("the tokenizer's offsets do not match the tokens of the text")
    return np.asarray(
        [any(a < e and s < b for s, e in ranges) for a, b in encoded.offset_mapping], dtype=bool
    )
