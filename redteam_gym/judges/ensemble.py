"""Several judges as one: P(unsafe) averaged or maxed, categories united."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from redteam_gym.judges.base import Judge, JudgeOutput, validate_conversations
from redteam_gym.models.chat import Message

__all__ = ["REDUCTIONS", "EnsembleJudge"]

REDUCTIONS = ("mean", "max")
"""How an ensemble combines its judges' P(unsafe)."""


class EnsembleJudge:
    """Score with every judge and combine.

    `reduce="mean"` averages P(unsafe) (a smoother reward); `"max"` flags a message as
    soon as any judge does. Categories are the union, in the judges' order; None when no
    judge names any.
    """

    def __init__(self, judges: Sequence[Judge], reduce: str = "mean") -> None:
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        judges = list(judges)
        if not judges:
            raise ValueError("judges must hold at least one judge")
        for i, judge in enumerate(judges):
            if not callable(getattr(judge, "score", None)):
                raise ValueError(f"judges[{i}] has no score method: {judge!r}")
        self.judges = judges
        self.reduce = reduce
        self.name = "+".join(getattr(j, "name", type(j).__name__) for j in judges)

    def score(self, conversations: Sequence[Sequence[Message]]) -> JudgeOutput:
        """Every judge scores the whole batch once; results are combined per row."""
        batch = validate_conversations(conversations)
        outputs = [judge.score(batch) for judge in self.judges]
        for judge, out in zip(self.judges, outputs, strict=True):
            if len(out.p_unsafe) != len(batch):
                raise RuntimeError(
                    f"judge {judge!r} returned {len(out.p_unsafe)} scores for {len(batch)} rows"
                )
        stacked = np.stack([out.p_unsafe for out in outputs]) if batch else np.zeros((1, 0))
        p = stacked.mean(0) if self.reduce == "mean" else stacked.max(0)
        if all(out.categories is None for out in outputs):
            return JudgeOutput(p)
        categories: list[list[str]] = []
        for row in range(len(batch)):
            united: dict[str, None] = {}
            for out in outputs:
                if out.categories is not None:
                    united.update(dict.fromkeys(out.categories[row]))
            categories.append(list(united))
        return JudgeOutput(p, categories)

    def __repr__(self) -> str:
        return f"EnsembleJudge({self.judges!r}, reduce={self.reduce!r})"
