"""One token per step: RedTeamDialogue as a classic discrete-action MDP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from transformers import PreTrainedTokenizerBase

from redteam_gym.adversary import EMPTY_UTTERANCE, adversary_view
from redteam_gym.models import encode_chat, load_tokenizer


class TokenLevel(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Turn `RedTeamDialogue-v0` into a one-token-per-step MDP for classic RL libraries.

    Actions are token ids (`Discrete(vocab)`). The observation is the adversary's view of the
    conversation (`adversary_view`, through the tokenizer's chat template, ending with the
    header of the adversary's next message) followed by the utterance tokens chosen so far, as
    the last `max_obs_tokens` ids, left padded, with an attention mask:
    `Dict(input_ids=Box(0, vocab - 1, (max_obs_tokens,), int64), attention_mask=Box(0, 1, ...))`.

    The utterance goes to the dialogue env when a stop token is chosen (it is not part of the
    utterance) or when `max_utterance_tokens` tokens are reached; that step returns the env's
    reward, terminated, truncated and info, every other step reward 0 and only
    `utterance_tokens`. Special tokens chosen mid-utterance are dropped when it is decoded, so
    they never reach the defender as markup; an utterance that decodes to nothing is sent as
    `EMPTY_UTTERANCE`.

    Args:
        env: a `RedTeamDialogue-v0` env.
        tokenizer: the adversary's tokenizer (object, or name/path); the defender's when omitted.
        max_utterance_tokens: tokens per utterance (24 as in the seed paper).
        max_obs_tokens: length of the observation window.
        stop_token_ids: ids that end the utterance; by default the tokenizer's EOS and, with
            the defender's tokenizer, every id that ends a defender reply.
    """

    def __init__(
        self,
        env: gym.Env,
        tokenizer: PreTrainedTokenizerBase | str | None = None,
        *,
        max_utterance_tokens: int = 24,
        max_obs_tokens: int = 512,
        stop_token_ids: Sequence[int] | None = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self,
            tokenizer=tokenizer,
            max_utterance_tokens=max_utterance_tokens,
            max_obs_tokens=max_obs_tokens,
            stop_token_ids=stop_token_ids,
        )
        gym.Wrapper.__init__(self, env)
        defender = getattr(env.unwrapped, "defender", None)
        if isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer)
        own_tokenizer = tokenizer is None
        tokenizer = tokenizer or getattr(defender, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("tokenizer is required when the defender has none")
        if max_utterance_tokens < 1:
            raise ValueError(f"max_utterance_tokens must be >= 1, got {max_utterance_tokens}")
        if max_obs_tokens < 1:
            raise ValueError(f"max_obs_tokens must be >= 1, got {max_obs_tokens}")
        self.tokenizer = tokenizer
        self.max_utterance_tokens = max_utterance_tokens
        self.max_obs_tokens = max_obs_tokens
        self.vocab_size = len(tokenizer)
        if stop_token_ids is None:
            stop = {tokenizer.eos_token_id}
            if own_tokenizer:
                stop.update(getattr(defender, "eos_token_ids", []))
            stop_token_ids = [i for i in stop if i is not None]
        if not stop_token_ids:
            raise ValueError("stop_token_ids is empty and the tokenizer has no EOS token")
        if any(not 0 <= int(i) < self.vocab_size for i in stop_token_ids):
            raise ValueError(f"stop_token_ids must be in [0, {self.vocab_size}): {stop_token_ids}")
        self.stop_token_ids = frozenset(int(i) for i in stop_token_ids)
        self.stop_token_id = int(
            tokenizer.eos_token_id
            if tokenizer.eos_token_id in self.stop_token_ids
            else min(self.stop_token_ids)
        )
        self.pad_token_id = int(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_token_id
        )
        self.action_space = spaces.Discrete(self.vocab_size)
        self.observation_space = spaces.Dict(
            {
                "input_ids": spaces.Box(
                    0, self.vocab_size - 1, shape=(max_obs_tokens,), dtype=np.int64
                ),
                "attention_mask": spaces.Box(0, 1, shape=(max_obs_tokens,), dtype=np.int64),
            }
        )
        self._context: list[int] = []
        self._utterance: list[int] = []
        self._needs_reset = True

    @property
    def utterance_ids(self) -> list[int]:
        """The token ids of the utterance chosen so far (not yet sent)."""
        return list(self._utterance)

    def _observe(self) -> dict[str, np.ndarray]:
        ids = (self._context + self._utterance)[-self.max_obs_tokens :]
        input_ids = np.full(self.max_obs_tokens, self.pad_token_id, dtype=np.int64)
        mask = np.zeros(self.max_obs_tokens, dtype=np.int64)
        if ids:
            input_ids[-len(ids) :] = ids
            mask[-len(ids) :] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def _encode_context(self, transcript: list[dict[str, str]]) -> None:
        self._context = encode_chat(self.tokenizer, adversary_view(transcript))
        self._utterance = []

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        _, info = self.env.reset(seed=seed, options=options)
        self._encode_context(info["transcript"])
        self._needs_reset = False
        return self._observe(), info

    def step(
        self, action: int | np.integer | np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        token = self._check_action(action)
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (the episode has ended or not begun)")
        stop = token in self.stop_token_ids
        if not stop:
            self._utterance.append(token)
        if not stop and len(self._utterance) < self.max_utterance_tokens:
            pending = {"utterance_tokens": len(self._utterance), "utterance_sent": False}
            return self._observe(), 0.0, False, False, pending
        sent = len(self._utterance)
        text = str(self.tokenizer.decode(self._utterance, skip_special_tokens=True)).strip()
        _, reward, terminated, truncated, info = self.env.step(text or EMPTY_UTTERANCE)
        self._encode_context(info["transcript"])
        self._needs_reset = bool(terminated or truncated)
        info = {**info, "utterance_tokens": sent, "utterance_sent": True}
        return self._observe(), float(reward), terminated, truncated, info

    def _check_action(self, action: Any) -> int:
        if isinstance(action, np.ndarray) and action.size == 1:
            action = action.reshape(()).item() if action.dtype.kind in "iu" else action
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise ValueError(f"action must be an int token id, got {action!r}")
        if not 0 <= int(action) < self.vocab_size:
            raise ValueError(f"action must be a token id in [0, {self.vocab_size}), got {action}")
        return int(action)
