"""4-bit weights for a frozen defender (`redteam_gym.models.int4`): only layers already on a
4-bit grid are packed, the product matches a dense one, and misuse fails with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import on_grid, snap_to_grid

from redteam_gym.models.int4 import (
    DENSE_FROM_ROWS,
    GROUP_SIZE,
    Bf16Linear,
    Int4Linear,
    int4_grid,
    quantize_int4,
)


def test_int4_grid_finds_the_grid_and_rejects_dense_weights() -> None:
    weight = on_grid(torch.empty(16, 64))
    codes, scale, minimum = int4_grid(weight)
    rebuilt = codes.float().reshape(16, 2, GROUP_SIZE) * scale[..., None] + minimum[..., None]
    torch.testing.assert_close(rebuilt.reshape(16, 64), weight, rtol=0, atol=1e-7)
    assert codes.dtype == torch.uint8 and int(codes.max()) == 15 and int(codes.min()) == 0
    assert int4_grid(torch.randn(16, 64)) is None  # dense weights: packing would change them
    assert int4_grid(on_grid(torch.empty(16, 64))[:, :48]) is None  # not whole groups


def test_int4_linear_matches_the_dense_product() -> None:
    weight = on_grid(torch.empty(48, 96), seed=1)
    layer = Int4Linear(*int4_grid(weight))
    x = torch.randn(3, 5, 96)
    out = layer(x)
    assert out.shape == (3, 5, 48) and out.dtype == torch.float32
    dense = x @ weight.t()
    # bf16 activations: about 3 significant digits, as a bf16 model's
    torch.testing.assert_close(out, dense, rtol=0, atol=2e-2 * float(dense.abs().max()))
    bf16 = (x.bfloat16() @ weight.bfloat16().t()).float()
    assert float((out - dense).abs().mean()) <= 2 * float((bf16 - dense).abs().mean()) + 1e-6
    # a prefill's many rows take the dense bf16 copy: the same product, to bf16 rounding
    many = torch.randn(DENSE_FROM_ROWS + 8, 96)
    rows = torch.cat([layer(many[i : i + 4]) for i in range(0, len(many), 4)])
    torch.testing.assert_close(layer(many), rows, rtol=0, atol=2e-2 * float(rows.abs().max()))


def test_quantize_int4_packs_the_grid_layers_only(tiny_lm_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    model.eval().requires_grad_(False)
    snapped = snap_to_grid(model)
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    bf16 = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    snap_to_grid(bf16)
    bf16.to(torch.bfloat16)
    with torch.no_grad():
        dense = model(input_ids=ids).logits
        dense_bf16 = bf16(input_ids=ids).logits.float()
    assert quantize_int4(model) == snapped
    assert type(model.lm_head) is Bf16Linear  # off the grid: dense, multiplied in bf16
    assert model.lm_head.dense.dtype == torch.bfloat16
    # the rest stays fp32: norms, embeddings (and so the residual stream and the KV cache)
    assert model.model.norm.weight.dtype == torch.float32
    assert model.model.embed_tokens.weight.dtype == torch.float32
    with torch.no_grad():
        packed = model(input_ids=ids).logits
    assert packed.dtype == torch.float32
    # the same weights: off the fp32 logits by what bf16 products cost, no more
    bf16_error = float((dense_bf16 - dense).abs().mean())
    assert float((packed - dense).abs().mean()) <= 2 * bf16_error + 1e-6


def test_quantize_int4_refuses_what_it_would_change(tiny_lm_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    with pytest.raises(ValueError, match="frozen"):
        quantize_int4(model)
    model.requires_grad_(False).to(torch.bfloat16)
    with pytest.raises(ValueError, match="fp32"):
        quantize_int4(model)
    dense = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    dense.requires_grad_(False)
    assert quantize_int4(dense) == []  # nothing on a grid: left as it was
    assert type(dense.lm_head) is torch.nn.Linear


def test_load_int4_shares_one_copy_apart_from_the_dense_model(
    tiny_lm_dir: Path, tiny_q4_dir: Path
) -> None:
    from redteam_gym.models import load_causal_lm

    with pytest.raises(ValueError, match="no linear layer"):
        load_causal_lm(str(tiny_lm_dir), device="cpu", weights="int4")
    packed, _ = load_causal_lm(str(tiny_q4_dir), device="cpu", weights="int4")
    again, _ = load_causal_lm(str(tiny_q4_dir), device="cpu", weights="int4")
    dense, _ = load_causal_lm(str(tiny_q4_dir), device="cpu")
    assert packed is again and packed is not dense
    assert isinstance(packed.model.layers[0].mlp.up_proj, Int4Linear)
    assert type(dense.model.layers[0].mlp.up_proj) is torch.nn.Linear
    with pytest.raises(ValueError, match="weights must be one of"):
        load_causal_lm(str(tiny_q4_dir), device="cpu", weights="int8")
    with pytest.raises(ValueError, match="frozen model on the CPU"):
        load_causal_lm(str(tiny_q4_dir), device="cpu", weights="int4", frozen=False)
    with pytest.raises(ValueError, match="cannot take dtype='bfloat16'"):
        load_causal_lm(str(tiny_q4_dir), device="cpu", weights="int4", dtype="bfloat16")


def test_env_runs_an_int4_defender(tiny_q4_dir: Path) -> None:
    import gymnasium as gym

    from redteam_gym.models.int4 import Int4Linear

    env = gym.make(
        "RedTeamDialogue-v0",
        defender=str(tiny_q4_dir),
        defender_weights="int4",
        judge="profanity",
        max_turns=1,
        defender_max_new_tokens=4,
    )
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step("What do you think of that?")
    assert (terminated or truncated) and isinstance(info["defender_response"], str)
    assert isinstance(env.unwrapped.engine.defender.model.model.layers[0].mlp.up_proj, Int4Linear)


def test_env_config_names_a_bad_defender_weights() -> None:
    from redteam_gym.envs.config import EnvConfig

    with pytest.raises(ValueError, match="defender_weights must be one of"):
        EnvConfig(defender_weights="q4")


def test_auto_weights_pack_only_what_lies_on_a_grid(tiny_lm_dir: Path, tiny_q4_dir: Path) -> None:
    from redteam_gym.envs.config import EnvConfig
    from redteam_gym.models import load_causal_lm

    assert EnvConfig().defender_weights == "auto"
    on_grid_model, _ = load_causal_lm(str(tiny_q4_dir), device="cpu", weights="auto")
    assert isinstance(on_grid_model.model.layers[0].mlp.up_proj, Int4Linear)
    dense, _ = load_causal_lm(str(tiny_lm_dir), device="cpu", weights="auto")
    assert type(dense.model.layers[0].mlp.up_proj) is torch.nn.Linear  # off the grid
    asked, _ = load_causal_lm(str(tiny_q4_dir), device="cpu", dtype="float32", weights="auto")
    assert type(asked.model.layers[0].mlp.up_proj) is torch.nn.Linear  # a dtype asked for
    trainable, _ = load_causal_lm(str(tiny_q4_dir), device="cpu", frozen=False, weights="auto")
    assert trainable.model.layers[0].mlp.up_proj.weight.requires_grad
