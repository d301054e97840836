"""The judge contract: batched P(unsafe) of the last message of each conversation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from redteam_gym.models.chat import Message

__all__ = ["ROLES", "Judge", "JudgeOutput", "last_message", "validate_conversations"]

ROLES = ("system", "user", "assistant")
"""Message roles a judge accepts; `system` messages are context only and never assessed."""


@dataclass
class JudgeOutput:
    """What a judge returns for a batch of `B` conversations."""

    p_unsafe: np.ndarray
    """float64, shape `[B]`, values in [0, 1]: P(the last message is unsafe)."""
    categories: list[list[str]] | None = None
    """Per conversation, the violated categories the judge names (None if it names none)."""

    def __post_init__(self) -> None:
        p = np.asarray(self.p_unsafe, dtype=np.float64)
        if p.ndim != 1:
            raise ValueError(f"p_unsafe must be 1-D, got shape {p.shape}")
        if p.size and not (np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0):
            raise ValueError(f"p_unsafe must lie in [0, 1], got {p}")
        self.p_unsafe = p
        if self.categories is not None:
            if len(self.categories) != len(p):
                raise ValueError(
                    f"categories has {len(self.categories)} rows for {len(p)} probabilities"
                )
            self.categories = [list(c) for c in self.categories]

    def __len__(self) -> int:
        return len(self.p_unsafe)


@runtime_checkable
class Judge(Protocol):
    """A safety judge.

    `score` assesses the LAST user/assistant message of each conversation in the context of
    the earlier ones: a last role `"user"` assesses the user (the adversary, in the defender's
    view), `"assistant"` the agent (the defender). System messages are ignored. One call
    scores the whole batch (the env sends all its conversations in one call).
    """

    name: str

    def score(self, conversations: Sequence[Sequence[Message]]) -> JudgeOutput: ...


def validate_conversations(
    conversations: Sequence[Sequence[Message]],
) -> list[list[dict[str, str]]]:
    """Check a batch and return it with system messages dropped.

    Raises ValueError for a message that is not `{"role", "content"}` with a known role and
    string content, and for a conversation with no user/assistant message.
    """
    if isinstance(conversations, (str, bytes, Mapping)) or not isinstance(conversations, Sequence):
        raise ValueError(
            "conversations must be a sequence of conversations (each a sequence of "
            f"{{'role', 'content'}} messages), got {type(conversations).__name__}"
        )
    batch: list[list[dict[str, str]]] = []
    for i, conversation in enumerate(conversations):
        if isinstance(conversation, (str, bytes, Mapping)) or not isinstance(
            conversation, Sequence
        ):
            raise ValueError(
                f"conversations[{i}] must be a sequence of messages, got "
                f"{type(conversation).__name__} (pass a list of conversations, not one)"
            )
        kept: list[dict[str, str]] = []
        for j, message in enumerate(conversation):
            if (
                not isinstance(message, Mapping)
                or "role" not in message
                or "content" not in message
            ):
                raise ValueError(
                    f"conversations[{i}][{j}] must be a {{'role', 'content'}} mapping, "
                    f"got {message!r}"
                )
            role, content = message["role"], message["content"]
            if role not in ROLES:
                raise ValueError(
                    f"conversations[{i}][{j}] has role {role!r}; expected one of {ROLES}"
                )
            if not isinstance(content, str):
                raise ValueError(
                    f"conversations[{i}][{j}] content must be str, got {type(content).__name__}"
                )
            if role != "system":
                kept.append({"role": role, "content": content})
        if not kept:
            raise ValueError(f"conversations[{i}] has no user or assistant message to assess")
        batch.append(kept)
    return batch


def last_message(conversation: Sequence[Message]) -> Message:
    """The message a judge assesses: the last one (system messages already dropped)."""
    return conversation[-1]
