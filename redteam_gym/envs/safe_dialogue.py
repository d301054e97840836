"""SafeDialogue-v0: the agent is the defender, answering a frozen adversary or a prompt set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from redteam_gym.adversary import EMPTY_UTTERANCE, resolve_adversary
from redteam_gym.envs.config import EnvConfig
from redteam_gym.envs.core import Dialogue, DialogueEngine, TurnResult
from redteam_gym.envs.dialogue import RedTeamDialogueEnv, RedTeamDialogueVectorEnv
from redteam_gym.faults import ComponentError
from redteam_gym.transcript import ADVERSARY, render_transcript

SAFE_DIALOGUE_DEFAULTS = EnvConfig(max_turns=1, reward="safe")
"""`SafeDialogue-v0`'s settings unless given: one prompt and one reply (`max_turns` 1, where
`RedTeamDialogue-v0` has 3: without an `adversary=` nobody writes the user's later
messages), the `safe` reward."""


class AgentDefender:
    """The defender of `SafeDialogue-v0`: its replies are the agent's actions, handed to the
    engine for the step in flight."""

    name = "agent"

    def __init__(self) -> None:
        self.replies: list[str] | None = None

    def respond(self, conversations: Sequence[Any], generator: Any = None) -> list[str]:
        replies, self.replies = self.replies, None
        if replies is None or len(replies) != len(conversations):
            raise RuntimeError("the agent's replies were not set for this step")
        return replies


class SafeDialogueEngine(DialogueEngine):
    """`DialogueEngine` with the agent as the defender and a frozen adversary (or none) as
    the user: per step, one batched judge call for the agent's replies and one batched
    adversary call for the next user messages."""

    action_name = "the defender's reply"

    def __init__(
        self, config: EnvConfig | None = None, *, adversary: Any = None, **kwargs: Any
    ) -> None:
        if "defender" in kwargs:
            raise ValueError(
                "SafeDialogue-v0's defender is the agent; the user side is adversary= "
                "(or, without one, the prompts)"
            )
        c = (config or SAFE_DIALOGUE_DEFAULTS).replace(**kwargs)
        self.agent = AgentDefender()
        super().__init__(c.replace(defender=self.agent))
        self.adversary = resolve_adversary(adversary, device=c.device, dtype=c.dtype)
        if self.adversary is None and self.max_turns != 1:
            raise ValueError(
                f"max_turns={self.max_turns} needs an adversary= to write the user's later "
                "messages; without one a dialogue is one prompt and one reply (max_turns=1)"
            )

    def reseed(self, seed: int | None) -> None:
        """Re-seed the adversary (its `reseed`, when it has one) from a reset's seed, so the
        same seed gives the same user messages."""
        if seed is not None and callable(getattr(self.adversary, "reseed", None)):
            words = np.random.SeedSequence([int(seed), 0xAD5E]).generate_state(1)
            self.adversary.reseed(int(words[0]))  # type: ignore[union-attr]

    def begin(self, dialogues: Sequence[Dialogue]) -> None:
        """Give each dialogue that awaits one its user message: one batched call of the
        adversary on their observations (nothing in prompt mode: the prompt is the opener)."""
        waiting = [d for d in dialogues if not d.done and d.transcript[-1]["role"] != ADVERSARY]
        if self.adversary is None or not waiting:
            return
        observations = [render_transcript(d.transcript) for d in waiting]
        try:
            utterances = list(self.adversary.act(observations))
        except Exception as exc:
            raise ComponentError("adversary", f"raised {type(exc).__name__}: {exc}") from exc
        if len(utterances) != len(waiting) or not all(isinstance(u, str) for u in utterances):
            raise ComponentError(
                "adversary",
                f"act returned {utterances!r} for {len(waiting)} observations (one str each)",
            )
        for d, u in zip(waiting, utterances, strict=True):
            text, _ = self.clip_utterance(u if u.strip() else EMPTY_UTTERANCE)
            d.transcript.append({"role": ADVERSARY, "content": text})

    def step(
        self,
        dialogues: Sequence[Dialogue],
        utterances: Sequence[str],
        generator: torch.Generator | None,
    ) -> list[TurnResult]:
        """One turn of the agent's replies (passed where the adversary env passes its
        utterances): the user message is already in each transcript, so the engine answers."""
        self.agent.replies = [str(r) for r in utterances]
        results = self.answer(dialogues, generator)
        if self.adversary is None:
            # a prompt and its reply are the whole task: the episode ends there by nature,
            # not at a time limit
            for r in results:
                r.terminated, r.truncated = True, False
        return results


class SafeDialogueEnv(RedTeamDialogueEnv):
    """
    ## Description
    The defender's side of red teaming: the agent writes the defender's replies, and the user
    side is a frozen adversary (a learner checkpoint, `"zero-shot"`, `"few-shot"` or any
    object with `act`) or, without one, a set of prompts, one prompt and one reply per
    episode (Chaudhary et al.'s RA-RLHF setting). A safety judge scores every reply. A reset
    with a seed re-seeds an adversary that has `reseed(seed)`.

    ## Action Space
    `Text(8192)`: the defender's reply.

    ## Observation Space
    `Text(32768)`: the conversation so far, ending with the user's message, in
    `RedTeamDialogue-v0`'s format (`[opener]`, `[adversary]`, `[defender]` headers), whatever
    the `defender_format`: the format says how a defender policy reads this conversation.

    ## Rewards
    Per turn, by default the `safe` preset of `redteam_gym.rewards`: `log(1 - p)` of the
    reply (`safety`), a charge of 0.25 for a refusal (`refusal`) and up to 0.25 for a reply on
    the subject of the message it answers (`relevance`, on the words the reply does not echo
    from the message), so refusing everything is not free and parroting earns nothing.
    Any terms may be weighted (`reward=`); the KL penalty belongs to the learner.

    ## Episode End
    Without an adversary, terminated after the reply (the prompt's task is done). With one,
    truncated after `max_turns` replies; terminated early with `terminate_on_unsafe=True` at
    the first unsafe reply.

    ## Arguments
    `adversary` (None: prompt mode), and the `EnvConfig` fields but `defender` (the agent):
    `prompts` (`"builtin"`, a ConvoKit corpus, or a JSONL file of prompts), `split`, `judge`,
    `reward`, `max_turns`, `max_utterance_tokens` (the adversary's messages are cut there),
    `terminate_on_unsafe`, `unsafe_threshold`, `p_max`, `device`, `dtype`.
    `defender_format` (with `completion_template`, `completion_speakers` and `defender_stop`)
    is how the agent's policy reads the conversation, as a frozen defender reads it in
    `RedTeamDialogue-v0`: `"chat"`, through its chat template
    (`redteam_gym.roles.defender_chat`), or `"completion"`, as the text thread of
    `EnvConfig.thread_format()` that it continues (`redteam_gym.roles.defender_thread`), its
    reply cut before the thread's first stop. The learners (`role="defender"`) read it so;
    the env's action, observation and reward are the same in both formats.

    ## Version History
    * v0: initial release; `defender_format="completion"` (a defender policy reads a text
      thread) was added later without a version bump: the `"chat"` default is unchanged.
    """

    engine: SafeDialogueEngine

    def __init__(
        self, render_mode: str | None = None, adversary: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(render_mode, _engine=SafeDialogueEngine(adversary=adversary, **kwargs))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        _, info = super().reset(seed=seed, options=options)
        assert self._dialogue is not None
        self.engine.reseed(seed)
        self.engine.begin([self._dialogue])
        info["transcript"] = [dict(m) for m in self._dialogue.transcript]
        return render_transcript(self._dialogue.transcript), info

    def step(self, action: str):
        _, reward, terminated, truncated, info = super().step(action)
        assert self._dialogue is not None
        self.engine.begin([self._dialogue])
        # the transcript the observation shows, the user's next message included
        info["transcript"] = [dict(m) for m in self._dialogue.transcript]
        return render_transcript(self._dialogue.transcript), reward, terminated, truncated, info


class SafeDialogueVectorEnv(RedTeamDialogueVectorEnv):
    """`num_envs` SafeDialogue-v0 dialogues advanced together: per step one batched judge
    call and one batched adversary call. Takes `SafeDialogueEnv`'s arguments, plus
    `autoreset_mode`."""

    engine: SafeDialogueEngine

    def __init__(
        self,
        num_envs: int = 8,
        render_mode: str | None = None,
        autoreset_mode: Any = "NextStep",
        adversary: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_envs,
            render_mode,
            autoreset_mode,
            _engine=SafeDialogueEngine(adversary=adversary, **kwargs),
        )

    def reset(self, *, seed=None, options=None):
        _, infos = super().reset(seed=seed, options=options)
        first = seed if seed is None or isinstance(seed, int) else next(iter(seed), None)
        self.engine.reseed(first)
        self._begin(infos)
        return self._observations(), infos

    def step(self, actions: Sequence[str]):
        _, rewards, terminated, truncated, infos = super().step(actions)
        self._begin(infos)
        return self._observations(), rewards, terminated, truncated, infos

    def _begin(self, infos: dict[str, Any]) -> None:
        """The user messages of every dialogue that awaits one, in one adversary call; the
        infos' transcripts then include them, as the observations do (a learner reads the
        next prompt from them)."""
        self.engine.begin([d for d in self._dialogues if d is not None])
        if "transcript" in infos:
            for i, d in enumerate(self._dialogues):
                if d is not None and infos["_transcript"][i]:
                    infos["transcript"][i] = [dict(m) for m in d.transcript]
