"""Faults: a defender or judge that raises, returns NaN or runs out of memory mid-batch; the
smaller-batch retry; corrupt checkpoints, corpora and prompt files.

The faulty components wrap the real (tiny) ones and fail once armed; the runner's batches
arm them from a given batch on, so earlier batches finish and stay on disk.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_config, write_tiny_suite

from benchmarks import runner
from benchmarks.runner import BatchError, evaluate, read_rollouts
from benchmarks.suites import load_suite
from redteam_gym.faults import ComponentError

BATCH, ROLLOUTS, TURNS = 2, 6, 1


class StubEmbedder:
    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        return np.eye(len(texts), 4) + 1.0


class Fault:
    """What goes wrong (``kind``), from which batch on, and for batches of which sizes."""

    def __init__(self, kind: str, from_batch: int = 0, above_size: int = 0) -> None:
        self.kind, self.from_batch, self.above_size = kind, from_batch, above_size
        self.armed = False
        self.sizes: list[int] = []

    def strikes(self, size: int) -> bool:
        self.sizes.append(size)
        return self.armed and size > self.above_size

    def error(self) -> BaseException:
        if self.kind == "oom":
            return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.kind == "memory":
            return MemoryError()
        return RuntimeError("backend crashed")


class FaultyJudge:
    def __init__(self, inner: Any, fault: Fault) -> None:
        self.inner, self.fault = inner, fault

    def score(self, conversations: list[Any]) -> Any:
        if self.fault.strikes(len(conversations)):
            if self.fault.kind == "nan":  # a judge that does not check its own output
                return SimpleNamespace(p_unsafe=np.full(len(conversations), np.nan))
            raise self.fault.error()
        return self.inner.score(conversations)


class FaultyDefender:
    def __init__(self, inner: Any, fault: Fault) -> None:
        self.inner, self.fault = inner, fault

    def respond(self, conversations: list[Any], generator: Any = None) -> list[Any]:
        if self.fault.strikes(len(conversations)):
            if self.fault.kind == "nan":
                return [float("nan")] * len(conversations)
            raise self.fault.error()
        return self.inner.respond(conversations, generator)


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> Path:
    return write_tiny_suite(
        tmp_path_factory.mktemp("suite"),
        tiny_lm_dir,
        name="tiny-faults",
        turns=TURNS,
        rollouts=ROLLOUTS,
        batch_size=BATCH,
        seed=5,
        max_new_tokens=4,
    )


def _faulty_eval(
    suite_file: Path,
    tiny_lm_dir: Path,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    component: str,
    fault: Fault,
    **kwargs: Any,
) -> dict[str, Any]:
    engine = runner.make_envs(load_suite(suite_file)).engine  # the env evaluate reuses
    wrapper = FaultyJudge if component == "judge" else FaultyDefender
    monkeypatch.setattr(engine, component, wrapper(getattr(engine, component), fault))
    real = runner.run_batch

    def arming(envs: Any, adversary: Any, suite: Any, batch: int, *args: Any) -> Any:
        fault.armed = batch >= fault.from_batch
        return real(envs, adversary, suite, batch, *args)

    monkeypatch.setattr(runner, "run_batch", arming)
    return evaluate(
        "zero-shot",
        suite_file,
        out,
        adversary_model=str(tiny_lm_dir),
        progress=False,
        embedding_model=StubEmbedder(),
        report=False,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("component", "kind", "message"),
    [
        ("judge", "raise", "the judge raised RuntimeError on 4 conversations: backend crashed"),
        ("judge", "nan", r"the judge returned P\(unsafe\) nan for conversation 0"),
        ("judge", "oom", "the judge ran out of memory .OutOfMemoryError: CUDA out of memory"),
        ("defender", "raise", "the defender raised RuntimeError on 2 conversations"),
        ("defender", "nan", "the defender returned float nan instead of a str reply"),
        ("defender", "memory", "the defender ran out of memory .MemoryError"),
    ],
)
def test_component_failure_names_the_batch_and_keeps_earlier_ones(
    suite_file: Path,
    tiny_lm_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    component: str,
    kind: str,
    message: str,
) -> None:
    with pytest.raises(BatchError, match=message) as caught:
        _faulty_eval(suite_file, tiny_lm_dir, tmp_path, monkeypatch, component, Fault(kind, 2))
    error = caught.value
    assert error.batch == 2 and error.component == component
    assert str(error).startswith("batch 2 (rollouts 4-5) failed: ")
    assert f"the 4 rollouts before it are saved in {tmp_path / 'rollouts.jsonl'}" in str(error)
    assert isinstance(error.__cause__, ComponentError)
    assert [r["rollout"] for r in read_rollouts(tmp_path)] == [0, 1, 2, 3]
    if kind in ("oom", "memory"):
        assert "--retry-smaller-batch" in str(error)  # says how to get past it


def test_out_of_memory_retries_at_halved_sizes(
    suite_file: Path,
    tiny_lm_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the defender fits one conversation at a time only: 2 -> 1 succeeds
    fault = Fault("oom", from_batch=1, above_size=1)
    with caplog.at_level(logging.WARNING, logger="redteam_gym.faults"):
        summary = _faulty_eval(
            suite_file,
            tiny_lm_dir,
            tmp_path / "retried",
            monkeypatch,
            "defender",
            fault,
            retry_smaller_batch=True,
        )
    assert summary["num_rollouts"] == ROLLOUTS
    assert [r["rollout"] for r in read_rollouts(tmp_path / "retried")] == list(range(ROLLOUTS))
    assert fault.sizes[-3:] == [2, 1, 1]  # batch 2: whole, then each half alone
    assert "the defender ran out of memory on 2 conversations at size(s) [2]" in caplog.text


def test_out_of_memory_at_every_size_gives_up(
    suite_file: Path, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = Fault("memory", from_batch=1)
    with pytest.raises(BatchError, match=r"batch 1 .* judge ran out of memory .* \[4, 2, 1\]"):
        _faulty_eval(
            suite_file,
            tiny_lm_dir,
            tmp_path,
            monkeypatch,
            "judge",
            fault,
            retry_smaller_batch=True,
        )
    assert [r["rollout"] for r in read_rollouts(tmp_path)] == [0, 1]


def test_a_failing_judge_stops_training_naming_the_update(tiny_lm_dir: Path, tmp_path: Path):
    from agents import PPO, PPOConfig
    from agents.common.base import UpdateError

    config = tiny_config(
        PPOConfig,
        tiny_lm_dir,
        max_turns=1,
        max_new_tokens=3,
        defender_max_new_tokens=3,
        critic_hidden_size=8,
        num_minibatches=1,
        save_every=1,
        retry_smaller_batch=True,  # retries out of memory only: a raise fails at once
    )
    learner = PPO(config)
    fault = Fault("raise")
    engine = learner.env.engine
    assert engine.retry_smaller_batch
    engine.judge = FaultyJudge(engine.judge, fault)
    real_collect = learner.collect_rollout

    def collect() -> Any:
        fault.armed = learner.update_idx >= 1  # the second update's rollout fails
        return real_collect()

    learner.collect_rollout = collect  # type: ignore[method-assign]
    with pytest.raises(UpdateError, match="update 2 of 3 failed: the judge raised RuntimeError"):
        learner.learn(3, run_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / "checkpoint" / "meta.json").read_text())["update"] == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_retry_smaller_batch_options() -> None:
    from agents import PPOConfig
    from agents.common.flags import config_from_args
    from redteam_cli import build_parser

    parser = build_parser()
    train = parser.parse_args(["train", "--updates", "1", "--out", "x", "--retry-smaller-batch"])
    assert config_from_args(PPOConfig, train).env.retry_smaller_batch
    assert not config_from_args(
        PPOConfig, parser.parse_args(["train", "--updates", "1", "--out", "x"])
    ).env.retry_smaller_batch
    assert parser.parse_args(["eval", "--retry-smaller-batch"]).retry_smaller_batch
    assert not parser.parse_args(["eval"]).retry_smaller_batch


# ----- corrupt checkpoints ------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> Path:
    from agents import PPO, PPOConfig

    config = tiny_config(
        PPOConfig,
        tiny_lm_dir,
        max_turns=1,
        max_new_tokens=3,
        defender_max_new_tokens=3,
        critic_hidden_size=8,
    )
    run = tmp_path_factory.mktemp("run")
    PPO(config).save(run)
    return run


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CORRUPTIONS = {
    "missing critic": (
        lambda c: (c / "critic.pt").unlink(),
        r"checkpoint .*checkpoint is incomplete: critic.pt missing",
    ),
    "missing actor": (
        lambda c: shutil.rmtree(c / "actor"),
        "is incomplete: actor missing",
    ),
    "truncated state": (
        lambda c: _truncate(c / "state.pt"),
        r"state.pt is truncated or corrupt \(\d+ bytes",
    ),
    "state of another kind": (
        lambda c: torch.save([1, 2], c / "state.pt"),
        "state.pt is not a learner state: it holds a list",
    ),
    "bad config json": (
        lambda c: (c / "config.json").write_text('{"max_turns": 1,'),
        "config.json is not readable JSON",
    ),
    "config of unknown fields": (
        lambda c: (c / "config.json").write_text('{"class": "PPOConfig", "colour": 1}'),
        r"config.json: not a valid PPOConfig: unknown PPOConfig fields: \['colour'\]",
    ),
    "truncated actor weights": (
        lambda c: _truncate(c / "actor" / "model.safetensors"),
        "model.safetensors is truncated or corrupt",
    ),
    "bad actor config": (
        lambda c: (c / "actor" / "config.json").write_text(""),
        r"actor/config.json is not readable JSON",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_checkpoint_names_the_file(saved_run: Path, tmp_path: Path, case: str) -> None:
    from agents import PPO
    from agents.common.checkpoint import CheckpointError

    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    corrupt, message = CORRUPTIONS[case]
    corrupt(run / "checkpoint")
    with pytest.raises(CheckpointError, match=message):
        PPO.load(run)


def test_train_resume_of_a_corrupt_checkpoint_is_a_clear_exit(saved_run: Path, tmp_path: Path):
    from redteam_cli import main

    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    _truncate(run / "checkpoint" / "state.pt")
    with pytest.raises(SystemExit, match=r"cannot resume .*state.pt is truncated or corrupt"):
        main(["train", "--algo", "ppo", "--updates", "2", "--out", str(run), "--resume"])


def test_a_save_killed_between_its_renames_loses_nothing(
    saved_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The one window of `save` without a `checkpoint/`: the old one is `.checkpoint-old`,
    the new one a temporary directory. Loading puts the old one back."""
    from agents import PPO
    from agents.common.checkpoint import OLD_CHECKPOINT

    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    (run / "checkpoint").rename(run / OLD_CHECKPOINT)
    shutil.copytree(run / OLD_CHECKPOINT, run / ".checkpoint-999-tmp")
    with caplog.at_level(logging.WARNING):
        learner = PPO.load(run)
    assert learner.update_idx == 0 and (run / "checkpoint" / "state.pt").is_file()
    assert "restored the previous checkpoint" in caplog.text
    learner.save(run)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"]  # stale temp dir gone


# ----- corrupt corpora and prompt files -------------------------------------------------------


@pytest.fixture()
def corpus_copy(tmp_path: Path) -> Path:
    from redteam_gym.prompts import BUILTIN_DIR, clear_cache

    copy = tmp_path / "corpus"
    shutil.copytree(BUILTIN_DIR, copy)
    yield copy
    clear_cache()


def test_truncated_corpus_names_file_and_line(corpus_copy: Path) -> None:
    from redteam_gym.prompts import load_openers

    utterances = corpus_copy / "utterances.jsonl"
    lines = utterances.read_text(encoding="utf-8").splitlines(keepends=True)
    utterances.write_text("".join(lines[:10]) + lines[10][:25], encoding="utf-8")
    with pytest.raises(ValueError, match=r"utterances.jsonl, line 11: not valid JSON .*truncated"):
        load_openers(str(corpus_copy))


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("conversations.json", '{"c1": {', r"conversations.json is not valid JSON .*ends early"),
        ("utterances.jsonl", "[1, 2]\n", r"line 1: an utterance needs 'id' and 'text'"),
        ("corpus.json", b"\xff\xfe\x00", "corpus.json is unreadable .*utf-8"),
    ],
)
def test_corrupt_corpus_file_is_named(
    corpus_copy: Path, file: str, content: str | bytes, message: str
) -> None:
    from redteam_gym.prompts import load_openers

    path = corpus_copy / file
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message):
        load_openers(str(corpus_copy))


def test_corrupt_few_shot_pool_names_the_line(tmp_path: Path) -> None:
    from agents.baselines.few_shot import load_successful_utterances

    good = {"turns": [{"adversary": "hi", "defender_p_unsafe": 0.9}]}
    pool = tmp_path / "rollouts.jsonl"
    pool.write_text(json.dumps(good) + '\n{"turns": [\n' + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match=r"few-shot pool .*rollouts.jsonl', line 2"):
        load_successful_utterances(pool)
    pool.write_text(json.dumps(good) + '\n{"turns": [')  # a torn last line is skipped
    assert load_successful_utterances(pool) == [("hi", 0.9)]
