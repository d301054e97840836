"""The real-reply set: defender replies drawn from the project's worlds, labelled by people.

The labelled corpus (`redteam_gym.judges.corpus`) was written for the project; its held-out
split comes from the same writers and holds no real defender reply, so a judge that does well
there can still be at chance on the text it really scores. This set is the check: replies the
embedded defender really wrote, in both formats, at 1-5 turns, to zero-shot, few-shot,
trained and scripted adversaries, each labelled unsafe or safe by two readers against a
written rubric, blind to every judge's score (data card: `data/replies/REPLIES.md`).

The split follows the opener: replies to the env's eval-split openers are held out (the
worlds table and the eval suites run on those openers), the rest train the judge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["REPLIES_DIR", "RealReply", "load_replies", "reply_id"]

REPLIES_DIR = Path(__file__).parent / "data" / "replies"
"""Where `replies.jsonl` and its data card live (in the package)."""


def reply_id(opener_id: str, conversation: Sequence[dict[str, str]]) -> str:
    """A stable id of a reply in its conversation (the transcript up to and including the
    reply: same opener, messages and reply, same id)."""
    blob = json.dumps([opener_id, [[m["role"], m["content"]] for m in conversation]])
    return "r-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RealReply:
    """One labelled reply, with the conversation it answers."""

    id: str
    opener_id: str
    conversation: tuple[dict[str, str], ...]
    """The transcript (roles `opener`, `adversary`, `defender`) up to and including the reply."""
    unsafe: bool
    categories: tuple[str, ...] = ()
    borderline: bool = False
    drawn_by: str = "random"
    """How it entered the sample: `flagged` (a judge scored it >= the flag level), `random`
    (a random share of the rest, at `sampling_rate`) or `recorded-top` (a recorded run's most
    rewarded replies)."""
    sampling_rate: float | None = None
    source: str = ""
    """The run it comes from."""
    format: str = "chat"
    temperature: float | None = None
    turn: int = 1
    split: str = "train"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def reply(self) -> str:
        return self.conversation[-1]["content"]


@cache
def _opener_splits() -> dict[str, str]:
    from redteam_gym.prompts import load_openers

    return {o.id: o.split for o in load_openers("builtin", split=None)}


def split_of(opener_id: str) -> str:
    """`"heldout"` for replies to the env's eval-split openers, else `"train"`."""
    return "heldout" if _opener_splits().get(opener_id) == "eval" else "train"


def load_replies(split: str | None = None, path: str | Path | None = None) -> list[RealReply]:
    """The labelled real replies (`split`: 'train', 'heldout' or None for all)."""
    if split not in (None, "train", "heldout"):
        raise ValueError(f"split must be 'train', 'heldout' or None, got {split!r}")
    path = Path(path) if path is not None else REPLIES_DIR / "replies.jsonl"
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            item = RealReply(
                id=row["id"],
                opener_id=row["opener_id"],
                conversation=tuple(row["conversation"]),
                unsafe=bool(row["unsafe"]),
                categories=tuple(row.get("categories", ())),
                borderline=bool(row.get("borderline", False)),
                drawn_by=row.get("drawn_by", "random"),
                sampling_rate=row.get("sampling_rate"),
                source=row.get("source", ""),
                format=row.get("format", "chat"),
                temperature=row.get("temperature"),
                turn=int(row.get("turn", 1)),
                split=split_of(row["opener_id"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{n}: not a labelled reply ({exc})") from exc
        if split is None or item.split == split:
            out.append(item)
    return out


def replies_dataset(split: str | None = None, path: str | Path | None = None) -> Any:
    """`load_replies` as a `datasets.Dataset`: one row per labelled reply, its conversation a
    list of `{role, content}` and its `reply` a column of its own."""
    from redteam_gym.hf_datasets import records_dataset

    return records_dataset(
        {**dataclasses.asdict(r), "reply": r.reply} for r in load_replies(split, path)
    )
