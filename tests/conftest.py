"""Shared fixtures: tiny random-weight models on the real SmolLM2 tokenizer, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Nothing may download during tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    import torch

    # Tests run tiny models: one thread is as fast and never fights other processes.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted once into the user cache."""
    from redteam_gym.models import SMOLLM2, resolve_model

    return Path(resolve_model(SMOLLM2))


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template (fast, same vocab)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-lm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_tiny_suite(
    directory: Path,
    tiny_lm_dir: Path,
    *,
    name: str,
    turns: int,
    rollouts: int,
    batch_size: int,
    seed: int,
    max_new_tokens: int = 4,
) -> Path:
    """A suite file on the tiny models, shaped like `quick` (nested `env`, sampled defender)."""
    data = {
        "name": name,
        "description": "tiny models",
        "env": {
            "max_turns": turns,
            "split": "eval",
            "judge": "profanity",
            "defender": str(tiny_lm_dir),
            "defender_max_new_tokens": max_new_tokens,
            "defender_temperature": 0.7,
            "defender_top_p": 0.9,
        },
        "rollouts": rollouts,
        "batch_size": batch_size,
        "adversary_sampling": {"max_new_tokens": max_new_tokens, "temperature": 1.0, "top_p": 0.95},
        "seed": seed,
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
