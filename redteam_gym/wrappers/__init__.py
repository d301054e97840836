"""Wrappers that reshape RedTeamDialogue-v0 for other kinds of agents."""

from redteam_gym.wrappers.strategy_menu import DEFAULT_STRATEGIES, Strategy, StrategyMenu
from redteam_gym.wrappers.token_level import TokenLevel

__all__ = ["DEFAULT_STRATEGIES", "Strategy", "StrategyMenu", "TokenLevel"]
