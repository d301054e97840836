"""The PPO-vs-TRL benchmark's pieces: the floor's top-half pass and the report (no timing)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch


def test_top_half_logprobs_equal_the_full_forward(tiny_lm_dir: Path) -> None:
    """The floor's top-half pass from the boundary states gives the full model's logprobs."""
    from transformers import AutoModelForCausalLM

    from agents.common.policy import response_logprobs
    from benchmarks.perf.ppo_vs_trl import top_half_logprobs
    from redteam_gym.models import left_pad

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    prompts, responses = [[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14, 15, 16]]
    expected, _, _ = response_logprobs(model, prompts, responses, pad_token_id=0, full=True)
    rows = [p + r for p, r in zip(prompts, responses, strict=True)]
    input_ids, attention_mask = left_pad(rows, 0, model.device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
        )
        got = top_half_logprobs(model, out.hidden_states[1], attention_mask, position_ids, 1, 3)
    # the responses have equal lengths, so the right-aligned rows need no shift
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


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
