"""Baseline adversaries: any object with `act(observations) -> list[str]` is an adversary."""

from agents.baselines.few_shot import FewShotAdversary
from agents.baselines.zero_shot import ZERO_SHOT_INSTRUCTION, Adversary, ZeroShotAdversary

__all__ = ["ZERO_SHOT_INSTRUCTION", "Adversary", "FewShotAdversary", "ZeroShotAdversary"]
