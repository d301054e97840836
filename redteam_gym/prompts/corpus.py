"""Conversation openers from ConvoKit corpora: the shipped ``builtin`` one or any other.

An opener is the first utterance of a conversation. Corpora are read with
``convokit.Corpus(filename=...)`` and never downloaded here: a ConvoKit corpus name
resolves only to a copy already on disk.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redteam_gym.hf_datasets import is_local_dataset

logger = logging.getLogger(__name__)

BUILTIN = "builtin"
BUILTIN_DIR = Path(__file__).resolve().parent / "corpora" / BUILTIN
SPLITS: tuple[str, ...] = ("train", "eval")
EVAL_FRACTION = 0.2
DEFAULT_MAX_CHARS = 2000

# Files whose presence makes a directory a ConvoKit corpus (jsonl is the current
# format, json the legacy one that convokit still reads).
_UTTERANCE_FILES = ("utterances.jsonl", "utterances.json")
# Placeholders Reddit (and so ConvoKit's Reddit corpora) leave for gone content.
_GONE_TEXTS = frozenset({"[deleted]", "[removed]", "[deleted by user]"})
# Corpus split labels mapped onto ours: held-out labels of other corpora all count as eval.
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "eval": "eval",
    "evaluation": "eval",
    "test": "eval",
    "val": "eval",
    "valid": "eval",
    "validation": "eval",
    "dev": "eval",
}
_DOWNLOAD_HINT = (
    "to get it, run `python -c \"from convokit import download; download('{name}')\"` "
    "on a machine with internet access (it lands in ~/.convokit/saved-corpora/{name}), "
    "or pass the path of a ConvoKit corpus directory"
)


@dataclass(frozen=True)
class Opener:
    """One conversation opener: the root utterance of a ConvoKit conversation."""

    id: str
    text: str
    split: str
    topic: str | None
    conversation_id: str


def hash_split(key: str, eval_fraction: float = EVAL_FRACTION) -> str:
    """Deterministic ``"train"``/``"eval"`` assignment from a stable hash of ``key``.

    SHA-1 rather than ``hash()`` because Python salts ``str`` hashes per process.
    """
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "eval" if bucket < eval_fraction else "train"


def convokit_data_dirs() -> list[Path]:
    """Directories where downloaded ConvoKit corpora may live, most specific first."""
    dirs: list[Path] = []
    home = os.environ.get("CONVOKIT_HOME")
    if home:
        dirs += [Path(home).expanduser(), Path(home).expanduser() / "saved-corpora"]
    config_dir = _configured_data_dir()
    if config_dir is not None:
        dirs.append(config_dir)
    dirs.append(Path("~/.convokit/saved-corpora").expanduser())
    # downloaded.txt remembers custom download locations (download(..., data_dir=...)).
    for base in list(dirs):
        dirs += _recorded_download_dirs(base)
    return _unique(dirs)


def available_corpora() -> list[str]:
    """``"builtin"`` plus the names of ConvoKit corpora already downloaded on this machine."""
    names: set[str] = set()
    for data_dir in convokit_data_dirs():
        if not data_dir.is_dir():
            continue
        with contextlib.suppress(OSError):
            for child in data_dir.iterdir():
                if child.name != "downloads" and _corpus_dir_in(child) is not None:
                    names.add(child.name)
    names.discard(BUILTIN)
    return [BUILTIN, *sorted(names)]


def resolve_corpus(source: str | os.PathLike[str] = BUILTIN) -> Path:
    """Turn a ``prompts`` value into a local ConvoKit corpus directory, without downloading.

    ``source`` is ``"builtin"``, a corpus directory (or its ``utterances.jsonl``), or the
    name of a ConvoKit corpus already downloaded (e.g. ``"reddit-corpus-small"``).
    """
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            f"prompts must be 'builtin', a ConvoKit corpus name or a directory path, "
            f"got {type(source).__name__}: {source!r}"
        )
    text = os.fspath(source)
    if not text.strip():
        raise ValueError("prompts must not be empty: use 'builtin', a corpus name or a path")
    if text == BUILTIN:
        if _corpus_dir_in(BUILTIN_DIR) is None:
            raise ValueError(
                f"prompts='builtin': the shipped corpus is missing from {BUILTIN_DIR}; "
                "rebuild it with `python -m redteam_gym.prompts.build_builtin`"
            )
        return BUILTIN_DIR

    path = Path(text).expanduser()
    if path.exists():
        found = _corpus_dir_in(path.parent if path.is_file() else path)
        if found is None:
            raise ValueError(
                f"prompts={text!r} exists but is not a ConvoKit corpus directory "
                f"(no {' or '.join(_UTTERANCE_FILES)} in it)"
            )
        return found.resolve()
    if _looks_like_path(text):
        raise ValueError(f"prompts={text!r}: no such corpus directory")

    tried: list[str] = []
    for data_dir in convokit_data_dirs():
        candidate = data_dir / text
        tried.append(str(candidate))
        found = _corpus_dir_in(candidate)
        if found is not None:
            return found.resolve()
    raise ValueError(
        f"prompts={text!r} is not 'builtin', an existing directory, or a ConvoKit corpus "
        f"downloaded on this machine (looked in: {', '.join(tried)}); nothing is downloaded "
        f"automatically: {_DOWNLOAD_HINT.format(name=text)}. "
        f"Available here: {', '.join(available_corpora())}"
    )


def load_openers(
    source: str | os.PathLike[str] = BUILTIN,
    split: str | None = "train",
    *,
    max_chars: int | None = DEFAULT_MAX_CHARS,
) -> list[Opener]:
    """Conversation openers of a ConvoKit corpus, sorted by id.

    Args:
        source: ``"builtin"``, a ConvoKit corpus directory, the name of a ConvoKit
            corpus already downloaded (never downloaded here), a JSONL file of prompts:
            one object per line with ``prompt`` (or ``text``), and optionally ``id``,
            ``split`` and ``topic``, or a local Hugging Face dataset with the same columns
            (a ``save_to_disk`` directory, or a ``.json``/``.csv``/``.parquet`` file; see
            ``redteam_gym.hf_datasets``).
        split: ``"train"``, ``"eval"`` or ``None`` for both. The corpus's own ``split``
            meta is used where it has one, else a stable hash of the conversation id
            (20% eval).
        max_chars: openers longer than this are cut (at a word boundary where one is
            near); ``None`` keeps them whole.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    if max_chars is not None and (
        isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1
    ):
        raise ValueError(f"max_chars must be a positive int or None, got {max_chars!r}")
    prompt_file = _prompt_file(source)
    if prompt_file is not None:
        openers = _openers_of_prompt_file(str(prompt_file))
    elif is_local_dataset(source):
        openers = _openers_of_dataset(str(Path(os.fspath(source)).expanduser().resolve()))
    else:
        openers = _openers_of_dir(str(resolve_corpus(source)))
    chosen = [o for o in openers if split is None or o.split == split]
    if not chosen:
        raise ValueError(
            f"prompts={os.fspath(source)!r} has no usable openers"
            + (f" in split={split!r}" if split is not None else "")
        )
    if max_chars is None:
        return chosen
    return [_truncated(o, max_chars) for o in chosen]


def clear_cache() -> None:
    """Forget corpora loaded so far (e.g. after rewriting a corpus directory)."""
    _openers_of_dir.cache_clear()
    _openers_of_prompt_file.cache_clear()


def _prompt_file(source: Any) -> Path | None:
    """`source` as a JSONL file of prompts (not a ConvoKit utterances file), or None."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(os.fspath(source)).expanduser()
    if path.suffix == ".jsonl" and path.is_file() and path.name not in _UTTERANCE_FILES:
        return path.resolve()
    return None


@functools.lru_cache(maxsize=8)
def _openers_of_prompt_file(path: str) -> tuple[Opener, ...]:
    """The prompts of a JSONL file as openers (a file of prompts is a corpus of one-message
    conversations). Errors name the file and the line."""
    openers = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"prompt file {path} is not UTF-8 text ({exc})") from None
    for k, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"prompt file {path}, line {k}: not JSON ({exc})") from None
        openers.append(
            _opener_of_row(item, f"prompt file {path}, line {k}", f"{Path(path).stem}:{k}")
        )
    return tuple(sorted(openers, key=lambda o: o.id))


def _opener_of_row(item: Any, where: str, default_id: str) -> Opener:
    """A prompt file's line, or a dataset's row, as an opener: its text in `prompt` (or
    `text`), and optionally `id`, `split` (ours, or another corpus's label) and `topic`."""
    text = item.get("prompt", item.get("text")) if isinstance(item, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: needs an object with a non-empty 'prompt' (or 'text') string")
    pid = str(item["id"]) if item.get("id") is not None else default_id
    label = item.get("split")
    split = _SPLIT_ALIASES.get(label.strip().lower(), label) if isinstance(label, str) else None
    split = split or hash_split(pid)
    if split not in SPLITS:
        raise ValueError(f"{where}: split must be one of {SPLITS}, got {label!r}")
    return Opener(pid, text.strip(), split, item.get("topic"), pid)


@functools.lru_cache(maxsize=8)
def _openers_of_dataset(path: str) -> tuple[Opener, ...]:
    """The rows of a local Hugging Face dataset as openers (`redteam_gym.hf_datasets`)."""
    from redteam_gym.hf_datasets import dataset_rows

    name = Path(path).stem
    openers = [
        _opener_of_row(row, f"dataset {path}, row {k}", f"{name}:{k}")
        for k, row in enumerate(dataset_rows(path))
    ]
    return tuple(sorted(openers, key=lambda o: o.id))


@functools.lru_cache(maxsize=8)
def _openers_of_dir(corpus_dir: str) -> tuple[Opener, ...]:
    """All openers of one corpus directory, both splits, untruncated.

    Cached per resolved directory because convokit import + load costs seconds; only
    the openers are kept, not the Corpus, so a big corpus does not stay in memory.
    """
    corpus = _load_corpus(corpus_dir)
    roots: dict[str, Any] = {}
    for utt in corpus.iter_utterances():
        cid = utt.conversation_id if utt.conversation_id is not None else utt.id
        best = roots.get(cid)
        if best is None or _root_rank(utt, cid) < _root_rank(best, cid):
            roots[cid] = utt

    openers = []
    for cid, utt in roots.items():
        convo_meta = _conversation_meta(corpus, cid)
        text = _opener_text(utt.text, convo_meta.get("title"))
        if text is None:
            continue
        openers.append(
            Opener(
                id=str(utt.id),
                text=text,
                split=_split_of(utt.meta, convo_meta, cid),
                topic=_topic_of(utt.meta, convo_meta),
                conversation_id=str(cid),
            )
        )
    openers.sort(key=lambda o: (o.id, o.conversation_id))
    logger.debug("loaded %d openers from %s", len(openers), corpus_dir)
    return tuple(openers)


def _load_corpus(corpus_dir: str) -> Any:
    # Imported here: convokit pulls in sklearn/scipy/pandas (~2.5 s), too slow for import time.
    from convokit import Corpus

    chatter = io.StringIO()
    # convokit print()s (e.g. when it writes ~/.convokit/config.yml on first use); keep
    # stdout clean for CLI output. The mem backend is forced because CONVOKIT_BACKEND=db
    # would otherwise send a read-only load to MongoDB.
    try:
        with contextlib.redirect_stdout(chatter):
            corpus = Corpus(filename=corpus_dir, backend="mem")
    except Exception as exc:  # convokit's errors name neither the file nor the line
        # find the bad file only now: a big corpus is not parsed twice when it is fine
        _check_corpus_files(Path(corpus_dir))
        raise ValueError(
            f"prompts corpus {corpus_dir}: ConvoKit could not read it ({type(exc).__name__}: {exc})"
        ) from exc
    if chatter.getvalue().strip():
        logger.info("convokit: %s", chatter.getvalue().strip())
    return corpus


def _check_corpus_files(corpus_dir: Path) -> None:
    """Raise a `ValueError` naming the first unreadable file (and line) of a corpus."""
    for path in sorted(corpus_dir.iterdir()):
        if path.suffix not in (".json", ".jsonl") or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"prompts corpus file {path} is unreadable ({exc})") from exc
        if path.suffix == ".json":
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"prompts corpus file {path} is not valid JSON ({exc})"
                    + (": it ends early (truncated?)" if exc.pos >= len(text.rstrip()) else "")
                ) from exc
            continue
        lines = text.split("\n")
        for k, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                cut = k == len(lines) - 1
                raise ValueError(
                    f"prompts corpus file {path}, line {k + 1}: not valid JSON ({exc})"
                    + (
                        "; it is the last line and has no newline: the file is truncated"
                        if cut
                        else ""
                    )
                ) from exc
            if path.name.startswith("utterances") and not (
                isinstance(record, dict) and "id" in record and "text" in record
            ):
                raise ValueError(
                    f"prompts corpus file {path}, line {k + 1}: an utterance needs 'id' and "
                    f"'text' fields, got {sorted(record) if isinstance(record, dict) else record!r}"
                )


def _root_rank(utt: Any, cid: str) -> tuple[int, int, int, float, str]:
    """Sort key: smaller means more likely the conversation's first utterance."""
    timestamp = _as_float(utt.timestamp)
    return (
        0 if utt.reply_to is None else 1,
        0 if utt.id == cid else 1,
        0 if timestamp is not None else 1,
        timestamp if timestamp is not None else 0.0,
        str(utt.id),
    )


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _conversation_meta(corpus: Any, cid: str) -> dict[str, Any]:
    try:
        return dict(corpus.get_conversation(cid).meta)
    except KeyError:
        return {}


def _opener_text(text: Any, title: Any) -> str | None:
    """Root text, with the post title in front where the corpus keeps one (Reddit)."""
    body = _usable(text)
    head = _usable(title)
    if head and body and not body.startswith(head):
        return f"{head}\n\n{body}"
    return body or head


def _usable(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    stripped = value.strip()
    if not stripped or stripped.lower() in _GONE_TEXTS:
        return None
    return stripped


def _split_of(utt_meta: Any, convo_meta: dict[str, Any], cid: str) -> str:
    for meta in (utt_meta, convo_meta):
        label = meta.get("split") if meta is not None else None
        if isinstance(label, str) and label.strip().lower() in _SPLIT_ALIASES:
            return _SPLIT_ALIASES[label.strip().lower()]
    return hash_split(str(cid))


def _topic_of(utt_meta: Any, convo_meta: dict[str, Any]) -> str | None:
    for key in ("topic", "subreddit"):
        for meta in (utt_meta, convo_meta):
            value = meta.get(key) if meta is not None else None
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def _truncated(opener: Opener, max_chars: int) -> Opener:
    if len(opener.text) <= max_chars:
        return opener
    cut = opener.text[:max_chars]
    # Back off to a word boundary only when one is close, so a long unbroken token
    # still yields max_chars characters rather than almost nothing.
    space = cut.rfind(" ")
    if space >= max_chars * 0.8:
        cut = cut[:space]
    return Opener(
        id=opener.id,
        text=cut.rstrip(),
        split=opener.split,
        topic=opener.topic,
        conversation_id=opener.conversation_id,
    )


def _corpus_dir_in(path: Path) -> Path | None:
    """``path`` itself, or a same-named child (some ConvoKit zips nest one), if a corpus."""
    for candidate in (path, path / path.name):
        if any((candidate / name).is_file() for name in _UTTERANCE_FILES):
            return candidate
    return None


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or text.startswith(("~", "."))
    )


def _configured_data_dir() -> Path | None:
    """``data_directory`` from ~/.convokit/config.yml, read without creating the file.

    ``convokit.ConvoKitConfig()`` would write a default config when it is missing.
    """
    config = Path("~/.convokit/config.yml").expanduser()
    if not config.is_file():
        return None
    try:
        import yaml

        contents = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except Exception:  # a broken user config must not break loading the builtin corpus
        logger.debug("could not read %s", config, exc_info=True)
        return None
    value = contents.get("data_directory") if isinstance(contents, dict) else None
    return Path(value).expanduser() if isinstance(value, str) and value else None


def _recorded_download_dirs(data_dir: Path) -> list[Path]:
    record = data_dir / "downloads" / "downloaded.txt"
    if not record.is_file():
        return []
    dirs = []
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in record.read_text(encoding="utf-8").splitlines():
            parts = line.split("$#$")
            if len(parts) == 3 and parts[1]:
                dirs.append(Path(parts[1]).expanduser())
    return dirs


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: set[str] = set()
    out = []
    for path in paths:
        key = os.path.normpath(str(path))
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out
