"""The two sides a learner can play: what each one's env is, and the conversation its policy
reads.

`RedTeamDialogue-v0` makes the agent the adversary, `SafeDialogue-v0` the defender. A learner
written for one side trains the other through its `Role`: which env it makes, how it renders
a transcript as its prompt, and where the env reports the text it received. The defender reads
the conversation in the env's `defender_format`, as a frozen defender does: through its chat
template, or as a text thread (`Role.in_env`); the adversary always reads its chat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redteam_gym.adversary import ADVERSARY_SYSTEM_PROMPT, adversary_view
from redteam_gym.models.thread import ThreadFormat
from redteam_gym.transcript import defender_view, thread_view

if TYPE_CHECKING:
    from redteam_gym.envs.config import EnvConfig

__all__ = ["ROLES", "Role", "defender_chat", "defender_thread"]

View = Callable[[Sequence[dict[str, str]], str | None], list[dict[str, str]]]
"""Transcript and system prompt -> the messages a policy reads."""


def defender_chat(
    transcript: Sequence[dict[str, str]], system_prompt: str | None = None
) -> list[dict[str, str]]:
    """The transcript as the defender's chat (`defender_view`), after its system prompt when
    one is given (None: the chat template's default). Each turn's chat extends the last one
    with the reply and the next message, so a learner can splice its sampled ids in place."""
    chat = defender_view(transcript)
    return [{"role": "system", "content": system_prompt}, *chat] if system_prompt else chat


def defender_thread(
    transcript: Sequence[dict[str, str]], system_prompt: str | None = None
) -> list[dict[str, str]]:
    """The transcript as the defender's text thread (`thread_view`: the messages a
    `ThreadFormat` writes, the opener apart), after its system prompt when one is given (a
    header line before the thread). Each turn's thread extends the last one, as a chat does."""
    thread = thread_view(transcript)
    return [{"role": "system", "content": system_prompt}, *thread] if system_prompt else thread


@dataclass(frozen=True)
class Role:
    """One side of the dialogue, as a learner plays it."""

    name: str
    env_id: str
    """The env in which the agent plays this side."""
    view: View
    """Transcript and system prompt -> the policy's messages (its own are the assistant's)."""
    system_prompt: str | None
    """The default system prompt of the policy's chat."""
    text_info: str
    """The `info` key holding the agent's message as the env received it."""
    thread_view: View | None = None
    """`view` when the env's `defender_format` is 'completion' (the messages of a text
    thread); None: this side reads its chat in either format."""
    thread: ThreadFormat | None = None
    """How the policy reads `view`'s messages: None through its chat template, or as this text
    thread (set by `in_env`)."""

    def in_env(self, config: EnvConfig) -> Role:
        """This side as it plays in an env of settings `config`: the defender reads the
        conversation in the env's `defender_format` (the format a frozen defender reads), so
        in 'completion' its view is `thread_view` and its `thread` the env's `ThreadFormat`."""
        thread = config.thread_format()
        if thread is None or self.thread_view is None:
            return self
        return dataclasses.replace(self, view=self.thread_view, thread=thread)


ROLES: dict[str, Role] = {
    "adversary": Role(
        "adversary", "RedTeamDialogue-v0", adversary_view, ADVERSARY_SYSTEM_PROMPT, "utterance"
    ),
    "defender": Role(
        "defender",
        "SafeDialogue-v0",
        defender_chat,
        None,
        "defender_response",
        thread_view=defender_thread,
    ),
}
"""The sides by name, as they play in the chat format (`Role.in_env` gives the env's)."""
