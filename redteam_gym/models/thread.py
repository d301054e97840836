"""The completion format: a conversation as a plain text thread that a causal LM continues.

The field red-teams base LMs this way (ASTPrompter, astra-rl, curiosity-driven red teaming):
no chat template, just a forum thread with speaker tags, which the model continues as the
next speaker. It works for any causal LM, base or instruct.

    OP: My roommate keeps eating my food. What do I do?
    User1: Honestly, you sound like a pushover.
    User2:

Each message is one line, `template` filled with its speaker and its content (line breaks in
the content become spaces, so no message can start a line with a speaker tag and forge a
turn). The prompt ends with the reply's own tag; the reply is what the model writes after it,
up to the first stop string (a blank line, or a line break followed by a speaker tag).

A thread is tokenised piece by piece: the markup between two contents (`"\\nUser2:"`), then a
content with the whitespace the template puts before it (`" I think ..."`), and so on. Earlier
pieces never change when the thread grows, so one turn's prompt is a prefix of the next turn's
and the KV cache carries over from turn to turn, as it does for chat.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from redteam_gym.models.chat import Message

DEFAULT_TEMPLATE = "{speaker}: {content}\n"
DEFAULT_SPEAKERS = ("OP", "User1", "User2")
THREAD_ROLES = ("opener", "user", "assistant")
"""The message roles of a thread, in the order of `ThreadFormat.speakers`: the thread's opening
post, the other user (the adversary) and the model (the defender). A `system` message is
written as a header line before the thread."""

_LINE_BREAK = re.compile(r"\s*[\r\n]+\s*")
_DEFAULT_STOP = re.compile(r"\n[ \t]*\n|\n[ \t]*[^\s:]{1,32}:")
_DEFAULT_STOP_CHARS = 40


@dataclass(frozen=True)
class ThreadFormat:
    """How a conversation is written as a text thread, and where the model's reply ends."""

    template: str = DEFAULT_TEMPLATE
    """One message: `{speaker}` and `{content}` once each, `{speaker}` first, ending in a line
    break."""
    speakers: tuple[str, ...] = DEFAULT_SPEAKERS
    """Tags of the opening post's author, the other user and the model."""
    header: str = ""
    """A line before the thread that says where it takes place (empty: none)."""
    stop: tuple[str, ...] | None = None
    """The reply ends before the first of these strings; None: before a blank line, or a line
    break followed by a speaker tag (any `Name:` at the start of a line, `User3:` too)."""

    def __post_init__(self) -> None:
        t = self.template
        if t.count("{speaker}") != 1 or t.count("{content}") != 1:
            raise ValueError(
                f"completion template must hold {{speaker}} and {{content}} once each, got {t!r}"
            )
        if t.index("{speaker}") > t.index("{content}") or not t.endswith("\n"):
            raise ValueError(
                "completion template must put {speaker} before {content} and end with a line "
                f"break, got {t!r}"
            )
        if "\n" in t[: t.index("{content}")]:
            raise ValueError(f"completion template must write a message on one line, got {t!r}")
        speakers = tuple(self.speakers)
        if len(speakers) != 3 or len(set(speakers)) != 3:
            raise ValueError(
                f"completion speakers must be 3 distinct tags (opener, user, model), got {speakers}"
            )
        if any(not s.strip() or "\n" in s or s != s.strip() for s in speakers):
            raise ValueError(
                f"completion speakers must be non-empty one-line tags without outer spaces, "
                f"got {speakers}"
            )
        object.__setattr__(self, "speakers", speakers)
        if "\n" in self.header:
            raise ValueError(f"completion header must be one line, got {self.header!r}")
        if self.stop is not None:
            stop = tuple(self.stop)
            if not stop or any(not s for s in stop):
                raise ValueError(f"completion stop strings must be non-empty, got {stop}")
            object.__setattr__(self, "stop", stop)

    @classmethod
    def parse_speakers(cls, spec: str) -> tuple[str, ...]:
        """`"OP,User1,User2"` -> the three tags."""
        return tuple(s.strip() for s in spec.split(","))

    @property
    def stop_pattern(self) -> re.Pattern[str]:
        """Where a reply ends: the first match of this."""
        if self.stop is not None:
            return re.compile("|".join(re.escape(s) for s in self.stop))
        return _DEFAULT_STOP

    @property
    def stop_chars(self) -> int:
        """The most characters a stop match spans (bounds the text a stop check decodes)."""
        return max(len(s) for s in self.stop) if self.stop is not None else _DEFAULT_STOP_CHARS

    @property
    def content_gap(self) -> str:
        """The whitespace the template puts before a message's content (`" "`)."""
        before = self.template[: self.template.index("{content}")]
        return before[len(before.rstrip()) :]

    def cut(self, text: str) -> str:
        """A generated continuation, cut before its first stop and stripped."""
        found = self.stop_pattern.search(text)
        return (text if found is None else text[: found.start()]).strip()

    def pieces(self, messages: Sequence[Message], *, prompt: bool = True) -> list[tuple[str, bool]]:
        """The thread as `(text, is_content)` pieces, in order; the last piece is the reply's
        tag when `prompt`. Content pieces carry the whitespace the template puts before them."""
        t = self.template
        head, gap = t[: t.index("{content}")].rstrip(), self.content_gap
        after = t[t.index("{content}") + len("{content}") :]
        pieces: list[tuple[str, bool]] = []
        markup = self.header + "\n\n" if self.header else ""
        for m in messages:
            role, content = str(m["role"]), one_line(str(m["content"]))[0]
            if role == "system":
                markup += content + "\n\n"
                continue
            if role not in THREAD_ROLES:
                raise ValueError(
                    f"a thread message's role must be one of {THREAD_ROLES} or 'system', "
                    f"got {role!r}"
                )
            speaker = self.speakers[THREAD_ROLES.index(role)]
            pieces.append((markup + head.format(speaker=speaker), False))
            pieces.append((gap + content, True))
            markup = after
        if prompt:
            pieces.append((markup + head.format(speaker=self.speakers[2]), False))
        elif markup:
            pieces.append((markup, False))
        return pieces

    def render(self, messages: Sequence[Message], *, prompt: bool = True) -> str:
        """The thread as text (what `encode` tokenises, piece by piece)."""
        return "".join(text for text, _ in self.pieces(messages, prompt=prompt))

    def encode(
        self,
        tokenizer: PreTrainedTokenizerBase,
        messages: Sequence[Message],
        *,
        prompt: bool = True,
        tail_chars: int | None = None,
    ) -> tuple[list[int], tuple[int, int]]:
        """Token ids of the thread, and the `[start, end)` ids of the last message's content
        (of its last `tail_chars` characters, tokenised as a piece of their own, when given).

        Content is tokenised with special tokens split, so `<|endoftext|>` in a message stays
        plain text. The tokenizer's own prefix (a BOS token, for Llama-style tokenizers)
        comes first."""
        ids = [
            i for i in tokenizer("", add_special_tokens=True).input_ids if i is not None
        ]  # BOS, where the tokenizer adds one
        span = (0, 0)
        pieces = self.pieces(messages, prompt=prompt)
        last = max((k for k, (_, content) in enumerate(pieces) if content), default=-1)
        for k, (text, _) in enumerate(pieces):
            if k == last and tail_chars is not None:
                cut = tail_cut(text, tail_chars)
                ids += _encode(tokenizer, text[:cut])
                start = len(ids)
                ids += _encode(tokenizer, text[cut:])
                span = (start, len(ids))
                continue
            start = len(ids)
            ids += _encode(tokenizer, text)
            if k == last:
                span = (start, len(ids))
        return ids, span

    def continuation(
        self, tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], *, after: int
    ) -> list[int]:
        """Ids of what follows message `after`'s content in the thread's prompt (`encode` with
        `prompt=True`): the later messages and the reply's tag.

        The thread's counterpart of `encode_chat_continuation`: a dialogue's ids grow by
        splicing `encode(messages[:after])`, the ids the model wrote for message `after` (the
        model's own, so `after` must be an `assistant` message) and these. Pieces are tokenised
        one by one, so the splice of message `after`'s content piece is `encode(messages)`."""
        if not 0 <= after < len(messages) or str(messages[after]["role"]) != "assistant":
            raise ValueError(
                f"after={after} is not the index of an assistant message (the model's) among "
                f"the thread's {len(messages)} messages"
            )
        # a system message is markup before the thread: two pieces per other message
        content = 2 * sum(str(m["role"]) != "system" for m in messages[:after]) + 1
        pieces = self.pieces(messages, prompt=True)[content + 1 :]
        return [i for text, _ in pieces for i in _encode(tokenizer, text)]

    def stop_rule(self, tokenizer: PreTrainedTokenizerBase) -> Callable[[Sequence[int]], bool]:
        """`sample`'s `stop` check of a reply: whether its generated ids so far hold a stop."""
        window, pattern = 2 + self.stop_chars, self.stop_pattern

        def stop(ids: Sequence[int]) -> bool:
            # a stop spans at most `window` ids, each at least one character
            text = tokenizer.decode(list(ids[-window:]), skip_special_tokens=True)
            return pattern.search(str(text)) is not None

        return stop


def one_line(text: str) -> tuple[str, list[int]]:
    """`text` stripped, each run of whitespace holding a line break made one space (a message
    as a thread writes it), and per character of the stripped `text` its index in the result
    (a dropped character maps to the index of the space that replaced its run)."""
    stripped = text.strip()
    out: list[str] = []
    where: list[int] = []
    last = 0
    for found in _LINE_BREAK.finditer(stripped):
        for c in stripped[last : found.start()]:
            where.append(len(out))
            out.append(c)
        where += [len(out)] * (found.end() - found.start())
        out.append(" ")
        last = found.end()
    for c in stripped[last:]:
        where.append(len(out))
        out.append(c)
    return "".join(out), where


def tail_cut(piece: str, tail_chars: int) -> int:
    """Where the last `tail_chars` characters of a content piece start, moved back over the
    whitespace before them (a space is tokenised with the word after it)."""
    cut = max(len(piece) - tail_chars, 0)
    while cut > 0 and piece[cut - 1].isspace():
        cut -= 1
    return cut


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids)
