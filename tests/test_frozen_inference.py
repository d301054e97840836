"""The frozen-inference benchmark's accounting, modes and worker protocol, on the tiny model
(no timing is asserted, and nothing needs the llama.cpp venv)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from benchmarks.perf.frozen_inference import (
    MODES,
    Pass,
    Side,
    agreement,
    check_equal_work,
    conversations,
    defender_prompts,
    forced_passes,
    greedy_replies,
    load_defender,
    parse_args,
    rates,
    render_report,
)


def _side(name: str, batches: dict[int, list[list[list[int]]]]) -> Side:
    side = Side(name)
    side.add(
        {
            "batches": {
                str(b): [{"seconds": 2.0, "prefill_seconds": 0.5, "tokens": t} for t in passes]
                for b, passes in batches.items()
            }
        }
    )
    return side


def test_prompts_are_what_the_envs_defender_reads(tiny_lm_dir: Path) -> None:
    from redteam_gym.envs import EnvConfig
    from redteam_gym.models import ChatLM
    from redteam_gym.transcript import ADVERSARY, OPENER, thread_view

    transcripts = conversations(3)
    assert [m["role"] for m in transcripts[0]] == [OPENER, ADVERSARY]
    assert len({t[0]["content"] for t in transcripts}) == 3  # three different openers
    config = EnvConfig(defender=str(tiny_lm_dir))
    chat = ChatLM.from_pretrained(
        str(tiny_lm_dir), thread=config.thread_format(), system_prompt=None
    )
    assert defender_prompts(chat.tokenizer, transcripts) == [
        chat.encode(thread_view(t)) for t in transcripts
    ]
    assert str(chat.tokenizer.decode(defender_prompts(chat.tokenizer, transcripts)[0])).startswith(
        "A thread from an anonymous internet forum.\n\nOP:"
    )


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_replies_at_the_forced_length(
    tiny_lm_dir: Path, tiny_q4_dir: Path, mode: str
) -> None:
    import torch

    from redteam_gym.models.int4 import Int4Linear

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quantising and decoding leak no warning to the user
        q4 = mode.startswith("int4")
        model, tokenizer = load_defender(mode, str(tiny_q4_dir if q4 else tiny_lm_dir))
        prompts = defender_prompts(tokenizer, conversations(4))
        batches = forced_passes(
            model, prompts, 5, [1, 2], pad_token_id=tokenizer.pad_token_id, repeats=2, warmup=1
        )
    side = Side(f"ours {mode}")
    side.add({"batches": batches})
    assert sorted(side.passes) == [1, 2] and all(len(p) == 2 for p in side.passes.values())
    assert check_equal_work([side], conversations=4, new_tokens=5) == 20
    int8 = torch.ao.nn.quantized.dynamic.Linear
    body = isinstance(model.model.layers[0].self_attn.q_proj, int8)
    head = isinstance(model.lm_head, int8)
    if mode == "bf16":
        assert model.lm_head.weight.dtype == torch.bfloat16 and not body
    elif q4:
        assert isinstance(model.model.layers[0].self_attn.q_proj, Int4Linear)
        assert model.lm_head.dense.dtype == torch.bfloat16
        rest = torch.float32 if mode == "int4" else torch.bfloat16
        assert model.model.norm.weight.dtype == rest
    elif mode.startswith("int8"):
        assert body and all(
            isinstance(getattr(model.model.layers[1].mlp, n), int8)
            for n in ("gate_proj", "up_proj", "down_proj")
        )
        assert head == (mode == "int8")
    else:
        assert model.lm_head.weight.dtype == torch.float32 and not body and not head


def test_quantising_leaves_the_shared_defender_alone(tiny_lm_dir: Path) -> None:
    from redteam_gym.models import load_causal_lm

    shared, _ = load_causal_lm(str(tiny_lm_dir), device="cpu", dtype="float32")
    load_defender("int8", str(tiny_lm_dir))
    assert type(shared.lm_head).__name__ == "Linear"


def test_greedy_env_replies_agree_with_themselves(tiny_lm_dir: Path) -> None:
    model, tokenizer = load_defender("fp32", str(tiny_lm_dir))
    transcripts = conversations(3, start=5)
    first = greedy_replies(model, tokenizer, transcripts, batch_size=2)
    assert len(first) == 3 and all(isinstance(r, str) for r in first)
    assert agreement(first, greedy_replies(model, tokenizer, transcripts)) == (3, 3)


def test_equal_work_names_the_side_that_differs() -> None:
    ours = _side("ours fp32", {1: [[[1, 2, 3], [4, 5, 6]]]})
    assert check_equal_work([ours], conversations=2, new_tokens=3) == 6
    short = _side("llama.cpp", {8: [[[1, 2, 3], [4, 5]]]})
    with pytest.raises(
        ValueError,
        match=r"llama\.cpp at batch 8, pass 0 generated 2 tokens for conversation 1, not 3",
    ):
        check_equal_work([ours, short], conversations=2, new_tokens=3)
    few = _side("ours bf16", {1: [[[1, 2, 3]]]})
    with pytest.raises(
        ValueError, match="ours bf16 at batch 1, pass 0 replied to 1 conversations, not 2"
    ):
        check_equal_work([few], conversations=2, new_tokens=3)


def test_rates_and_agreement_known_answers() -> None:
    p = Pass(seconds=3.0, prefill_seconds=1.0, tokens=[[1] * 5, [2] * 5])
    r = rates([p, p], batch=2)
    # 10 tokens, 2 of them from the prefill; 8 decoded in the 2 s after it
    assert r.decode_tokens_per_s == 4.0 and r.tokens == 10 and r.passes == 2
    assert r.seconds_per_reply == 1.5 and r.seconds_per_batch == 3.0
    assert rates([p], batch=1).seconds_per_batch == 1.5
    assert agreement([[1, 2], [3]], [[1, 2], [4]]) == (1, 2)
    with pytest.raises(ValueError, match="cannot pair 1 replies with 2"):
        agreement([[1]], [[1], [2]])


def _fake_worker(tmp_path: Path, result: object) -> Path:
    script = tmp_path / "worker.py"
    script.write_text(
        "import sys\n"
        "print('llama_model_loader: noise before the result')\n"
        f"print('RESULT ' + {json.dumps(json.dumps(result))})\n"
        "print('noise after', file=sys.stderr)\n",
        encoding="utf-8",
    )
    return script


def test_the_workers_result_line_is_parsed(tmp_path: Path) -> None:
    from benchmarks.perf import run_child

    tokens = [[1, 2, 3], [4, 5, 6]]
    result = {
        "batches": {"1": [{"seconds": 2.0, "prefill_seconds": 0.5, "tokens": tokens}]},
        "errors": {"8": "llama_decode returned 1"},
        "versions": {"llama-cpp-python": "0.3.36"},
        "n_vocab": 49152,
    }
    script = _fake_worker(tmp_path, result)
    side = Side("llama.cpp")
    side.add(run_child([sys.executable, str(script), "job.json"], "llama.cpp"))
    assert side.passes[1][0] == Pass(2.0, 0.5, tokens)
    assert side.errors == {8: "llama_decode returned 1"}
    assert side.versions == {"llama-cpp-python": "0.3.36"}
    assert check_equal_work([side], conversations=2, new_tokens=3) == 6


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({}, "needs 'batches'"),
        ({"batches": {"x": []}}, "batch size must be an integer, got 'x'"),
        ({"batches": {"1": []}}, "batch 1 has no passes"),
        ({"batches": {"1": [{"seconds": 1.0, "tokens": []}]}}, r"missing \['prefill_seconds'\]"),
        (
            {"batches": {"1": [{"seconds": 1.0, "prefill_seconds": 2.0, "tokens": []}]}},
            "prefill_seconds 2.0 exceeds seconds 1.0",
        ),
        (
            {"batches": {"2": [{"seconds": 1.0, "prefill_seconds": 0.1, "tokens": [["a"]]}]}},
            "llama.cpp batch 2 pass 0: tokens must be a list of lists of token ids",
        ),
    ],
)
def test_a_malformed_result_is_named(result: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Side("llama.cpp").add(result)


def test_the_worker_checks_its_job(tmp_path: Path) -> None:
    from benchmarks.perf.llamacpp_worker import read_job

    good = {
        "gguf": "m.gguf",
        "prompts": [[1, 2], [3]],
        "new_tokens": 4,
        "batch_sizes": [1, 2],
        "threads": 1,
        "repeats": 1,
        "warmup": 0,
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(good))
    assert read_job(str(path)) == good
    changes: list[tuple[dict[str, Any], str]] = [
        ({"gguf": None}, r"missing \['gguf'\]"),
        ({"prompts": [[1], []]}, "'prompts' must be a non-empty list"),
        ({"new_tokens": 0}, "'new_tokens' must be an int >= 1"),
        ({"batch_sizes": [3]}, "batch size 3 must be >= 1 and divide the 2 prompts"),
    ]
    for change, message in changes:
        job = {k: v for k, v in {**good, **change}.items() if v is not None}
        path.write_text(json.dumps(job))
        with pytest.raises(ValueError, match=message):
            read_job(str(path))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--modes", "fp32,fp16"], "--modes: unknown ['fp16']"),
        (["--modes", "bf16"], "--modes must include fp32"),
        (["--conversations", "6"], "--conversations 6 must be a multiple of every batch size"),
        (["--new-tokens", "1"], "--new-tokens must be >= 2"),
        (["--batch-sizes", "0,8"], "--batch-sizes must be integers >= 1"),
        (["--batch-sizes", "one"], "expected comma-separated integers, got 'one'"),
    ],
)
def test_bad_arguments_are_named(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_the_report_compares_at_each_sides_best_batch() -> None:
    from benchmarks.perf.frozen_inference import Measurement

    args = parse_args(["--conversations", "8", "--new-tokens", "2", "--fidelity", "2"])
    tokens = [[1, 2]] * 8
    ours = _side("ours fp32", {1: [tokens], 8: [tokens]})
    ours.replies = ["a", "b"]
    bf16 = _side("ours bf16", {1: [tokens], 8: [[[1, 3], *tokens[1:]]]})
    bf16.replies = ["a", "c"]
    llama = _side("llama.cpp", {1: [tokens]})
    llama.errors[8] = "llama_decode returned 1"
    m = Measurement(
        sides=[ours, bf16, llama],
        prompt_lengths=[30, 40],
        example_prompt="A thread ...",
        judge={"1": [10.0], "8": [40.0]},
        judge_texts=8,
    )
    report = render_report(args, "python -m benchmarks.perf.frozen_inference", {"nproc": "2"}, m)
    assert "**Equal work:** every pass of every side generated 16 tokens" in report
    assert "llama.cpp could not run batch 8: llama_decode returned 1" in report
    assert "llama.cpp did not batch 8 as we do" in report
    assert "**Best of each** (goal: at least 0.8x llama.cpp at batch 8): llama.cpp" in report
    assert "ours fp32 " in report.split("**Best of each**")[1].split("\n")[0]
    assert "ours bf16 " in report.split("**Best of each**")[1].split("\n")[0]
    assert "| ours bf16 | 8 | 7/8 |" in report
    assert "| ours bf16 | 1/2 | 50% |" in report
    assert "| 8 | 40.0 |" in report


def test_ensure_venv_reuses_a_matching_venv_and_builds_otherwise(tmp_path, monkeypatch):
    import benchmarks.perf as perf

    calls = []
    monkeypatch.setattr(perf.subprocess, "run", lambda cmd, check: calls.append(cmd))
    venv = tmp_path / "venv"
    venv.mkdir()  # the faked `python -m venv` makes nothing
    python = perf.ensure_venv(venv, ["a==1", "torch==2"], first=["torch==2"])
    assert python == venv / "bin" / "python"
    assert (
        calls[0][1:3] == ["-m", "venv"]
        and calls[1][-1] == "torch==2"
        and calls[2][-2:] == ["a==1", "torch==2"]
    )
    (venv / "bin").mkdir()
    python.write_text("")
    calls.clear()
    assert perf.ensure_venv(venv, ["a==1", "torch==2"]) == python and calls == []
    perf.ensure_venv(venv, ["a==2"])  # other requirements: rebuilt
    assert calls[-1][-1] == "a==2"
