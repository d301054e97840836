"""Wrappers that reshape RedTeamDialogue-v0 for other kinds of agents."""

from redteam_gym.wrappers.token_level import TokenLevel

__all__ = ["TokenLevel"]
