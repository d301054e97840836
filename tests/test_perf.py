"""The PPO-vs-TRL benchmark's report and arguments (no timing; its top-layers pass is the
learners', tested in test_dialogue_tokens.py)."""

from __future__ import annotations

import argparse

import pytest


def test_report_gives_both_ratios() -> None:
    from benchmarks.perf.ppo_vs_trl import parse_args, render_report

    args = parse_args(["--rounds", "1", "--updates", "2"])
    part = {"rollout_s": 1.0, "env_s": 0.2, "train_s": 2.0, "tokens": 20.0}
    results = {
        "trl": [{"seconds": [12.0, 12.0], "max_rss_mib": 4096, "versions": {"trl": "1.12.0"}}],
        "ours": [{"seconds": [3.0, 3.0], "parts": [part, part], "max_rss_mib": 2048}],
    }
    floor = {"floor_s": 2.5, "sample_s": 1.0, "reference_s": 0.3, "epoch_s": 0.3}
    report = render_report(args, "cmd", {"nproc": "2"}, results, floor)
    assert "**TRL / ours: 4.00x**" in report and "**Ours / floor: 1.20x**" in report


def test_bad_arguments_are_named() -> None:
    from benchmarks.perf.ppo_vs_trl import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--updates", "0"])
    assert isinstance(parse_args([]), argparse.Namespace)


def test_run_benchmark_measures_then_writes_the_report(tmp_path, capsys) -> None:
    from benchmarks.perf import RESULT_PREFIX, run_benchmark

    args = argparse.Namespace(out=tmp_path / "perf.md", torch_threads=None)
    seen = {}

    def render(command: str, info: dict[str, str], result: int) -> str:
        seen.update(info)
        return f"{command}: {result}\n"

    assert run_benchmark("benchmarks.perf.x", ["--n", "2"], args, lambda raw: len(raw), render) == 0
    assert (tmp_path / "perf.md").read_text() == "python -m benchmarks.perf.x --n 2: 2\n"
    assert "load average (1/5/15 min) at end" in seen and "cpu" in seen
    # a child process prints its result line alone, and writes no report
    (tmp_path / "perf.md").unlink()
    run_benchmark("benchmarks.perf.x", [], args, len, render, child=lambda: {"s": 1.5})
    assert capsys.readouterr().out.endswith(RESULT_PREFIX + '{"s": 1.5}\n')
    assert not (tmp_path / "perf.md").exists()


@pytest.mark.integration
@pytest.mark.served
@pytest.mark.ray
def test_scale_out_benchmark_runs_on_a_tiny_setting(tmp_path, smollm2_dir) -> None:
    pytest.importorskip("ray", reason="the `ray` extra is not installed")
    pytest.importorskip("openai", reason="the `serve` extra is not installed")
    from benchmarks.perf import scale_out
    from redteam_gym.served.local import transformers_cli

    if transformers_cli() is None:
        pytest.skip("`transformers serve` is not installed (transformers[serving])")
    out = tmp_path / "scale-out.md"
    tiny = ["--num-envs", "1", "--turns", "1", "--repeats", "1", "--replicas", "1"]
    assert scale_out.main([*tiny, "--defender-max-new-tokens", "2", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| in-process", "| served", "| ray"]
    assert all(r.endswith("| yes |") for r in rows[1:])  # the same greedy replies everywhere
    with pytest.raises(SystemExit):
        scale_out.parse_args(["--turns", "6"])


def test_eval_throughput_report_compares_each_weights_with_the_first() -> None:
    from benchmarks.perf.eval_throughput import parse_args, render_report

    args = parse_args(["--weights", "dense", "int4", "--rollouts", "2"])

    def run(rate: float, replies: list[list[str]]) -> dict:
        return {
            "rollouts_per_s": rate,
            "generation_s": 2 / rate,
            "wall_s": 2 / rate + 5,
            "max_rss_mib": 2048.0,
            "replies": replies,
            "command": "redteam-gym eval --adversary zero-shot",
        }

    runs = {
        "dense": [run(0.1, [["a", "b"], ["c", "d"]])],
        "int4": [run(0.25, [["a", "x"], ["c", "y"]])],
    }
    text = render_report(args, "cmd", {}, runs)
    assert "| int4 | 0.250 | 2.50x | 8.0 | 13.0 | 2.00 GiB | 2/4 |" in text
    assert "| dense | 0.100 | 1.00x |" in text


def test_learners_benchmark_takes_defender_weights() -> None:
    from benchmarks.perf.learners import parse_args

    assert parse_args(["--defender-weights", "dense", "int4"]).defender_weights == [
        "dense",
        "int4",
    ]
    with pytest.raises(SystemExit):
        parse_args(["--defender-weights", "int8"])


def test_learners_benchmark_counts_the_defenders_tokens() -> None:
    from benchmarks.perf.learners import _timed, parse_args, render_report

    class Words:
        def __call__(self, text, add_special_tokens=False):
            return type("Encoded", (), {"input_ids": text.split()})()

    seconds, tokens = [0.0], [0]
    info = {"defender_response": ["one two three", "", "four"]}
    step = _timed(lambda actions: (None, 0.0, False, False, info), seconds, tokens, Words())
    assert step([0, 1, 2])[-1] is info
    assert tokens == [4] and seconds[0] > 0
    update = {"rollout_s": 2.0, "env_s": 1.0, "train_s": 1.0, "tokens": 10.0}
    runs = [
        (
            "ppo",
            5,
            "dense",
            {"updates": [update, {**update, "defender_tokens": 40.0}], "max_rss_mib": 1024.0},
        ),
    ]
    text = render_report(parse_args([]), "cmd", {}, runs)
    assert "| ppo | 5 | dense | 3.0 | 2.0 | 1.0 | 1.0 | 3.0 | 10 | 40 | 1.00 GiB |" in text
