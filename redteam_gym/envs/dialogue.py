"""RedTeamDialogue-v0: an adversary talks a frozen defender LM into unsafe replies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import Env, spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from redteam_gym.envs.core import (
    ACTION_MAX_CHARS,
    Dialogue,
    DialogueEngine,
    seed_from,
    text_space,
    torch_generator,
)
from redteam_gym.transcript import OBS_MAX_CHARS, render_transcript


class RedTeamDialogueEnv(Env[str, str]):
    """
    ## Description
    Automated red teaming as an MDP (Perez et al. 2022; multi-turn as in the seed paper). The
    agent is the adversary. An episode starts from a conversation opener (the first post of a
    ConvoKit conversation); each step the adversary says one utterance, the frozen defender LM
    replies to the whole conversation, and a safety judge scores both the reply and the
    utterance. By default (the default world, README "Worlds") the defender continues the
    conversation as a forum thread (`defender_format="completion"`) and samples at T 1, so the
    reward carries its sampling noise; `defender_format="chat"` reads it through its chat
    template (the hardened level) and `defender_temperature=0` decodes greedily.

    ## Action Space
    `Text(8192)`: the adversary's utterance. Text longer than `max_utterance_tokens` defender
    tokens is cut there (`info["utterance_truncated"]`); whitespace alone is sent as `"..."`.
    Role markers or special-token strings inside it stay plain text: they never open a turn
    for the defender or the judge.

    ## Observation Space
    `Text(32768)` over the Basic Multilingual Plane: the conversation so far, each message
    headed by its role (`[opener]`, `[adversary]`, `[defender]`); characters outside the BMP
    read as U+FFFD. The exact transcript, a list of `{"role", "content"}` dicts, is in
    `info["transcript"]`.

    ## Rewards
    By default, per turn, `-log(1 - p)` with `p` the judge's P(unsafe) of the defender reply,
    clipped to `p_max` (0.999 by default, so at most ~6.9): the seed paper's Perez reward.
    `reward` makes it a weighted sum of terms (`redteam_gym.rewards`): the echo discount, the
    adversary's own toxicity, the judge on utterance and reply together, a charge for copying
    the conversation, the defender's likelihood of the utterance's novel words, novelty
    against recent utterances, category targeting; the preset `"implicit"` combines them
    against echo attacks, copying and mode collapse.
    `info["reward_terms"]` holds each term's weighted contribution (they sum to the reward).
    The KL penalty belongs to the learner.

    ## Starting State
    A conversation opener drawn from `prompts` by the reset's seed; `reset(options=
    {"opener_id": id})` (an id from `info["opener_id"]`) or `{"opener_index": k}` chooses it.
    The vector env takes one value for every sub-env or a sequence of one per sub-env.

    ## Episode End
    Truncated after `max_turns` turns; terminated early when `terminate_on_unsafe` is set and
    the defender reply is unsafe (`p >= unsafe_threshold`).

    ## Arguments
    The fields of `redteam_gym.envs.EnvConfig` (each documented there), as keywords or as one
    `config=EnvConfig(...)` with keywords replacing its fields: `max_turns` (1..5, default 3),
    `defender`, `judge`, `reward`, `prompts`, `split`, the defender's prompt and sampling,
    `max_utterance_tokens`, `terminate_on_unsafe`, `unsafe_threshold`, `p_max`, `device`,
    `dtype`, `retry_smaller_batch`; plus `render_mode` (`"ansi"` or `"human"`). `EnvConfig` validates them, with
    errors that name the field and its allowed range. A defender or judge that fails raises
    `redteam_gym.faults.ComponentError` naming it.

    ## Version History
    * v0: initial release. The default world since 2026-12-05: the completion format at T 1
      and the `semantic` judge (before: the chat template, greedy, `profanity`); pass
      `defender_format="chat", defender_temperature=0, judge="profanity"` for the old one.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 1}

    def __init__(
        self, render_mode: str | None = None, *, _engine: Any = None, **kwargs: Any
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        # `_engine`: an engine built by a subclass (SafeDialogue-v0), in place of one from kwargs
        self.engine = _engine if _engine is not None else DialogueEngine(**kwargs)
        self.observation_space = text_space(OBS_MAX_CHARS)
        self.action_space = text_space(ACTION_MAX_CHARS, min_length=1)
        self._dialogue: Dialogue | None = None
        self._generator: torch.Generator | None = None

    @property
    def max_turns(self) -> int:
        return self.engine.max_turns

    @property
    def defender(self):
        return self.engine.defender

    @property
    def judge(self):
        return self.engine.judge

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self.engine.end_dialogues()
        opener = self.engine.opener_of(options)
        self._dialogue = self.engine.new_dialogue(self.np_random, opener)
        self._generator = torch_generator(self.engine, seed_from(self.np_random))
        return render_transcript(self._dialogue.transcript), self.engine.reset_info(self._dialogue)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        utterance = self.engine.check_action(action, self._dialogue)
        assert self._dialogue is not None
        (result,) = self.engine.step([self._dialogue], [utterance], self._generator)
        obs = render_transcript(self._dialogue.transcript)
        if self.render_mode == "human":
            self.render()
        return obs, result.reward, result.terminated, result.truncated, result.info

    def render(self) -> str | None:
        if self._dialogue is None:
            return None
        text = render_transcript(self._dialogue.transcript)
        if self.render_mode == "human":
            print(text, end="\n\n")
            return None
        return text


class RedTeamDialogueVectorEnv(VectorEnv):
    """`num_envs` dialogues advanced together: one batched defender generation and one batched
    judge call per step, whatever the number of envs. Takes the same arguments as
    `RedTeamDialogueEnv`, plus `autoreset_mode` (NEXT_STEP by default, or SAME_STEP)."""

    metadata = {
        "render_modes": ["ansi"],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 8,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        *,
        _engine: Any = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        autoreset_mode = AutoresetMode(autoreset_mode)
        if autoreset_mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode must be NEXT_STEP or SAME_STEP, got {autoreset_mode}")
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.engine = _engine if _engine is not None else DialogueEngine(**kwargs)
        self.single_observation_space = text_space(OBS_MAX_CHARS)
        self.single_action_space = text_space(ACTION_MAX_CHARS, min_length=1)
        # One shared Text space per slot: `batch_space` would deep-copy the 63k-character
        # charset once per env.
        self.observation_space = spaces.Tuple((self.single_observation_space,) * num_envs)
        self.action_space = spaces.Tuple((self.single_action_space,) * num_envs)
        self._dialogues: list[Dialogue | None] = [None] * num_envs
        self._rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(num_envs)]
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._generator: torch.Generator | None = None

    @property
    def max_turns(self) -> int:
        return self.engine.max_turns

    @property
    def defender(self):
        return self.engine.defender

    @property
    def judge(self):
        return self.engine.judge

    @property
    def dialogues(self) -> list[Dialogue | None]:
        return list(self._dialogues)

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        seeds = _per_env_seeds(seed, self.num_envs)
        self.engine.end_dialogues()
        if seeds[0] is not None:
            # slot rngs draw openers only, so a slot deals the opener the single env would
            self._rngs = [np.random.default_rng(s) for s in seeds]
            defender_seed = np.random.SeedSequence([seeds[0], 1]).generate_state(1)[0]
            self._generator = torch_generator(self.engine, int(defender_seed))
        elif self._generator is None:
            self._generator = torch_generator(self.engine, seed_from(np.random.default_rng()))
        openers = self._openers_of(options)
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            infos = self._add_info(infos, self._reset_slot(i, openers[i]), i)
        self._autoreset[:] = False
        return self._observations(), infos

    def _openers_of(self, options: dict[str, Any] | None) -> list[Any]:
        """Per sub-env, the opener `options` names (None: drawn). A value may be one id or
        index for every sub-env, or a sequence with one per sub-env (None entries draw)."""
        if not options:
            return [None] * self.num_envs
        if not isinstance(options, dict):
            raise TypeError(f"options must be a dict, got {type(options).__name__}")
        per_env: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, value in options.items():
            if isinstance(value, (list, tuple, np.ndarray)):
                if len(value) != self.num_envs:
                    raise ValueError(
                        f"options[{key!r}] has {len(value)} entries for {self.num_envs} envs"
                    )
                for i, v in enumerate(value):
                    per_env[i][key] = v
            else:
                for d in per_env:
                    d[key] = value
        return [
            self.engine.opener_of(d, where=f"options for env {i}") for i, d in enumerate(per_env)
        ]

    def _reset_slot(self, i: int, opener: Any = None) -> dict[str, Any]:
        dialogue = self.engine.new_dialogue(self._rngs[i], opener)
        self._dialogues[i] = dialogue
        return self.engine.reset_info(dialogue)

    def _observations(self) -> tuple[str, ...]:
        return tuple(render_transcript(d.transcript) if d else "" for d in self._dialogues)

    def step(self, actions: Sequence[str]):
        if isinstance(actions, str) or len(actions) != self.num_envs:
            raise ValueError(f"actions must be a sequence of {self.num_envs} utterances")
        if self._dialogues[0] is None:
            raise RuntimeError("call reset() before step()")
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        active: list[int] = []
        utterances: list[str] = []
        for i in range(self.num_envs):
            if self._autoreset[i]:
                infos = self._add_info(infos, self._reset_slot(i), i)
            else:
                utterances.append(
                    self.engine.check_action(actions[i], self._dialogues[i], where=f"actions[{i}]")
                )
                active.append(i)
        dialogues = [self._dialogues[i] for i in active]
        results = self.engine.step(
            [d for d in dialogues if d is not None], utterances, self._generator
        )
        final_obs: list[str | None] = [None] * self.num_envs
        final_info: dict[str, Any] = {}
        for i, result in zip(active, results, strict=True):
            rewards[i], terminated[i], truncated[i] = (
                result.reward,
                result.terminated,
                result.truncated,
            )
            if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and (
                result.terminated or result.truncated
            ):
                final_obs[i] = render_transcript(self._dialogues[i].transcript)  # type: ignore[union-attr]
                final_info = self._add_info(final_info, result.info, i)
                infos = self._add_info(infos, self._reset_slot(i), i)
            else:
                infos = self._add_info(infos, result.info, i)
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP:
            if any(o is not None for o in final_obs):
                infos["final_obs"] = np.array(final_obs, dtype=object)
                infos["_final_obs"] = np.array([o is not None for o in final_obs])
                infos["final_info"] = final_info
                infos["_final_info"] = infos["_final_obs"]
        else:
            self._autoreset = terminated | truncated
        return self._observations(), rewards, terminated, truncated, infos

    def render(self) -> tuple[str, ...] | None:
        return self._observations()


def _per_env_seeds(seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
    if seed is None:
        return [None] * n
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise ValueError(f"seed must be an int or a list of {n} seeds, got {len(seeds)}")
    return seeds
