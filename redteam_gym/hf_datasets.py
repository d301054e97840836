"""Hugging Face `datasets` at the package's edges: local datasets in, records out.

In: `load_openers` (`redteam_gym.prompts`) takes, besides ConvoKit corpora and JSONL prompt
files, any local Hugging Face dataset with a text column: a directory written by
`Dataset.save_to_disk` or `DatasetDict.save_to_disk`, or a local `.json`, `.csv` or
`.parquet` file (read with `datasets.load_dataset`). Rows follow the prompt file's rules: the
text in `prompt` (or `text`), and optional `id`, `split` and `topic` columns. A DatasetDict's
rows without a `split` of their own take their split's name, `train` or otherwise `eval`.
Nothing is downloaded.

Out: `records_dataset` turns records (a rollout file's conversations, a labelled set's items)
into a `datasets.Dataset`, so they can be filtered, mapped, pushed or saved as a user does
with any other: `benchmarks.records.rollouts_dataset` (an eval's conversations),
`redteam_gym.judges.corpus.corpus_dataset` (the labelled corpus) and
`redteam_gym.judges.replies.replies_dataset` (the labelled real replies) use it.

`datasets` (and pandas, pyarrow) are imported on first use: they cost seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DATA_FILE_BUILDERS = {".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""The local data files `load_local_dataset` reads, by suffix, and the builder that reads them."""
SAVED_MARKERS = ("dataset_info.json", "dataset_dict.json")
"""A directory holding one of these was written by `save_to_disk`."""


def is_local_dataset(source: Any) -> bool:
    """Whether `source` names a local Hugging Face dataset: a `save_to_disk` directory or a
    data file with a suffix of `DATA_FILE_BUILDERS` (ConvoKit's `utterances.json` excepted)."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        return any((path / marker).is_file() for marker in SAVED_MARKERS)
    return path.is_file() and path.suffix in DATA_FILE_BUILDERS and path.name != "utterances.json"


def load_local_dataset(source: str | os.PathLike[str]) -> Any:
    """The `datasets.Dataset` (or `DatasetDict`, from a `save_to_disk` directory of one) at
    `source`, read from disk alone."""
    import datasets

    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        return datasets.load_from_disk(str(path))
    builder = DATA_FILE_BUILDERS.get(path.suffix)
    if builder is None or not path.is_file():
        raise ValueError(
            f"{path} is not a local dataset: a save_to_disk directory or a "
            f"{'/'.join(DATA_FILE_BUILDERS)} file"
        )
    return datasets.load_dataset(builder, data_files=str(path), split="train")


def dataset_rows(source: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of the local dataset at `source`; a DatasetDict's rows carry their split's
    name in `split` when they have none of their own."""
    loaded = load_local_dataset(source)
    if not isinstance(loaded, Mapping):
        return list(loaded)
    rows = []
    for name, part in loaded.items():
        for row in part:
            rows.append({**row, "split": row.get("split") or name})
    return rows


def records_dataset(records: Iterable[Mapping[str, Any]]) -> Any:
    """`records` (JSON-like dicts with the same keys) as a `datasets.Dataset`, nested values
    kept as nested features."""
    import datasets

    return datasets.Dataset.from_list([dict(r) for r in records])
