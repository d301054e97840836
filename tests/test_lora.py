"""LoRA learners (peft) on a tiny random LM: the policy starts as the base, updates move only
adapters and critic, the reference is the base with the adapters off, checkpoints hold only
the adapters."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest
import torch
from conftest import tiny_config
from test_learners import LEARNERS

from agents import PPO, LoRAConfig, PPOConfig, load_adversary
from agents.common.checkpoint import CheckpointError
from agents.common.flags import add_flags, config_from_args
from agents.common.kl import kl_penalty
from agents.common.training import reference_distributions
from redteam_gym.envs.config import field_docs
from redteam_gym.models import load_causal_lm

LORA = LoRAConfig(rank=4, alpha=8)


def lora_config(cls, tiny_lm_dir, **extra):
    return tiny_config(cls, tiny_lm_dir, **{"lora": LORA, **extra})


def evaluate(learner, batch, **kwargs):
    with torch.no_grad():
        return learner.policy.evaluate_batch(batch, temperature=1.0, **kwargs)


@pytest.mark.parametrize("frozen_fraction", [0.5, 0.0])
def test_zero_b_starts_as_the_full_model_and_the_reference(tiny_lm_dir, frozen_fraction):
    """Known answer: with B at zero, the LoRA policy's logprobs are the full model's and the
    reference's, bit for bit: its first PPO ratios are the full model's (1 up to the sampler's
    rounding) and its KL to the reference is exactly 0, per token and over the vocabulary."""
    full = PPO(tiny_config(PPOConfig, tiny_lm_dir, frozen_fraction=frozen_fraction))
    lora = PPO(lora_config(PPOConfig, tiny_lm_dir, frozen_fraction=frozen_fraction))
    assert lora.policy.adapters is not None and full.policy.adapters is None
    # the bottom is shared where there is one: adapters sit above it
    assert lora.policy.shares_bottom == full.policy.shares_bottom == (frozen_fraction > 0)
    rollout = lora.collect_rollout()
    batch = rollout.to_batch()
    logprobs, values = evaluate(lora, batch)
    full_logprobs, full_values = evaluate(full, batch)
    assert torch.equal(logprobs, full_logprobs) and torch.equal(values, full_values)
    # the reference pass of the rollout ran with the adapters off: the same numbers
    assert torch.equal(batch.ref_logprobs, logprobs)
    assert torch.equal(kl_penalty(logprobs, batch.ref_logprobs), torch.zeros_like(logprobs))
    log_dist, _ = evaluate(lora, batch, full=True)
    ref_log_dist = reference_distributions(lora.ref_model, lora.policy, batch, temperature=1.0)
    assert torch.equal(log_dist, ref_log_dist)
    # PPO's first-epoch ratio against the sampler's logprobs: the full model's, and 1
    ratio = (logprobs - batch.logprobs).exp()
    assert torch.equal(ratio, (full_logprobs - batch.logprobs).exp())
    torch.testing.assert_close(ratio[batch.mask], torch.ones_like(ratio[batch.mask]))
    assert lora.train(rollout)["policy/clipfrac"] == 0.0


@pytest.mark.parametrize(("learner_cls", "config_cls"), LEARNERS)
def test_an_update_trains_only_adapters_and_critic(tiny_lm_dir, learner_cls, config_cls):
    learner = learner_cls(lora_config(config_cls, tiny_lm_dir))
    before = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
    trainable = {n for n, p in learner.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("critic.") for n in trainable)
    # adapters only above the frozen bottom (layer 0 of 2)
    assert all(".layers.1." in n for n in trainable if "lora_" in n)
    optimized = {
        id(p) for o in learner.optimizers.values() for g in o.param_groups for p in g["params"]
    }
    assert optimized == {id(p) for n, p in learner.policy.named_parameters() if n in trainable}
    learner.learn(1, progress=False)
    changed = {n for n, p in learner.policy.named_parameters() if not torch.equal(before[n], p)}
    assert any("lora_B" in n for n in changed)
    assert any(n.startswith("critic.") for n in changed)
    assert changed <= trainable  # every base weight is bit-identical


@pytest.fixture(scope="module")
def trained(tiny_lm_dir):
    """A LoRA PPO learner after one update (B no longer zero) and a rollout of it."""
    learner = PPO(lora_config(PPOConfig, tiny_lm_dir))
    learner.learn(1, progress=False)
    return learner, learner.collect_rollout()


def test_the_reference_is_the_untouched_base(trained, tiny_lm_dir):
    learner, rollout = trained
    base, _ = load_causal_lm(str(tiny_lm_dir), device="cpu", frozen=True)  # the defender's
    assert learner.ref_model is learner.policy.actor  # one copy of the weights
    batch = rollout.to_batch()
    policy = learner.policy
    ref_top = reference_distributions(learner.ref_model, policy, batch, temperature=1.0)
    policy_top, _ = evaluate(learner, batch, full=True)
    policy.shares_bottom = False  # whole forwards from here: the same numbers
    try:
        ref_whole = reference_distributions(learner.ref_model, policy, batch, temperature=1.0)
        base_whole = reference_distributions(base, policy, batch, temperature=1.0)
        policy_whole, _ = evaluate(learner, batch, full=True)
    finally:
        policy.shares_bottom = True
    assert torch.equal(ref_whole, base_whole)
    torch.testing.assert_close(ref_top, base_whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(policy_top, policy_whole, atol=1e-5, rtol=1e-5)
    # the rollout's reference logprobs are the base's; the trained policy's are not
    base_logprobs = base_whole.gather(-1, batch.tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(batch.ref_logprobs, base_logprobs, atol=1e-5, rtol=1e-5)
    assert (policy_whole - base_whole).abs().max() > 1e-3  # adapters back on after the block


def test_a_checkpoint_holds_only_the_adapters_and_restores_the_policy(trained, tmp_path):
    learner, rollout = trained
    run = tmp_path / "run"
    learner.save(run)
    actor = run / "checkpoint" / "actor"
    assert (actor / "adapter_config.json").is_file()
    assert not list(actor.glob("model*.safetensors")) and not (actor / "config.json").exists()
    assert (actor / "adapter_model.safetensors").stat().st_size < 100_000
    loaded = PPO.load(run)
    assert loaded.config.lora == learner.config.lora and loaded.policy.shares_bottom
    for (name, a), (_, b) in zip(
        learner.policy.state_dict().items(), loaded.policy.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    batch = rollout.to_batch()
    assert torch.equal(evaluate(learner, batch)[0], evaluate(loaded, batch)[0])
    assert isinstance(load_adversary(run).act(["[opener]\nWhat a day."])[0], str)
    with pytest.raises(CheckpointError, match="holds LoRA adapters"):
        PPO.load(run, lora={"rank": 0})
    weights = actor / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"adapter_model\.safetensors is truncated"):
        PPO.load(run)


def test_a_lora_run_resumes_as_if_uninterrupted(tiny_lm_dir, tmp_path):
    config = lora_config(PPOConfig, tiny_lm_dir, max_turns=1)
    straight = PPO(config).learn(2, progress=False)
    first = PPO(config)
    first.total_updates = 2
    first.learn(1, run_dir=tmp_path, progress=False)
    resumed = PPO.load(tmp_path).learn(2, run_dir=tmp_path, progress=False)
    for (name, a), (_, b) in zip(
        straight.policy.state_dict().items(), resumed.policy.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_a_lora_defender_trains_and_its_run_is_a_defender(tiny_lm_dir, tmp_path):
    from redteam_gym.defenders import make_defender

    config = lora_config(PPOConfig, tiny_lm_dir, role="defender", reward="safety=1", max_turns=1)
    learner = PPO(config)
    assert learner.policy.adapters is not None and learner.policy.shares_bottom
    base = {n: p.detach().clone() for n, p in learner.policy.actor.named_parameters()}
    learner.learn(1, run_dir=tmp_path, progress=False)
    for name, p in learner.policy.actor.named_parameters():
        assert "lora_" in name or torch.equal(base[name], p), name
    # the env's defender loads the adapters onto their base (transformers' peft integration)
    defender = make_defender(str(tmp_path))
    ids = torch.tensor([[1, 5, 9, 14, 2]])
    with torch.no_grad():
        mine = learner.policy.actor(input_ids=ids).logits
        theirs = defender.model(input_ids=ids).logits
    torch.testing.assert_close(mine, theirs)


def test_bad_lora_settings_are_named():
    for kwargs, name in [
        ({"rank": -1}, "LoRAConfig.rank"),
        ({"rank": 2.5}, "LoRAConfig.rank"),
        ({"rank": 4, "alpha": 0}, "LoRAConfig.alpha"),
        ({"rank": 4, "dropout": 1.0}, "LoRAConfig.dropout"),
        ({"rank": 4, "target_modules": " , "}, "LoRAConfig.target_modules"),
    ]:
        with pytest.raises(ValueError, match=re.escape(name)):
            LoRAConfig(**kwargs)
    with pytest.raises(ValueError, match=r"LoRAConfig\.rank"):
        PPOConfig(lora={"rank": -2})
    with pytest.raises(ValueError, match=r"frozen_fraction=1\.0"):
        PPOConfig(lora=LORA, frozen_fraction=1.0)


def test_an_unknown_target_module_is_named(tiny_lm_dir):
    lora = LoRAConfig(rank=4, target_modules="q_proj,nope_proj")
    with pytest.raises(ValueError, match=r"'nope_proj' names no linear module .*q_proj"):
        PPO(tiny_config(PPOConfig, tiny_lm_dir, lora=lora))
    learner = PPO(
        tiny_config(
            PPOConfig, tiny_lm_dir, lora=LoRAConfig(rank=4, target_modules=["q_proj", "v_proj"])
        )
    )
    adapted = {n.split(".lora_")[0] for n, _ in learner.policy.named_parameters() if "lora_" in n}
    assert adapted == {
        "actor.model.layers.1.self_attn.q_proj",
        "actor.model.layers.1.self_attn.v_proj",
    }


def test_lora_settings_are_options_of_train():
    parser = argparse.ArgumentParser()
    add_flags(parser, PPOConfig)
    args = parser.parse_args(["--lora-rank", "8", "--lora-target-modules", "q_proj,v_proj"])
    config = config_from_args(PPOConfig, args)
    assert config.lora == LoRAConfig(rank=8, target_modules="q_proj,v_proj")
    assert PPOConfig.from_dict(config.to_dict()).lora == config.lora
    docs = field_docs(LoRAConfig)
    assert all(docs.get(f.name) for f in dataclasses.fields(LoRAConfig))
