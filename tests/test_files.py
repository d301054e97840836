"""redteam_gym.files: atomic writes (and the writers that use them), fsync, JSON lines, torn-tail repair."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from redteam_gym import files
from redteam_gym.files import atomic_write, fsync_tree, read_jsonl, repair_jsonl_tail


def _fail_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash at the worst moment: the new contents are written, the rename never happens."""

    def crash(src: object, dst: object) -> None:
        raise OSError("killed before the rename")

    monkeypatch.setattr(files.os, "replace", crash)


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.json"
    atomic_write(path, "first")
    atomic_write(path, b"second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]


def test_a_crash_before_the_rename_keeps_the_old_contents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.json"
    atomic_write(path, "old")
    _fail_rename(monkeypatch)
    with pytest.raises(OSError, match="killed"):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # temp file removed


def test_summary_report_and_config_writers_are_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents import PPOConfig
    from benchmarks.report import write_summary
    from benchmarks.runner import _check_or_write_settings

    write_summary(tmp_path, {"asr": 0.5})
    PPOConfig(max_turns=2).save(tmp_path / "config.json")
    _check_or_write_settings(tmp_path / "eval.json", {"suite": {}, "adversary": "a"}, False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    _fail_rename(monkeypatch)
    with pytest.raises(OSError):
        write_summary(tmp_path, {"asr": 0.9})
    with pytest.raises(OSError):
        PPOConfig(max_turns=3).save(tmp_path / "config.json")
    with pytest.raises(OSError):
        _check_or_write_settings(tmp_path / "eval.json", {"suite": {}, "adversary": "b"}, False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_fsync_tree_syncs_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "actor").mkdir()
    for name in ("state.pt", "config.json", "actor/model.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    synced: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(files.os, "fsync", recording)
    fsync_tree(tmp_path)
    for name in ("state.pt", "config.json", "actor/model.safetensors", "actor", "."):
        assert str((tmp_path / name).resolve()) in synced, name


def test_repair_cuts_a_torn_tail_with_a_notice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "metrics.jsonl"
    whole = json.dumps({"update": 1}) + "\n"
    path.write_text(whole)
    assert repair_jsonl_tail(path) == 0
    path.write_text(whole + '{"update": 2, "lo')
    with caplog.at_level(logging.WARNING):
        assert repair_jsonl_tail(path) == len('{"update": 2, "lo')
    assert path.read_text() == whole
    assert "torn last line" in caplog.text and str(path) in caplog.text
    path.write_text('{"upd')  # nothing whole at all
    repair_jsonl_tail(path)
    assert path.read_text() == ""


def test_metrics_resume_keeps_each_update_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agents.common.logger import trim_metrics

    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"update": u, "x": u}) + "\n" for u in (1, 2, 3)]
    path.write_text("".join(lines) + '{"update": 4, "x')
    with caplog.at_level(logging.WARNING):
        trim_metrics(path, 2)  # the checkpoint is update 2's: 3 is redone, 4 was torn
    assert path.read_text() == "".join(lines[:2])
    assert "torn last line" in caplog.text and "dropped 1 line(s)" in caplog.text
    path.write_text(lines[0] + "not json\n" + lines[1])
    with pytest.raises(ValueError, match="line 2 is not a metrics record"):
        trim_metrics(path, 2)


def test_read_jsonl_skips_blank_lines_and_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n   \n[2, "é"]\n', encoding="utf-8")
    assert read_jsonl(path) == [{"a": 1}, [2, "é"]]
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"rows\.jsonl:2: not JSON"):
        read_jsonl(path)
