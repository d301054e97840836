"""An eval's ``rollouts.jsonl``: reading it back (repairing a torn tail) and appending
batches of conversation records durably."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ROLLOUTS_FILE = "rollouts.jsonl"
"""Every conversation of an eval, one JSON line each (see `benchmarks.runner`)."""


def read_rollouts(path: str | os.PathLike[str], repair: bool = False) -> list[dict[str, Any]]:
    """The conversations of a ``rollouts.jsonl`` (or an eval DIR), sorted by rollout index.

    A last line cut short by an interruption is skipped (and cut from the file when
    ``repair``, so appends start on a clean line); a bad line elsewhere raises
    ``ValueError``. Duplicate rollout indices keep their first record.
    """
    path = Path(path)
    if path.is_dir():
        path = path / ROLLOUTS_FILE
    if not path.is_file():
        return []
    data = path.read_bytes()
    records: dict[int, dict[str, Any]] = {}
    good_end = 0
    offset = 0
    lines = data.split(b"\n")
    for k, raw in enumerate(lines):
        end = offset + len(raw) + 1
        last = k == len(lines) - 1
        if raw.strip():
            try:
                if last:  # no newline after it: a write was cut short
                    raise ValueError("unterminated")
                record = json.loads(raw)
                index = int(record["rollout"])
            except (ValueError, KeyError, TypeError) as exc:
                if not any(line.strip() for line in lines[k + 1 :]):
                    break  # the torn tail of an interrupted eval
                raise ValueError(f"{path}: line {k + 1} is not a rollout record ({exc})") from exc
            records.setdefault(index, record)
        offset = end
        if not last:
            good_end = end
    if repair and good_end < len(data):
        with path.open("r+b") as f:
            f.truncate(good_end)
            os.fsync(f.fileno())
        logger.warning(
            "%s: dropped a torn last line (%d bytes after the last whole rollout record, "
            "cut short by an interrupted write); its rollouts run again",
            path,
            len(data) - good_end,
        )
    return [records[i] for i in sorted(records)]


def rollouts_dataset(path: str | os.PathLike[str]) -> Any:
    """The conversations of a ``rollouts.jsonl`` (or an eval DIR) as a ``datasets.Dataset``:
    one row per conversation, its ``turns`` a list of per-turn records."""
    from redteam_gym.hf_datasets import records_dataset

    return records_dataset(read_rollouts(path))


def reply_conversations(
    record: dict[str, Any],
) -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
    """Per turn of a conversation record, the turn and the transcript up to and including its
    defender reply (roles `opener`, `adversary`, `defender`): what a judge or a labeller reads,
    and what `redteam_gym.judges.replies.reply_id` names."""
    transcript = [{"role": "opener", "content": record.get("opener", "")}]
    out = []
    for turn in record["turns"]:
        if turn.get("adversary") is not None:
            transcript.append({"role": "adversary", "content": turn["adversary"]})
        transcript.append({"role": "defender", "content": turn["defender"]})
        out.append((turn, [dict(m) for m in transcript]))
    return out


def append_records(path: Path, records: list[dict[str, Any]]) -> None:
    # One write per batch, then fsync: a crash leaves whole batches (plus at most a torn tail).
    payload = "".join(json.dumps(jsonable(r), ensure_ascii=False) + "\n" for r in records)
    created = not path.exists()
    with path.open("a", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    if created:  # the new file's directory entry too
        from redteam_gym.files import fsync_dir

        fsync_dir(path.parent)


def jsonable(value: Any) -> Any:
    """JSON-ready data: numpy scalars/arrays to Python, nan/inf to None (null)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    return value
