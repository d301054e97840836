"""Interruptions: SIGKILL mid-run then resume (no rollout lost or duplicated, checkpoint
whole), torn JSON-lines tails, and SIGINT's clean stop, for training and evaluation.

Runs are tiny (random 2-layer Llama, a few updates or conversations). The kills land at
fixed points (inside a checkpoint save, inside a rollouts append) so the tests check the
hard cases every time rather than wherever a timer happens to fall.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import write_tiny_suite

from benchmarks import runner
from benchmarks.runner import ROLLOUTS_FILE, evaluate, read_rollouts
from redteam_gym.interrupts import Interrupted

REPO = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",  # the same arithmetic in every process (and no oversubscription)
    "PYTHONPATH": str(REPO),
}
TURNS, ROLLOUTS, BATCH = 1, 8, 2


class StubEmbedder:
    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        return np.eye(len(texts), 4) + 1.0


def _train_argv(tiny_lm_dir: Path, out: Path, updates: int) -> list[str]:
    return [
        "train", "--algo", "ppo", "--updates", str(updates), "--turns", "1",
        "--batch-size", "2", "--max-new-tokens", "3", "--defender-max-new-tokens", "3",
        "--critic-hidden-size", "8", "--num-minibatches", "1", "--ppo-epochs", "1",
        "--adversary-model", str(tiny_lm_dir), "--defender", str(tiny_lm_dir),
        "--save-every", "1", "--out", str(out), "--no-progress",
    ]  # fmt: skip


def _python(code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _metrics(run: Path) -> list[dict[str, Any]]:
    """Each update's logged metrics, timings left out (they differ between runs)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines
    ]


# ----- training -----------------------------------------------------------------------------


def test_train_killed_mid_checkpoint_resumes_to_the_uninterrupted_run(
    tiny_lm_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from redteam_cli import main

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # in this process (one torch thread, as in the subprocesses): only the kill needs one
    assert main(_train_argv(tiny_lm_dir, straight, 3)) == 0

    # SIGKILL inside update 2's save: its critic.pt is written, its state.pt never is. By
    # then update 2's metrics line is logged, after the checkpoint of update 1.
    kill = (
        "import os, signal, torch\n"
        "real, calls = torch.save, []\n"
        "def save(obj, f, *a, **k):\n"
        "    calls.append(f)\n"
        "    if len(calls) == 4:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(obj, f, *a, **k)\n"
        "torch.save = save\n"
        "from redteam_cli import main\n"
        f"main({_train_argv(tiny_lm_dir, killed, 3)!r})\n"
    )
    result = _python(kill)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert json.loads((killed / "checkpoint" / "meta.json").read_text())["update"] == 1
    assert [m["update"] for m in _metrics(killed)] == [1, 2]  # update 2 logged, not saved
    assert list(killed.glob(".checkpoint-*-tmp"))  # the half-written save

    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main([*_train_argv(tiny_lm_dir, killed, 3), "--resume"]) == 0
    assert "Resuming ppo from update 1" in capsys.readouterr().out
    assert "dropped 1 line(s) logged after update 1" in caplog.text

    assert _metrics(killed) == _metrics(straight)  # each update once, with the same numbers
    for run_dir in (straight, killed):
        ckpt = run_dir / "checkpoint"
        assert sorted(p.name for p in ckpt.iterdir()) == sorted(
            ["actor", "config.json", "critic.pt", "meta.json", "state.pt"]
        )
        assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []
    a, b = (torch.load(d / "checkpoint" / "critic.pt") for d in (straight, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("model.safetensors", "config.json"):
        assert (straight / "checkpoint" / "actor" / name).read_bytes() == (
            killed / "checkpoint" / "actor" / name
        ).read_bytes()
    state = torch.load(killed / "checkpoint" / "state.pt", weights_only=False)
    assert state["update_idx"] == 3 and [h["update"] for h in state["history"]] == [1, 2, 3]


def test_train_sigint_finishes_the_update_and_saves(tiny_lm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "redteam_cli", *_train_argv(tiny_lm_dir, out, 500)]
    proc = subprocess.Popen(argv, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    metrics = out / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=240)
    stderr_text = stderr.decode()
    assert proc.returncode == 130, stderr_text[-2000:]
    assert "SIGINT: stopping after the update in flight" in stderr_text
    assert f"--out {out} --resume" in stderr_text
    saved = json.loads((out / "checkpoint" / "meta.json").read_text())["update"]
    assert 1 <= saved < 500
    assert [m["update"] for m in _metrics(out)] == list(range(1, saved + 1))


# ----- evaluation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> Path:
    return write_tiny_suite(
        tmp_path_factory.mktemp("suite"),
        tiny_lm_dir,
        name="tiny-interrupts",
        turns=TURNS,
        rollouts=ROLLOUTS,
        batch_size=BATCH,
        seed=7,
        max_new_tokens=4,
    )


def _eval_argv(suite_file: Path, tiny_lm_dir: Path, out: Path) -> list[str]:
    return [
        "eval", "--suite", str(suite_file), "--adversary-model", str(tiny_lm_dir),
        "--out", str(out), "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def straight_eval(
    tmp_path_factory: pytest.TempPathFactory, suite_file: Path, tiny_lm_dir: Path
) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("straight") / "eval"
    evaluate(
        "zero-shot",
        suite_file,
        out,
        adversary_model=str(tiny_lm_dir),
        progress=False,
        embedding_model=StubEmbedder(),
        report=False,
    )
    return read_rollouts(out)


def test_eval_killed_mid_write_resumes_to_the_uninterrupted_run(
    suite_file: Path,
    tiny_lm_dir: Path,
    straight_eval: list[dict[str, Any]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "killed"
    # SIGKILL in the middle of batch 2's append: rollout 4's line whole, rollout 5's torn
    kill = (
        "import json, os, signal, torch\n"
        "torch.set_num_threads(1)\n"
        "import benchmarks.runner as R\n"
        "real, calls = R.append_records, []\n"
        "def append(path, records):\n"
        "    calls.append(path)\n"
        "    if len(calls) == 3:\n"
        "        lines = [json.dumps(R.jsonable(r)) + '\\n' for r in records]\n"
        "        with open(path, 'a') as f:\n"
        "            f.write(lines[0] + lines[1][: len(lines[1]) // 2])\n"
        "            f.flush(); os.fsync(f.fileno())\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real(path, records)\n"
        "R.append_records = append\n"
        "from benchmarks.cli import main\n"
        f"main({_eval_argv(suite_file, tiny_lm_dir, out)!r})\n"
    )
    result = _python(kill)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    text = (out / ROLLOUTS_FILE).read_text()
    assert text.count("\n") == 5 and not text.endswith("\n")  # rollouts 0-4 and a torn 5

    with caplog.at_level(logging.WARNING, logger="benchmarks.records"):
        summary = evaluate(
            "zero-shot",
            suite_file,
            out,
            adversary_model=str(tiny_lm_dir),
            resume=True,
            progress=False,
            embedding_model=StubEmbedder(),
            report=False,
        )
    assert "dropped a torn last line" in caplog.text
    assert summary["resumed_rollouts"] == 5 and summary["new_rollouts"] == 3
    lines = (out / ROLLOUTS_FILE).read_text().splitlines()
    assert sorted(json.loads(line)["rollout"] for line in lines) == list(range(ROLLOUTS))
    assert read_rollouts(out) == straight_eval


def test_eval_sigint_finishes_the_batch_then_resumes(
    suite_file: Path,
    tiny_lm_dir: Path,
    straight_eval: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import redteam_gym.metrics.diversity as diversity
    from benchmarks.cli import main

    monkeypatch.setattr(diversity, "load_minilm", StubEmbedder)
    out = tmp_path / "stopped"
    real = runner.run_batch

    def ctrl_c_in_batch_1(envs: Any, adversary: Any, suite: Any, batch: int, *args: Any):
        if batch == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the batch runs
        return real(envs, adversary, suite, batch, *args)

    monkeypatch.setattr(runner, "run_batch", ctrl_c_in_batch_1)
    assert main(_eval_argv(suite_file, tiny_lm_dir, out)) == 130
    err = capsys.readouterr().err
    assert "SIGINT: stopping after the batch in flight" in err
    assert "eval stopped by SIGINT after batch 1: 4 of 8 rollouts saved" in err
    resume_line = err.strip().splitlines()[-1].strip()
    assert resume_line.startswith("redteam-gym eval ") and resume_line.endswith("--resume")
    assert [r["rollout"] for r in read_rollouts(out)] == [0, 1, 2, 3]  # batch 1 finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler removed

    monkeypatch.setattr(runner, "run_batch", real)
    assert main(shlex.split(resume_line)[1:]) == 0  # the printed command, as a user pastes it
    assert read_rollouts(out) == straight_eval


def test_api_sigint_raises_interrupted_after_the_batch(
    suite_file: Path, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = runner.run_batch

    def ctrl_c_in_batch_0(envs: Any, adversary: Any, suite: Any, batch: int, *args: Any):
        os.kill(os.getpid(), signal.SIGINT)
        return real(envs, adversary, suite, batch, *args)

    monkeypatch.setattr(runner, "run_batch", ctrl_c_in_batch_0)
    with pytest.raises(Interrupted, match=r"after batch 0: 2 of 8 rollouts saved .*resume=True"):
        evaluate(
            "zero-shot", suite_file, tmp_path, adversary_model=str(tiny_lm_dir), progress=False
        )
    assert isinstance(Interrupted("x"), KeyboardInterrupt)  # code unaware of it stops as usual
