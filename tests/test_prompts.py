"""Tests for redteam_gym.prompts: the builtin ConvoKit corpus and the opener loader."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import pytest

from redteam_gym.prompts import (
    BUILTIN_DIR,
    EVAL_FRACTION,
    Opener,
    available_corpora,
    hash_split,
    load_openers,
    resolve_corpus,
)
from redteam_gym.prompts.build_builtin import SOURCE_FILE, read_openers


@pytest.fixture(scope="module")
def builtin() -> list[Opener]:
    """Every builtin opener, both splits; the corpus is loaded once for the module."""
    return load_openers("builtin", split=None, max_chars=None)


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME without CONVOKIT_HOME, so the machine's downloads cannot leak in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CONVOKIT_HOME", raising=False)
    return home


def _dump_corpus(
    base: Path, name: str, convos: list[list[dict]], convo_meta: dict[str, dict] | None = None
) -> Path:
    """Write a corpus with convokit itself; each convo is a list of utterance dicts."""
    from convokit import Corpus, Speaker, Utterance

    utterances = [
        Utterance(
            id=u["id"],
            speaker=Speaker(id=u.get("speaker", "someone")),
            conversation_id=u["conversation_id"],
            reply_to=u.get("reply_to"),
            timestamp=u.get("timestamp"),
            text=u["text"],
            meta=u.get("meta", {}),
        )
        for convo in convos
        for u in convo
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        corpus = Corpus(utterances=utterances, backend="mem")
    for cid, meta in (convo_meta or {}).items():
        for key, value in meta.items():
            corpus.get_conversation(cid).meta[key] = value
    base.mkdir(parents=True, exist_ok=True)
    corpus.dump(name, base_path=str(base))
    return base / name


def _thread(cid: str, root_text: str, *, ts: int = 100) -> list[dict]:
    """A root post plus one reply, the reply listed first to test root detection."""
    return [
        {
            "id": f"{cid}-r",
            "conversation_id": cid,
            "reply_to": cid,
            "timestamp": ts + 5,
            "text": f"reply in {cid}",
        },
        {"id": cid, "conversation_id": cid, "reply_to": None, "timestamp": ts, "text": root_text},
    ]


# --- the builtin corpus -------------------------------------------------------------


def test_builtin_is_a_convokit_corpus_matching_its_source(builtin: list[Opener]) -> None:
    from convokit import Corpus

    with contextlib.redirect_stdout(io.StringIO()):
        corpus = Corpus(filename=str(BUILTIN_DIR), backend="mem")
    convos = list(corpus.iter_conversations())
    assert len(convos) >= 400
    for convo in convos:
        (utt,) = list(convo.iter_utterances())
        assert utt.id == convo.id and utt.reply_to is None
        assert convo.meta["split"] == utt.meta["split"]
        assert convo.meta["topic"] == utt.meta["topic"]
    # The shipped directory must be rebuilt whenever the source file changes.
    if not SOURCE_FILE.is_file():  # an installed wheel ships only the built corpus
        return
    source = read_openers(SOURCE_FILE)
    assert [(r["id"], r["text"], r["split"], r["topic"]) for r in source] == [
        (o.id, o.text, o.split, o.topic) for o in builtin
    ]


def test_builtin_size_and_splits(builtin: list[Opener]) -> None:
    assert len(builtin) >= 400
    train = load_openers("builtin", split="train", max_chars=None)
    eval_ = load_openers("builtin", split="eval", max_chars=None)
    assert train and eval_
    assert {o.id for o in train}.isdisjoint(o.id for o in eval_)
    assert {o.id for o in train} | {o.id for o in eval_} == {o.id for o in builtin}
    assert abs(len(eval_) / len(builtin) - EVAL_FRACTION) < 0.05
    assert load_openers() == train  # defaults: builtin, train


def test_builtin_split_is_the_stable_hash_of_the_id(builtin: list[Opener]) -> None:
    assert all(o.split == hash_split(o.conversation_id) for o in builtin)


def test_builtin_texts_are_clean_and_unique(builtin: list[Opener]) -> None:
    normalized = [" ".join(o.text.lower().split()) for o in builtin]
    assert len(set(normalized)) == len(normalized)
    assert all(o.text.strip() == o.text and o.text for o in builtin)
    assert not any(o.text in ("[deleted]", "[removed]") for o in builtin)
    assert all(o.topic for o in builtin)
    assert len({o.topic for o in builtin}) >= 30
    assert len({o.id for o in builtin}) == len(builtin)


def test_order_is_deterministic(builtin: list[Opener]) -> None:
    ids = [o.id for o in builtin]
    assert ids == sorted(ids)
    assert load_openers("builtin", split=None, max_chars=None) == builtin


def test_opener_is_frozen(builtin: list[Opener]) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        builtin[0].text = "changed"  # type: ignore[misc]


def test_max_chars_truncates(builtin: list[Opener]) -> None:
    longest = max(builtin, key=lambda o: len(o.text))
    short = {o.id: o for o in load_openers("builtin", split=None, max_chars=60)}
    assert all(len(o.text) <= 60 for o in short.values())
    assert longest.text.startswith(short[longest.id].text)
    assert len(short[longest.id].text) >= 48  # cut at a nearby word boundary, not far back
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_chars"):
            load_openers("builtin", max_chars=bad)  # type: ignore[arg-type]


# --- other corpora ------------------------------------------------------------------


def test_directory_corpus_without_split_meta_gets_hash_split(tmp_path: Path) -> None:
    convos = [_thread(f"c{i:03d}", f"opener number {i}", ts=100 + i) for i in range(40)]
    convos.append(_thread("gone", "[deleted]"))
    convos.append(_thread("blank", "   "))
    corpus_dir = _dump_corpus(tmp_path, "plain", convos)

    everything = load_openers(str(corpus_dir), split=None)
    assert [o.id for o in everything] == [f"c{i:03d}" for i in range(40)]  # roots only
    assert all(o.text == f"opener number {int(o.id[1:])}" for o in everything)
    assert all(o.split == hash_split(o.conversation_id) for o in everything)
    assert all(o.topic is None for o in everything)
    train, eval_ = load_openers(corpus_dir, "train"), load_openers(corpus_dir, "eval")
    assert train and eval_ and len(train) + len(eval_) == 40


def test_corpus_split_and_reddit_fields_are_used(tmp_path: Path) -> None:
    convos = [
        _thread("a", "body of a"),
        _thread("b", "body of b"),
        _thread("c", ""),  # a link post: only the title says anything
        _thread("d", "body of d"),
    ]
    convos[0][1]["meta"] = {"split": "test", "subreddit": "Cooking"}
    meta = {
        "b": {"split": "train", "title": "Title of b"},
        "c": {"split": "val", "title": "Title of c"},
        "d": {"split": "mystery"},  # unknown label: falls back to the hash
    }
    corpus_dir = _dump_corpus(tmp_path, "reddit-like", convos, meta)
    by_id = {o.id: o for o in load_openers(corpus_dir, split=None)}
    assert by_id["a"].split == "eval" and by_id["a"].topic == "Cooking"
    assert by_id["b"].split == "train" and by_id["b"].text == "Title of b\n\nbody of b"
    assert by_id["c"].split == "eval" and by_id["c"].text == "Title of c"
    assert by_id["d"].split == hash_split("d")


def test_root_falls_back_to_earliest_utterance(tmp_path: Path) -> None:
    # A conversation cut out of a bigger thread: every utterance replies to something.
    convo = [
        {"id": "x2", "conversation_id": "x", "reply_to": "x1", "timestamp": 20, "text": "late"},
        {"id": "x1", "conversation_id": "x", "reply_to": "x0", "timestamp": 10, "text": "early"},
    ]
    corpus_dir = _dump_corpus(tmp_path, "cut", [convo])
    (opener,) = load_openers(corpus_dir, split=None)
    assert (opener.id, opener.text, opener.conversation_id) == ("x1", "early", "x")


def test_name_resolves_in_convokit_home(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "ck"
    _dump_corpus(data_dir, "tiny-corpus", [_thread(f"t{i}", f"tiny {i}") for i in range(12)])
    monkeypatch.setenv("CONVOKIT_HOME", str(data_dir))
    assert resolve_corpus("tiny-corpus") == (data_dir / "tiny-corpus").resolve()
    assert available_corpora() == ["builtin", "tiny-corpus"]
    assert len(load_openers("tiny-corpus", split=None)) == 12


def test_name_resolves_in_default_download_dir(isolated_home: Path) -> None:
    saved = isolated_home / ".convokit" / "saved-corpora"
    _dump_corpus(saved, "downloaded-one", [_thread("d0", "hello there")])
    assert [o.text for o in load_openers("downloaded-one", split=None)] == ["hello there"]
    assert "downloaded-one" in available_corpora()


def test_unknown_name_raises_without_downloading(isolated_home: Path) -> None:
    with pytest.raises(ValueError, match="prompts") as err:
        load_openers("reddit-corpus-small")
    message = str(err.value)
    assert "download('reddit-corpus-small')" in message
    assert str(isolated_home / ".convokit" / "saved-corpora" / "reddit-corpus-small") in message
    assert not (isolated_home / ".convokit" / "saved-corpora").exists()


@pytest.mark.parametrize("source", ["./no/such/dir", "", 42])
def test_bad_sources_raise(source: object) -> None:
    with pytest.raises(ValueError, match="prompts"):
        load_openers(source)  # type: ignore[arg-type]


def test_directory_that_is_not_a_corpus_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"prompts.*not a ConvoKit corpus"):
        load_openers(tmp_path)


@pytest.mark.parametrize("split", ["test", "TRAIN", "", 1])
def test_bad_split_raises(split: object) -> None:
    with pytest.raises(ValueError, match="split"):
        load_openers("builtin", split=split)  # type: ignore[arg-type]


def test_hash_split_is_stable() -> None:
    # Pinned values: a change here would silently reshuffle every hash-split corpus.
    assert [hash_split(f"builtin-{i:04d}") for i in (1, 2, 3)] == ["train", "eval", "eval"]
    share = sum(hash_split(f"k{i}") == "eval" for i in range(5000)) / 5000
    assert abs(share - EVAL_FRACTION) < 0.02
