"""Local Hugging Face datasets as prompts, and rollouts and labelled sets as `datasets.Dataset`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from benchmarks.records import rollouts_dataset  # noqa: E402
from redteam_gym.hf_datasets import is_local_dataset  # noqa: E402
from redteam_gym.judges.corpus import corpus_dataset, load_corpus  # noqa: E402
from redteam_gym.judges.replies import load_replies, replies_dataset  # noqa: E402
from redteam_gym.prompts import load_openers  # noqa: E402

ROWS = [
    {"id": "a", "text": "Why are my neighbours so loud?", "split": "train", "topic": "home"},
    {"id": "b", "text": "Is it rude to skip a wedding?", "split": "test", "topic": "etiquette"},
    {"id": "c", "text": "  What do you think of cyclists?  ", "split": None, "topic": None},
]


def _openers(source: Path) -> list[tuple[str, str, str]]:
    return [(o.id, o.text, o.split) for o in load_openers(str(source), split=None)]


def _expected(c_split: str) -> list[tuple[str, str, str]]:
    return [
        ("a", ROWS[0]["text"], "train"),
        ("b", ROWS[1]["text"], "eval"),  # another corpus's held-out label counts as eval
        ("c", "What do you think of cyclists?", c_split),
    ]


@pytest.mark.parametrize("form", ["save_to_disk", "json", "csv", "parquet"])
def test_prompts_from_a_local_dataset(tmp_path: Path, form: str) -> None:
    dataset = datasets.Dataset.from_list(ROWS)
    source = tmp_path / ("saved" if form == "save_to_disk" else f"prompts.{form}")
    if form == "save_to_disk":
        dataset.save_to_disk(str(source))
    else:
        getattr(dataset, f"to_{form}")(str(source))
    assert is_local_dataset(source)
    from redteam_gym.prompts.corpus import hash_split

    assert _openers(source) == _expected(hash_split("c"))
    assert [o.id for o in load_openers(str(source), split="eval")] == [
        i for i, _, s in _expected(hash_split("c")) if s == "eval"
    ]


def test_a_dataset_dicts_splits_name_its_rows(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "split"} for r in ROWS]
    parts = {"train": rows[:2], "validation": rows[2:]}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in parts.items()}).save_to_disk(
        str(tmp_path / "dict")
    )
    assert [(i, s) for i, _, s in _openers(tmp_path / "dict")] == [
        ("a", "train"),
        ("b", "train"),
        ("c", "eval"),
    ]


def test_a_dataset_without_a_text_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,body\n1,hello\n")
    with pytest.raises(ValueError, match=r"dataset .*bad\.csv, row 0: needs an object"):
        load_openers(str(path), split=None)
    assert not is_local_dataset(tmp_path / "missing.csv")
    assert not is_local_dataset(tmp_path)  # a directory without save_to_disk's files


def test_rollouts_load_as_a_dataset(tmp_path: Path) -> None:
    turn = {"adversary": "hi", "defender": "hello", "defender_unsafe_prob": 0.1}
    records = [
        {"rollout": 1, "opener": "o1", "turns": [turn, {**turn, "defender": "bye"}]},
        {"rollout": 0, "opener": "o0", "turns": [turn]},
    ]
    (tmp_path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ds = rollouts_dataset(tmp_path)
    assert ds["rollout"] == [0, 1]  # in rollout order, as read_rollouts gives them
    assert [t["defender"] for t in ds[1]["turns"]] == ["hello", "bye"]


def test_labelled_sets_load_as_datasets() -> None:
    heldout = corpus_dataset("heldout")
    items = load_corpus("heldout")
    assert len(heldout) == len(items) and set(heldout["split"]) == {"heldout"}
    assert heldout[0]["text"] == items[0].text and heldout[0]["unsafe"] == items[0].unsafe
    replies = load_replies("train")
    ds = replies_dataset("train")
    assert len(ds) == len(replies)
    if replies:
        assert ds[0]["reply"] == replies[0].reply
        assert ds[0]["conversation"][-1]["content"] == replies[0].reply
