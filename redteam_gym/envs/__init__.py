"""Red-teaming environments."""

from redteam_gym.envs.config import EnvConfig
from redteam_gym.envs.dialogue import RedTeamDialogueEnv, RedTeamDialogueVectorEnv

__all__ = ["EnvConfig", "RedTeamDialogueEnv", "RedTeamDialogueVectorEnv"]
