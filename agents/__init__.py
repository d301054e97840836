"""Token-level learners that train red-teaming adversaries against RedTeamDialogue-v0.

The configs import light; the learners (torch, transformers, the models) load on first use,
so that the command line builds its parser from the configs without loading a model.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from agents.common.config import (
    CONFIGS,
    A2CConfig,
    KLConfig,
    LearnerConfig,
    LoRAConfig,
    PPOConfig,
    RARLHFConfig,
)

if TYPE_CHECKING:
    from agents.a2c import A2C
    from agents.common.base import OnPolicyLearner
    from agents.common.checkpoint import checkpoint_learner_name, saved_update
    from agents.ppo import PPO
    from agents.ra_rlhf import RARLHF

    LEARNERS: dict[str, type[OnPolicyLearner]]

_LAZY = {
    "A2C": "agents.a2c",
    "PPO": "agents.ppo",
    "RARLHF": "agents.ra_rlhf",
    "OnPolicyLearner": "agents.common.base",
    "checkpoint_learner_name": "agents.common.checkpoint",
    "saved_update": "agents.common.checkpoint",
}


def __getattr__(name: str) -> Any:
    # Lazy: the learners import torch and the models.
    import importlib

    if name == "LEARNERS":  # by the names of `CONFIGS`
        return {
            "a2c": __getattr__("A2C"),
            "ppo": __getattr__("PPO"),
            "ra-rlhf": __getattr__("RARLHF"),
        }
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")


def load_adversary(path: str | os.PathLike[str], **overrides: Any) -> OnPolicyLearner:
    """A trained learner from its run directory, usable as an adversary (`act`)."""
    from agents.common.checkpoint import checkpoint_learner_name

    name = checkpoint_learner_name(path)
    cls = {c.__name__: c for c in __getattr__("LEARNERS").values()}[name]
    return cls.load(path, **overrides)


__all__ = [
    "A2C",
    "CONFIGS",
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
    "checkpoint_learner_name",
    "load_adversary",
    "saved_update",
]
