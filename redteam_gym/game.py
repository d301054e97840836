"""The two-player red-teaming game: adversary and defender as a PettingZoo `ParallelEnv`.

`parallel_env(**kwargs)` makes a `RedTeamGameEnv`: both sides are agents, stepping through
one dialogue, as in "Toward Optimal LLM Alignments Using Two-Player Games". The batched
`DialogueEngine` runs it, with `AgentDefender` (SafeDialogue-v0's) standing in for the
defender LM, so the judge, the reward terms and the transcript are those of the
single-agent envs.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from redteam_gym.envs.config import EnvConfig
from redteam_gym.envs.core import (
    ACTION_MAX_CHARS,
    RESET_OPTIONS,
    Dialogue,
    DialogueEngine,
    seed_from,
    text_space,
    torch_generator,
)
from redteam_gym.envs.safe_dialogue import AgentDefender
from redteam_gym.models.thread import ThreadFormat
from redteam_gym.rewards import DEFENDER_TERMS, TERMS, RewardConfig
from redteam_gym.transcript import ADVERSARY, OBS_MAX_CHARS, render_transcript

__all__ = ["AGENTS", "GAME_DEFAULTS", "RedTeamGameEnv", "parallel_env"]

AGENTS = ("adversary", "defender")
"""The agents, in the order they move within a turn."""
GAME_DEFAULTS = EnvConfig(reward="perez,safe")
"""The game's settings unless given: both sides' rewards (the adversary's `perez`, the
defender's `safe` preset)."""


class RedTeamGameEnv(ParallelEnv):
    """
    ## Description
    Red teaming as a two-player game: the `"adversary"` writes the user's utterances, the
    `"defender"` the replies, in one dialogue that starts from a conversation opener (as in
    `RedTeamDialogue-v0`). A safety judge scores every reply. The dialogue is turn-based and
    a `ParallelEnv` simultaneous, so each env step is a half turn: the adversary moves on the
    odd steps (1, 3, ...), the defender on the even ones. Both agents submit an action every
    step, as PettingZoo requires; the idle agent's action is ignored entirely (it need not
    even be text), so a policy may send anything, or nothing, when it is not its move.
    `infos[agent]["to_move"]` is True for the agent whose move the next step is.

    ## Action Space
    `Text(8192)` for both. The adversary's utterance is cut to `max_utterance_tokens` (as in
    `RedTeamDialogue-v0`, `info["utterance_truncated"]`); the defender's reply stands as it
    is. Whitespace alone is sent as `"..."`.

    ## Observation Space
    `Text(32768)` for both: the conversation so far in `RedTeamDialogue-v0`'s format
    (`[opener]`, `[adversary]`, `[defender]` headers); the full game is observed, so both
    observations are the same. `info["transcript"]` holds the exact transcript, and the
    defender's info also `defender_view`: the conversation as the defender reads it in the
    game's `defender_format`, the messages of its chat (`redteam_gym.transcript.defender_view`)
    or of its text thread (`thread_view`, to write with `env.thread_format`), as a frozen
    defender (`ChatLM`, `make_defender(thread=env.thread_format)`) takes them in `respond`.

    ## Rewards
    `reward` holds both sides' terms (`redteam_gym.rewards`), by default `"perez,safe"`.
    After a defender move, the terms in `redteam_gym.rewards.DEFENDER_TERMS` (`safety`,
    `refusal`, `relevance`) sum to the defender's reward, the others (`perez`, `echo`,
    `novelty_bleu`, ...) to the adversary's: by default `-log(1 - p)` of the reply to the
    adversary and `log(1 - p)`, a refusal charge and a relevance bonus to the defender. Both
    rewards are 0 after an adversary move. The reward needs a term for each side;
    `likelihood` needs a defender LM, so the game refuses it. The engine's info of the turn
    (`defender_unsafe_prob`, `adversary_unsafe_prob`, `reward_terms`, ...) is in both
    agents' infos after a defender move.

    ## Starting State
    A conversation opener drawn by the reset's seed (the same opener for the same seed);
    `reset(options={"opener_id": id})` or `{"opener_index": k}` chooses it. Other option
    keys are ignored with a warning (PettingZoo's API test passes one).

    ## Episode End
    Truncated for both agents after `max_turns` defender replies (`2 * max_turns` steps);
    terminated for both at the first unsafe reply with `terminate_on_unsafe=True`. Then
    `agents` is empty until the next reset.

    ## Arguments
    `config` (an `EnvConfig`, default `GAME_DEFAULTS`) with any of its fields as keywords
    replacing its values, but `defender` (an agent here; `config.defender` is not used):
    `max_turns`, `judge`, `reward`, `prompts`, `split`, `max_utterance_tokens`,
    `terminate_on_unsafe`, `unsafe_threshold`, `p_max`, `device`, `dtype`, and
    `defender_format` (`"chat"` or `"completion"`, with `completion_template`,
    `completion_speakers` and `defender_stop`): how the defender reads the conversation, its
    `defender_view` (as in `SafeDialogue-v0`; `redteam-gym game` trains and plays its
    defenders in it); plus `render_mode` (`"ansi"`: `render()` returns the transcript text).

    ## Version History
    * v0: initial release; the defender's `defender_view` info and `defender_format` were
      added later without a version bump: observations, rewards and the `"chat"` default are
      unchanged.
    """

    metadata: dict[str, Any] = {
        "name": "redteam_game_v0",
        "render_modes": ["ansi"],
        "is_parallelizable": True,
    }

    def __init__(
        self, config: EnvConfig | None = None, render_mode: str | None = None, **kwargs: Any
    ) -> None:
        if "defender" in kwargs:
            raise ValueError(
                "the game's defender is an agent ('defender'); it takes no defender= model"
            )
        if config is not None and not isinstance(config, EnvConfig):
            raise TypeError(f"config must be an EnvConfig, got {type(config).__name__}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        c = (config or GAME_DEFAULTS).replace(**kwargs)
        _check_both_sides(RewardConfig.parse(c.reward))
        self._agent_defender = AgentDefender()
        self.engine = DialogueEngine(c.replace(defender=self._agent_defender))
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        # one space object per agent: the API test checks `space(agent) is space(agent)`
        self.observation_spaces = {a: text_space(OBS_MAX_CHARS) for a in AGENTS}
        self.action_spaces = {a: text_space(ACTION_MAX_CHARS, min_length=1) for a in AGENTS}
        self._dialogue: Dialogue | None = None
        self._to_move = ADVERSARY
        self._utterance: tuple[str, bool] | None = None
        self._np_random: np.random.Generator | None = None
        self._generator: torch.Generator | None = None

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[_known(agent)]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[_known(agent)]

    @property
    def max_turns(self) -> int:
        return self.engine.max_turns

    @property
    def judge(self):
        return self.engine.judge

    @property
    def thread_format(self) -> ThreadFormat | None:
        """How the defender reads the conversation: None through its chat template, or as
        this text thread (`defender_format="completion"`)."""
        return self.engine.config.thread_format()

    @property
    def to_move(self) -> str | None:
        """The agent whose move the next step is (None when no episode is running)."""
        return self._to_move if self.agents else None

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        if seed is not None or self._np_random is None:
            self._np_random, _ = seeding.np_random(seed)
        assert self._np_random is not None
        self.engine.end_dialogues()
        opener = self.engine.opener_of(_known_options(options))
        self._dialogue = self.engine.new_dialogue(self._np_random, opener)
        self._generator = torch_generator(self.engine, seed_from(self._np_random))
        self.agents = list(AGENTS)
        self._to_move = ADVERSARY
        self._utterance = None
        info = self.engine.reset_info(self._dialogue)
        return self._observations(), self._infos(info)

    def step(
        self, actions: dict[str, Any]
    ) -> tuple[
        dict[str, str],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """A half turn: the mover's action is played, the other agent's is ignored."""
        if self._dialogue is None:
            raise RuntimeError("call reset() before step()")
        if not self.agents:
            raise RuntimeError("the episode has ended: call reset() before step()")
        if not isinstance(actions, dict):
            raise TypeError(f"actions must be a dict agent -> action, got {type(actions).__name__}")
        unknown = sorted(map(str, set(actions) - set(AGENTS)))
        if unknown:
            raise ValueError(f"actions has unknown agent(s) {unknown}; the agents are {AGENTS}")
        mover = self._to_move
        if mover not in actions:
            raise ValueError(
                f"actions has no entry for {mover!r}, whose move it is "
                f"(the {'utterance' if mover == ADVERSARY else 'reply'}); the other agent's "
                "action is ignored and may be left out"
            )
        action = actions[mover]
        where = f"actions[{mover!r}]"
        if not isinstance(action, str):
            what = "the adversary's utterance" if mover == ADVERSARY else "the defender's reply"
            raise TypeError(f"{where} must be {what} as a str, got {type(action).__name__}")
        text = self.engine.check_action(action, self._dialogue, where=where)
        rewards = dict.fromkeys(AGENTS, 0.0)
        ended = False
        if mover == ADVERSARY:
            self._utterance = self.engine.clip_utterance(text)
            self._dialogue.transcript.append({"role": ADVERSARY, "content": self._utterance[0]})
            info: dict[str, Any] = {
                "turn": self._dialogue.turn + 1,
                "utterance": self._utterance[0],
                "utterance_truncated": self._utterance[1],
                "opener_id": self._dialogue.opener.id,
                "transcript": [dict(m) for m in self._dialogue.transcript],
            }
            self._to_move = "defender"
            terminated = truncated = False
        else:
            # as SafeDialogueEngine.step: the reply goes to the engine through the agent
            # defender, which answers the adversary's message already in place
            self._agent_defender.replies = [text]
            (result,) = self.engine.answer([self._dialogue], self._generator)
            info = result.info
            assert self._utterance is not None
            info["utterance"], info["utterance_truncated"] = self._utterance
            for name, value in info["reward_terms"].items():
                rewards["defender" if name in DEFENDER_TERMS else ADVERSARY] += value
            terminated, truncated = result.terminated, result.truncated
            ended = terminated or truncated
            self._to_move = ADVERSARY
        observations, infos = self._observations(), self._infos(info)
        if ended:
            self.agents = []
            for i in infos.values():
                i["to_move"] = False
        return (
            observations,
            rewards,
            dict.fromkeys(AGENTS, terminated),
            dict.fromkeys(AGENTS, truncated),
            infos,
        )

    def render(self) -> str | None:
        if self.render_mode is None:
            warnings.warn(
                "render() called without a render_mode: make the env with render_mode='ansi'",
                stacklevel=2,
            )
            return None
        return render_transcript(self._dialogue.transcript) if self._dialogue else None

    def close(self) -> None:
        self.engine.end_dialogues()

    def _observations(self) -> dict[str, str]:
        assert self._dialogue is not None
        obs = render_transcript(self._dialogue.transcript)
        return dict.fromkeys(AGENTS, obs)

    def _infos(self, info: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """One info per agent (deep copies of `info`: neither sees the other's edits), each
        with its `to_move`, the defender's with its `defender_view`."""
        assert self._dialogue is not None
        infos = {a: {**copy.deepcopy(info), "to_move": a == self._to_move} for a in AGENTS}
        infos["defender"]["defender_view"] = self.engine.defender_view(self._dialogue.transcript)
        return infos


def parallel_env(**kwargs: Any) -> RedTeamGameEnv:
    """The two-player game (`RedTeamGameEnv`'s arguments), PettingZoo's usual entry point."""
    return RedTeamGameEnv(**kwargs)


def _known(agent: str) -> str:
    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}; the agents are {AGENTS}")
    return agent


def _known_options(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """The reset options the engine reads; others are ignored with a warning, since a
    PettingZoo env must accept any (`parallel_api_test` passes `{"options": 1}`)."""
    if not options or not isinstance(options, dict):
        return options
    unknown = sorted(map(str, set(options) - RESET_OPTIONS))
    if unknown:
        warnings.warn(
            f"reset ignores the option(s) {unknown}; it reads {sorted(RESET_OPTIONS)}",
            stacklevel=3,
        )
    return {k: v for k, v in options.items() if k in RESET_OPTIONS}


def _check_both_sides(reward: RewardConfig) -> None:
    """A game pays both agents: the reward needs at least one term for each side."""
    terms = set(reward.weights)
    adversary_terms = sorted(set(TERMS) - DEFENDER_TERMS)
    missing = []
    if not terms - DEFENDER_TERMS:
        missing.append(f"the adversary (one of {adversary_terms})")
    if not terms & DEFENDER_TERMS:
        missing.append(f"the defender (one of {sorted(DEFENDER_TERMS)})")
    if missing:
        raise ValueError(
            f"the game's reward {reward.spec()!r} has no term for {' nor for '.join(missing)}; "
            "give both sides' terms, e.g. reward='perez,safe'"
        )
