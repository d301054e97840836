"""The batch-invariance study (`benchmarks.studies.batch_invariance`): its checks count what
they say, on a defender whose replies depend on batching and caching by construction."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.studies import batch_invariance


class BatchTell:
    """Replies that say whether they were asked in a batch and from a kept cache."""

    def __init__(self) -> None:
        self.cache: object = None

    def clear_cache(self) -> None:
        self.cache = None

    def respond(self, chats: list[list[dict[str, str]]]) -> list[str]:
        kept = self.cache is not None
        self.cache = chats
        return [f"{chat[-1]['content']} batched={len(chats) > 1} cached={kept}" for chat in chats]


def test_checks_count_identical_replies() -> None:
    result = batch_invariance.checks(BatchTell(), ["a", "b", "c"], ["d", "e", "f"])
    assert batch_invariance.identical(result["twice"]) == 3
    assert batch_invariance.identical(result["one by one"]) == 0
    assert batch_invariance.identical(result["cache"]) == 0
    # the second turn is the reply, then the next message as the user's
    assert result["cache"][0] == ("d batched=True cached=True", "d batched=True cached=False")
    single = batch_invariance.checks(BatchTell(), ["a"], ["b"])
    assert batch_invariance.identical(single["one by one"]) == 1  # a batch of one is alone
    with pytest.raises(ValueError, match="second messages"):
        batch_invariance.checks(BatchTell(), ["a", "b"], ["c"])


def test_report_shows_counts_and_a_differing_pair(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    argv = ["--weights", "x", "--conversations", "2", "--out", str(out)]
    batch_invariance.main(argv, make=lambda weights: BatchTell())
    report = out.read_text()
    assert "| x | 2/2 | 0/2 | 0/2 |" in report
    assert "batched=True cached=True" in report and "- x, cache:" in report
    assert "- x, twice:" not in report  # nothing differed there
    with pytest.raises(SystemExit):
        batch_invariance.main(["--conversations", "0"])


def test_dense_defender_is_reproducible_at_a_fixed_batching(tiny_lm_dir: Path) -> None:
    argv = ["--defender", str(tiny_lm_dir), "--weights", "dense", "--conversations", "3"]
    result = batch_invariance.main([*argv, "--max-new-tokens", "4"])["dense"]
    assert batch_invariance.identical(result["twice"]) == 3
    assert [len(result[check]) for check in batch_invariance.CHECKS] == [3, 3, 3]
