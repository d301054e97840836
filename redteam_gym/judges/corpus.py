"""The project's labelled safety corpus: short conversation replies labelled safe/unsafe.

No labelled toxicity dataset ships as files on the registries this project can reach, so
the project wrote its own (data card: `data/CORPUS.md`). It trains and evaluates the
`semantic` judge, and the judge report scores every judge on its held-out split.

The split is fixed by each item's `group` (paraphrases of one idea share a group), hashed,
so variants of one text never straddle train and held-out, and adding items never moves
old ones between splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from redteam_gym.judges.llama_guard import LLAMA_GUARD_CATEGORIES

__all__ = [
    "CATEGORIES",
    "CORPUS_DIR",
    "HARD_NEGATIVE_KINDS",
    "HELDOUT_PERCENT",
    "IMPLICIT_KINDS",
    "KINDS",
    "LabelledText",
    "load_corpus",
    "split_of",
]

CORPUS_DIR = Path(__file__).parent / "data" / "corpus"
"""Where the corpus's `*.jsonl` files live (in the package)."""

HELDOUT_PERCENT = 25
"""Share of groups, in percent, in the held-out split that training never sees."""

CATEGORIES: tuple[str, ...] = (*LLAMA_GUARD_CATEGORIES, "insult", "threat", "identity_hate")
"""Llama Guard 3's S1-S14 plus three finer tags for abuse aimed at people."""

IMPLICIT_KINDS = ("implicit", "coded")
"""Unsafe kinds with no overt trigger words."""

HARD_NEGATIVE_KINDS = (
    "refusal",
    "hard_negative:negation",
    "hard_negative:idiom",
    "hard_negative:discussion",
    "hard_negative:news",
    "hard_negative:fiction",
    "hard_negative:support",
    "hard_negative:quoting",
    "hard_negative:counter_speech",
    "hard_negative:banter",
)
"""Safe kinds that share vocabulary or topic with unsafe text."""

KINDS = ("explicit", *IMPLICIT_KINDS, "benign", *HARD_NEGATIVE_KINDS)

Split = Literal["train", "heldout", "all"]


@dataclass(frozen=True)
class LabelledText:
    """One corpus item."""

    id: str
    text: str
    unsafe: bool
    categories: tuple[str, ...]
    """The violated categories (from `CATEGORIES`); empty for safe items."""
    kind: str
    """One of `KINDS`: how the item is unsafe, or what kind of safe text it is."""
    group: str
    """Items that are variants of one idea share a group; the split is drawn by group."""

    @property
    def split(self) -> Literal["train", "heldout"]:
        return split_of(self.group)


def split_of(group: str) -> Literal["train", "heldout"]:
    """The fixed split of a group: a hash, so it does not depend on file order or size."""
    bucket = int(hashlib.sha256(group.encode()).hexdigest(), 16) % 100
    return "heldout" if bucket < HELDOUT_PERCENT else "train"


_KEYS = {"id", "text", "label", "categories", "kind", "group"}


def _parse(raw: str, where: str) -> LabelledText:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict) or set(row) != _KEYS:
        got = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise ValueError(f"{where}: expected the keys {sorted(_KEYS)}, got {got}")
    label, kind, categories = row["label"], row["kind"], row["categories"]
    if label not in ("safe", "unsafe"):
        raise ValueError(f"{where}: label must be 'safe' or 'unsafe', got {label!r}")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(categories, list) or not set(categories) <= set(CATEGORIES):
        raise ValueError(f"{where}: categories must be a list drawn from {CATEGORIES}")
    unsafe = label == "unsafe"
    if unsafe != bool(categories) or unsafe != (kind in ("explicit", *IMPLICIT_KINDS)):
        raise ValueError(
            f"{where}: an unsafe item needs categories and an unsafe kind, a safe one neither"
        )
    text = row["text"]
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: text must be a non-empty string")
    return LabelledText(
        id=str(row["id"]),
        text=text,
        unsafe=unsafe,
        categories=tuple(categories),
        kind=kind,
        group=str(row["group"]),
    )


def load_corpus(split: Split = "all", directory: str | Path = CORPUS_DIR) -> list[LabelledText]:
    """Every item of `split` from the `*.jsonl` files in `directory`, in file order.

    Raises:
        ValueError: an unknown split, a malformed line (named by file and line), a duplicate
            id or text, or a directory with no items.
    """
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    files = sorted(Path(directory).glob("*.jsonl"))
    items: list[LabelledText] = []
    ids: set[str] = set()
    texts: dict[str, str] = {}
    for path in files:
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not raw.strip():
                continue
            where = f"{path.name}:{number}"
            item = _parse(raw, where)
            if item.id in ids:
                raise ValueError(f"{where}: duplicate id {item.id!r}")
            key = " ".join(item.text.lower().split())
            if key in texts:
                raise ValueError(f"{where}: the same text as {texts[key]}")
            ids.add(item.id)
            texts[key] = item.id
            items.append(item)
    if not items:
        raise ValueError(f"no labelled items in {directory} (expected *.jsonl files)")
    return items if split == "all" else [x for x in items if x.split == split]


def corpus_dataset(split: Split = "all", directory: str | Path = CORPUS_DIR) -> Any:
    """`load_corpus` as a `datasets.Dataset`: one row per item, its `split` a column."""
    from redteam_gym.hf_datasets import records_dataset

    return records_dataset(
        {**dataclasses.asdict(item), "split": item.split} for item in load_corpus(split, directory)
    )
