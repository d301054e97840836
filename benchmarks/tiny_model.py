"""A tiny random-weight Llama for the fast tests and the fuzzer.

Two layers of width 32 behind a real tokenizer (SmolLM2's by default): prompts, chat
templates and special tokens are the real ones, and a forward pass costs next to nothing.
The tests' `tiny_lm_dir` fixture and `benchmarks.fuzz_env` build it here, so every tiny
model of the project is the same one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "[INST]",
    "[/INST]",
)
"""Special tokens of the Llama 3 variant (Llama 2's `[INST]` markers too, which Llama 2 itself
reads as text: special here, so that the checks would see them forge a turn)."""


def tiny_llama(tokenizer: Any, *, eos_token_id: int | list[int] | None = None, seed: int = 0):
    """A 2-layer random `LlamaForCausalLM` over `tokenizer`'s vocabulary, its weights drawn
    from `seed`; `eos_token_id` defaults to the tokenizer's."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

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
        eos_token_id=tokenizer.eos_token_id if eos_token_id is None else eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def build_tiny_model(path: Path, *, llama3: bool = False) -> Path:
    """`tiny_llama` with SmolLM2's tokenizer and ChatML template, saved to `path`; with
    `llama3`, the tokenizer also has `LLAMA3_SPECIAL_TOKENS` and the Llama 3 template."""
    from transformers import AutoTokenizer

    from redteam_gym.judges.llama_guard import LLAMA3_CHAT_TEMPLATE
    from redteam_gym.models import SMOLLM2, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(SMOLLM2))
    eos = [tokenizer.eos_token_id]
    if llama3:
        tokenizer.add_tokens(list(LLAMA3_SPECIAL_TOKENS), special_tokens=True)
        tokenizer.bos_token = "<|begin_of_text|>"
        tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
        eos.append(tokenizer.convert_tokens_to_ids("<|eot_id|>"))
    tiny_llama(tokenizer, eos_token_id=eos if llama3 else eos[0]).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
