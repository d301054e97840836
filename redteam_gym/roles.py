"""The two sides a learner can play: what each one's env is, and the chat its policy reads.

`RedTeamDialogue-v0` makes the agent the adversary, `SafeDialogue-v0` the defender. A learner
written for one side trains the other through its `Role`: which env it makes, how it renders
a transcript as its prompt, and where the env reports the text it received.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redteam_gym.adversary import ADVERSARY_SYSTEM_PROMPT, adversary_view
from redteam_gym.transcript import defender_view

__all__ = ["ROLES", "Role", "defender_chat"]


def defender_chat(
    transcript: Sequence[dict[str, str]], system_prompt: str | None = None
) -> list[dict[str, str]]:
    """The transcript as the defender's chat (`defender_view`), after its system prompt when
    one is given (None: the chat template's default). Each turn's chat extends the last one
    with the reply and the next message, so a learner can splice its sampled ids in place."""
    chat = defender_view(transcript)
    return [{"role": "system", "content": system_prompt}, *chat] if system_prompt else chat


@dataclass(frozen=True)
class Role:
    """One side of the dialogue, as a learner plays it."""

    name: str
    env_id: str
    """The env in which the agent plays this side."""
    view: Callable[[Sequence[dict[str, str]], str | None], list[dict[str, str]]]
    """Transcript and system prompt -> the policy's chat (its messages are the assistant's)."""
    system_prompt: str | None
    """The default system prompt of the policy's chat."""
    text_info: str
    """The `info` key holding the agent's message as the env received it."""


ROLES: dict[str, Role] = {
    "adversary": Role(
        "adversary", "RedTeamDialogue-v0", adversary_view, ADVERSARY_SYSTEM_PROMPT, "utterance"
    ),
    "defender": Role("defender", "SafeDialogue-v0", defender_chat, None, "defender_response"),
}
"""The sides by name."""
