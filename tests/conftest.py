"""Shared fixtures: tiny random-weight models on the real SmolLM2 tokenizer, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
    from benchmarks.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-lm"))


def on_grid(weight: Any, seed: int = 0) -> Any:
    """A weight of `weight`'s shape whose every group of 32 inputs is `scale * q + min`, q in
    0..15, with 0 and 15 in every group (as in a Q4_1 block)."""
    import torch

    out_features, in_features = weight.shape
    g = torch.Generator().manual_seed(seed)
    groups = in_features // 32
    codes = torch.randint(0, 16, (out_features, groups, 32), generator=g)
    codes[..., 0], codes[..., 1] = 0, 15
    scale = torch.rand(out_features, groups, 1, generator=g) * 0.02 + 1e-3
    minimum = -torch.rand(out_features, groups, 1, generator=g) * 0.1
    return (codes * scale + minimum).reshape(out_features, in_features)


def snap_to_grid(model: Any) -> list[str]:
    """Put every bias-free linear layer but the output layer on a 4-bit grid; their names."""
    import torch

    names = []
    with torch.no_grad():
        for name, module in model.named_modules():
            if type(module) is torch.nn.Linear and name != "lm_head":
                module.weight.copy_(on_grid(module.weight, seed=len(names)))
                names.append(name)
    return names


@pytest.fixture(scope="session")
def tiny_q4_dir(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> Path:
    """The tiny model with every decoder linear layer on a 4-bit grid of groups of 32 (as a
    Q4_1 GGUF's are) and its output layer off it, saved with the tiny model's tokenizer."""
    import shutil

    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("tiny-q4")
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    snap_to_grid(model)
    model.save_pretrained(path)
    for item in tiny_lm_dir.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(item, path / item.name)
    return path


def tiny_config(cls: type, tiny_lm_dir: Path, **extra: Any) -> Any:
    """A learner config (`cls`: A2CConfig, PPOConfig, ...) of the tests' size: the tiny model as
    adversary and defender, 2 dialogues of 2 turns, 4-token utterances and replies, a small
    critic, and for the PPO family one epoch of 2 minibatches; `extra` replaces any field."""
    from agents import A2CConfig

    kwargs: dict[str, Any] = dict(
        max_turns=2,
        batch_size=2,
        adversary_model=str(tiny_lm_dir),
        defender=str(tiny_lm_dir),
        max_new_tokens=4,
        defender_max_new_tokens=4,
        critic_hidden_size=16,
        actor_lr=1e-3,
        critic_lr=1e-3,
    )
    if cls is not A2CConfig:
        kwargs.update(num_minibatches=2, ppo_epochs=1)
    return cls(**{**kwargs, **extra})


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
