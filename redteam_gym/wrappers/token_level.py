"""One token per step: RedTeamDialogue as a classic discrete-action MDP."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from transformers import PreTrainedTokenizerBase

from redteam_gym.envs.core import EMPTY_UTTERANCE, adversary_view
from redteam_gym.models import encode_chat


class TokenLevel(gym.Wrapper):
    """Turn `RedTeamDialogue-v0` into a one-token-per-step MDP for classic RL libraries.

    Actions are token ids (`Discrete(vocab)`). The observation is the adversary's view of the
    conversation followed by the utterance tokens chosen so far, as the last `max_obs_tokens`
    ids (left padded) with an attention mask. The utterance goes to the dialogue env when
    the stop token is chosen or `max_utterance_tokens` tokens are reached; that step returns
    the env's reward, every other step 0.

    Args:
        env: a `RedTeamDialogue-v0` env.
        tokenizer: the adversary's tokenizer; the defender's when omitted.
        max_utterance_tokens: tokens per utterance (24 as in the seed paper).
        max_obs_tokens: length of the observation window.
    """

    def __init__(
        self,
        env: gym.Env,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        max_utterance_tokens: int = 24,
        max_obs_tokens: int = 512,
    ) -> None:
        super().__init__(env)
        tokenizer = tokenizer or getattr(env.unwrapped.defender, "tokenizer", None)  # type: ignore[attr-defined]
        if tokenizer is None:
            raise ValueError("tokenizer is required when the defender has none")
        if max_utterance_tokens < 1 or max_obs_tokens < 1:
            raise ValueError("max_utterance_tokens and max_obs_tokens must be >= 1")
        self.tokenizer = tokenizer
        self.max_utterance_tokens = max_utterance_tokens
        self.max_obs_tokens = max_obs_tokens
        self.vocab_size = len(tokenizer)
        self.stop_token_id = int(tokenizer.eos_token_id)
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

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        _, info = self.env.reset(seed=seed, options=options)
        self._encode_context(info["transcript"])
        return self._observe(), info

    def step(self, action: int):
        token = int(action)
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"action must be a token id in [0, {self.vocab_size}), got {action!r}")
        stop = token == self.stop_token_id
        if not stop:
            self._utterance.append(token)
        if not stop and len(self._utterance) < self.max_utterance_tokens:
            return self._observe(), 0.0, False, False, {"utterance_tokens": len(self._utterance)}
        text = self.tokenizer.decode(self._utterance, skip_special_tokens=True).strip()
        _, reward, terminated, truncated, info = self.env.step(text or EMPTY_UTTERANCE)
        self._encode_context(info["transcript"])
        return self._observe(), reward, terminated, truncated, info
