"""`GameConfig`: the settings of the two-player game (`benchmarks.selfplay`), one flag each
in `redteam-gym game`. Importing it loads no model library."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from redteam_gym.defaults import SMOLLM2
from redteam_gym.envs.config import EnvConfig

GAME_FILE = "game.json"
"""The game directory's copy of its `GameConfig` (a resume reads it)."""
ADVERSARY_REWARD = "implicit"
"""The `implicit` preset: the Perez term and the novelty terms (the game paper's diversity
rewards), with the echo discount, the adversary's own toxicity charged and a naturalness
term, so that echoing insults into the defender's mouth does not pay."""


def _default_env() -> EnvConfig:
    """One-turn dialogues (a prompt and a reply, the game paper's setting) with 32-token
    replies (the defender learner writes them, so their length is its cost per update), and
    the semantic judge, which reads meaning where `profanity` reads words (as the demo)."""
    return EnvConfig(max_turns=1, defender_max_new_tokens=32, judge="semantic")


@dataclass
class GameConfig:
    """The game's settings; `redteam-gym game` has a flag per field."""

    env: EnvConfig = field(default_factory=_default_env)
    """The dialogues: openers (`prompts`; phases use the train split, evaluations
    `eval_split`), `max_turns`, the initial defender (`defender`, a model name or path) and its
    decoding in the adversary phase, the judge. Its `reward` is not used: each phase sets
    its own (`adversary_reward`, `defender_reward`)."""
    iterations: int = 3
    """Rounds of (adversary phase, defender phase, evaluation)."""
    adversary_algo: Literal["ppo", "a2c"] = "ppo"
    """The adversary's learner."""
    defender_algo: Literal["ppo", "ra-rlhf"] = "ppo"
    """The defender's learner."""
    adversary_updates: int = 8
    """Adversary updates per iteration."""
    defender_updates: int = 8
    """Defender updates per iteration."""
    adversary_reward: str = ADVERSARY_REWARD
    """The adversary's reward: by default `implicit`, the Perez term and the novelty terms
    (diversity rewards) with the echo rule and a charge for the adversary's own toxicity."""
    defender_reward: str = "safe"
    """The defender's reward (`safety`, `refusal`, `relevance` terms)."""
    prompt_pool: str = "builtin"
    """Prompts mixed into the defender's phase (their train split): a corpus or JSONL file."""
    prompt_share: float = 0.5
    """Share of the defender's training messages drawn from the prompt pool."""
    model: str = SMOLLM2
    """The adversary's initial LM and KL reference (the defender's is `env.defender`)."""
    batch_size: int = 8
    """Dialogues per update and per evaluation batch."""
    adversary_config: dict[str, Any] = field(default_factory=dict)
    """Other adversary learner settings (JSON object of its config fields, e.g.
    {"kl": {"coef": 0.1}})."""
    defender_config: dict[str, Any] = field(default_factory=dict)
    """Other defender learner settings. RA-RLHF's warm-up `risk_n` is `defender_updates`
    unless given here: the first defender phase is risk-neutral, the later ones risk-averse."""
    eval_rollouts: int = 16
    """Conversations per evaluation."""
    eval_split: str = "eval"
    """The held-out openers the evaluations use."""
    seed: int = 0
    """Seeds the learners (adversary `seed`, defender `seed + 1`) and the evaluations."""
    device: str | None = None
    """'cpu', 'cuda', ...; default: CUDA when available."""
    dtype: str | None = None
    """Model dtype; default: bf16 on GPU, fp32 on CPU."""

    def __post_init__(self) -> None:
        if isinstance(self.env, dict):
            self.env = EnvConfig.from_dict(self.env)
        for name in ("adversary_config", "defender_config"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"GameConfig.{name} is not JSON: {exc}") from None
            if not isinstance(value, dict):
                raise ValueError(f"GameConfig.{name} must be a JSON object, got {value!r}")
            setattr(self, name, value)
        checks = {
            "iterations": self.iterations >= 1,
            "adversary_updates": self.adversary_updates >= 1,
            "defender_updates": self.defender_updates >= 1,
            "batch_size": self.batch_size >= 1,
            "eval_rollouts": self.eval_rollouts >= 1,
            "prompt_share": 0.0 <= self.prompt_share <= 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                allowed = "in [0, 1]" if name == "prompt_share" else ">= 1"
                raise ValueError(f"GameConfig.{name} must be {allowed}, got {getattr(self, name)}")
        if not isinstance(self.env.defender, str):
            raise ValueError(
                "GameConfig.env.defender must be a model name or path: the defender learner "
                f"starts from it; got {self.env.defender!r}"
            )
        own = {"role", "opponent", "adversary_model", "seed", "batch_size", "env"}
        for name in ("adversary_config", "defender_config"):
            clash = sorted(own & set(getattr(self, name)))
            if clash:
                raise ValueError(f"GameConfig.{name} may not set {clash}: the game sets them")
        # build both learner configs now, so a bad setting fails before any training
        self.learner_config("adversary")
        self.learner_config("defender")

    # ----- the two learners ----------------------------------------------------------------

    def learner_class(self, side: str) -> Any:
        from agents import LEARNERS

        return LEARNERS[self.adversary_algo if side == "adversary" else self.defender_algo]

    def learner_config(self, side: str, **phase: Any) -> Any:
        """The config of `side`'s learner. `phase` holds what a phase sets: keywords of the
        learner's config, its own fields (`opponent`) or its env's (`defender`)."""
        try:
            return self._learner_config(side, phase)
        except TypeError as exc:  # a field the learner's config does not have
            raise ValueError(f"GameConfig.{side}_config: {exc}") from None

    def _learner_config(self, side: str, phase: dict[str, Any]) -> Any:
        cls = self.learner_class(side)
        run = {"seed": self.seed, "batch_size": self.batch_size, "device": self.device}
        run["dtype"] = self.dtype
        if side == "adversary":
            env = self.env.replace(reward=self.adversary_reward)
            extra = dict(self.adversary_config)
            return cls.config_class(env=env, adversary_model=self.model, **run, **extra, **phase)
        env = self.env.replace(reward=self.defender_reward)
        extra = dict(self.defender_config)
        if self.defender_algo == "ra-rlhf":
            extra.setdefault("risk_n", self.defender_updates)
        extra.setdefault("max_new_tokens", self.env.defender_max_new_tokens)
        run["seed"] = self.seed + 1
        return cls.config_class(
            env=env, role="defender", adversary_model=self.env.defender, **run, **extra, **phase
        )

    # ----- files ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["env"] = self.env.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GameConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown GameConfig fields: {sorted(unknown)}")
        return cls(**data)
