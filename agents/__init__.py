"""Token-level learners that train red-teaming adversaries against RedTeamDialogue-v0."""

from __future__ import annotations

import os

from agents.a2c import A2C
from agents.common.base import OnPolicyLearner
from agents.common.checkpoint import checkpoint_learner_name, saved_update
from agents.common.config import (
    A2CConfig,
    KLConfig,
    LearnerConfig,
    LoRAConfig,
    PPOConfig,
    RARLHFConfig,
)
from agents.ppo import PPO
from agents.ra_rlhf import RARLHF

LEARNERS: dict[str, type[OnPolicyLearner]] = {"a2c": A2C, "ppo": PPO, "ra-rlhf": RARLHF}


def load_adversary(path: str | os.PathLike[str], **overrides) -> OnPolicyLearner:
    """A trained learner from its run directory, usable as an adversary (`act`)."""
    name = checkpoint_learner_name(path)
    cls = {c.__name__: c for c in LEARNERS.values()}[name]
    return cls.load(path, **overrides)


__all__ = [
    "A2C",
    "LEARNERS",
    "PPO",
    "RARLHF",
    "A2CConfig",
    "KLConfig",
    "LearnerConfig",
    "LoRAConfig",
    "OnPolicyLearner",
    "PPOConfig",
    "RARLHFConfig",
    "load_adversary",
    "saved_update",
]
