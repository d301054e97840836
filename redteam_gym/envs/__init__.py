"""Red-teaming environments."""

from redteam_gym.envs.dialogue import RedTeamDialogueEnv, RedTeamDialogueVectorEnv

__all__ = ["RedTeamDialogueEnv", "RedTeamDialogueVectorEnv"]
