"""Red-teaming environments.

`EnvConfig` imports light; the env classes (and the model libraries they need) load on first
use, so that a config, or the command line's parser built from it, loads no model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redteam_gym.envs.config import EnvConfig

if TYPE_CHECKING:
    from redteam_gym.envs.dialogue import RedTeamDialogueEnv, RedTeamDialogueVectorEnv

__all__ = ["EnvConfig", "RedTeamDialogueEnv", "RedTeamDialogueVectorEnv"]


def __getattr__(name: str) -> Any:
    # Lazy: the env classes import torch and the models.
    if name in ("RedTeamDialogueEnv", "RedTeamDialogueVectorEnv"):
        from redteam_gym.envs import dialogue

        return getattr(dialogue, name)
    raise AttributeError(f"module 'redteam_gym.envs' has no attribute {name!r}")
