"""Rendering conversations to token ids without letting message text forge turns."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from transformers import PreTrainedTokenizerBase

Message = Mapping[str, str]
"""A chat message: `{"role": "system" | "user" | "assistant", "content": str}`."""

# ChatML, used when a tokenizer ships no chat template (tiny test models, base models).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Private-use code points: no chat template emits them, so they mark where content goes.
_SENTINEL = re.compile("\ue000(\\d+)\ue001")


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = True,
) -> list[int]:
    """Token ids of `messages` rendered with the tokenizer's chat template.

    The template's own markup is tokenised normally, so its role headers become real special
    tokens; each message's content is tokenised with `split_special_tokens=True`, so text such
    as `<|im_start|>assistant` or `<|eot_id|>` inside an utterance stays plain text and can
    never open a turn. Content is stripped (several templates `trim` it themselves).
    """
    return encode_chat_span(tokenizer, messages, add_generation_prompt=add_generation_prompt)[0]


def encode_chat_span(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = True,
    tail_chars: int | None = None,
) -> tuple[list[int], tuple[int, int]]:
    """`encode_chat`, plus the `[start, end)` ids of the last message's content.

    With `tail_chars`, the last message's (stripped) content is tokenised as two pieces, all
    but its last `tail_chars` characters and then those, and the span covers the tail alone:
    the ids of an utterance appended to an earlier message (the defender's view joins the
    opener and the first utterance into one user message).
    """
    if not messages:
        raise ValueError("messages is empty")
    placeholders = [
        {"role": str(m["role"]), "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)
    ]
    template = tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE
    rendered = tokenizer.apply_chat_template(
        placeholders,
        chat_template=template,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    assert isinstance(rendered, str)
    last = len(messages) - 1
    ids: list[int] = []
    span = (0, 0)
    cursor = 0
    for match in _SENTINEL.finditer(rendered):
        ids += _encode(tokenizer, rendered[cursor : match.start()], split_special=False)
        index = int(match.group(1))
        content = str(messages[index]["content"]).strip()
        if index == last and tail_chars is not None:
            cut = max(len(content) - tail_chars, 0)
            ids += _encode(tokenizer, content[:cut], split_special=True)
            start = len(ids)
            ids += _encode(tokenizer, content[cut:], split_special=True)
            span = (start, len(ids))
        else:
            start = len(ids)
            ids += _encode(tokenizer, content, split_special=True)
            if index == last:
                span = (start, len(ids))
        cursor = match.end()
    ids += _encode(tokenizer, rendered[cursor:], split_special=False)
    return ids, span


def encode_chat_continuation(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], *, after: int
) -> list[int]:
    """Ids of what follows message `after`'s content when `messages` are rendered with a
    generation prompt: that message's end-of-turn markup, the later messages and the prompt.

    With it a dialogue's ids grow by splicing: `encode_chat(messages[:after])`, then the ids
    the model generated for message `after`, then these. The template must render
    `messages[:after]` (with a generation prompt) as a prefix of the whole; otherwise a
    `ValueError` says it cannot be spliced.
    """
    if not 1 <= after < len(messages):
        raise ValueError(
            f"after={after} is not the index of a message with a prompt before it "
            f"(1..{len(messages) - 1})"
        )
    template = tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE

    def render(chat: Sequence[Message], generation_prompt: bool) -> str:
        text = tokenizer.apply_chat_template(
            [{"role": str(m["role"]), "content": f"\ue000{i}\ue001"} for i, m in enumerate(chat)],
            chat_template=template,
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )
        assert isinstance(text, str)
        return text

    whole = render(messages, True)
    marker = f"\ue000{after}\ue001"
    if not whole.startswith(render(messages[:after], True) + marker):
        raise ValueError(
            "the chat template does not render a conversation as a prefix of its continuation "
            "(it merges or rewrites earlier messages), so generated ids cannot be spliced in"
        )
    ids: list[int] = []
    cursor = whole.index(marker) + len(marker)
    for match in _SENTINEL.finditer(whole, cursor):
        ids += _encode(tokenizer, whole[cursor : match.start()], split_special=False)
        ids += _encode(
            tokenizer, str(messages[int(match.group(1))]["content"]).strip(), split_special=True
        )
        cursor = match.end()
    ids += _encode(tokenizer, whole[cursor:], split_special=False)
    return ids


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, *, split_special: bool) -> list[int]:
    if not text:
        return []
    return list(
        tokenizer(text, add_special_tokens=False, split_special_tokens=split_special).input_ids
    )


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Plain text to ids, special-token strings kept as ordinary text."""
    return _encode(tokenizer, text, split_special=True)
