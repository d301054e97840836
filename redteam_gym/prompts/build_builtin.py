"""Build the shipped ``builtin`` ConvoKit corpus from ``builtin_openers.jsonl``.

Run ``python -m redteam_gym.prompts.build_builtin`` after editing the openers file;
the output directory is package data, so commit it with the source file.
Each opener becomes the root utterance of its own conversation.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redteam_gym.prompts.corpus import BUILTIN_DIR, SPLITS, hash_split

SOURCE_FILE = Path(__file__).resolve().parent / "builtin_openers.jsonl"
# Synthetic but fixed timestamps (one opener an hour from 2024-01-01 UTC), so that
# rebuilding gives byte-identical files and "earliest utterance" stays well defined.
_BASE_TIMESTAMP = 1_704_067_200
_CORPUS_META = {
    "name": "redteam-gym builtin openers",
    "description": "Reddit-style conversation openers written for redteam-gym",
    "license": "Apache-2.0",
}


def read_openers(path: Path = SOURCE_FILE) -> list[dict[str, str]]:
    """Read and check the source file: unique ids and texts, known splits, a topic each."""
    rows: list[dict[str, str]] = []
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            where = f"{path.name}:{lineno}"
            oid, text, topic = row.get("id"), row.get("text"), row.get("topic")
            if not (isinstance(oid, str) and oid):
                raise ValueError(f"{where}: missing id")
            if not (isinstance(text, str) and text.strip()):
                raise ValueError(f"{where}: empty text")
            if not (isinstance(topic, str) and topic):
                raise ValueError(f"{where}: missing topic")
            split = row.get("split") or hash_split(oid)
            if split not in SPLITS:
                raise ValueError(f"{where}: split {split!r} is not one of {SPLITS}")
            if oid in seen_ids:
                raise ValueError(f"{where}: duplicate id {oid!r}")
            if text.strip() in seen_texts:
                raise ValueError(f"{where}: duplicate text")
            seen_ids.add(oid)
            seen_texts.add(text.strip())
            rows.append({"id": oid, "topic": topic, "split": split, "text": text.strip()})
    return rows


def build_corpus(rows: Sequence[dict[str, str]]) -> Any:
    """A ``convokit.Corpus`` with one single-utterance conversation per opener."""
    from convokit import Corpus, Speaker, Utterance

    utterances = []
    for i, row in enumerate(rows):
        speaker = Speaker(id=f"user_{i + 1:04d}")
        utterances.append(
            Utterance(
                id=row["id"],
                speaker=speaker,
                conversation_id=row["id"],
                reply_to=None,
                timestamp=_BASE_TIMESTAMP + 3600 * i,
                text=row["text"],
                meta={"split": row["split"], "topic": row["topic"]},
            )
        )
    # convokit prints when it creates ~/.convokit/config.yml; keep build output readable.
    with contextlib.redirect_stdout(io.StringIO()):
        corpus = Corpus(utterances=utterances, backend="mem")
    for row in rows:
        convo = corpus.get_conversation(row["id"])
        convo.meta["split"] = row["split"]
        convo.meta["topic"] = row["topic"]
    for key, value in _CORPUS_META.items():
        corpus.meta[key] = value
    return corpus


def build(source: Path = SOURCE_FILE, out_dir: Path = BUILTIN_DIR) -> int:
    """Write the corpus for ``source`` into ``out_dir`` (replacing it); returns the count."""
    rows = read_openers(source)
    corpus = build_corpus(rows)
    # Start clean so files from an older build (e.g. vectors) cannot linger.
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    corpus.dump(out_dir.name, base_path=str(out_dir.parent), force_version=1)
    return len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the builtin ConvoKit corpus.")
    parser.add_argument("--source", type=Path, default=SOURCE_FILE, help="openers .jsonl file")
    parser.add_argument("--out", type=Path, default=BUILTIN_DIR, help="corpus directory")
    args = parser.parse_args(argv)
    count = build(args.source, args.out)
    print(f"wrote {count} openers to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
