"""A dialogue as one token sequence: splicing, one forward pass per dialogue, shared bottom."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import tiny_config

from agents import A2C, PPO, A2CConfig, PPOConfig
from agents.common.training import reference_distributions
from redteam_gym.models import encode_chat, encode_chat_continuation, encode_text, load_tokenizer


def test_continuation_splices_a_chat_into_its_encoding(smollm2_dir):
    tokenizer = load_tokenizer(str(smollm2_dir))
    chat = [
        {"role": "system", "content": "You talk."},
        {"role": "assistant", "content": "An opener."},
        {"role": "assistant", "content": "The utterance <|im_end|> with markup."},
        {"role": "user", "content": "A reply."},
    ]
    spliced = (
        encode_chat(tokenizer, chat[:2])
        + encode_text(tokenizer, chat[2]["content"])
        + encode_chat_continuation(tokenizer, chat, after=2)
    )
    assert spliced == encode_chat(tokenizer, chat)


def test_continuation_refuses_a_template_that_rewrites_the_past(smollm2_dir):
    tokenizer = load_tokenizer(str(smollm2_dir))
    tokenizer.chat_template = (
        "{% for m in messages|reverse %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    )
    chat = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    with pytest.raises(ValueError, match="cannot be spliced"):
        encode_chat_continuation(tokenizer, chat, after=1)
    with pytest.raises(ValueError, match="with a prompt before it"):
        encode_chat_continuation(tokenizer, chat, after=0)


@pytest.fixture(scope="module")
def three_turns(tiny_lm_dir):
    learner = PPO(tiny_config(PPOConfig, tiny_lm_dir, max_turns=3, batch_size=3))
    return learner, learner.collect_rollout()


def test_each_turn_prompt_extends_the_last(three_turns):
    learner, rollout = three_turns
    assert max(s.turn for s in rollout.segments) == 2
    for d in range(rollout.num_dialogues):
        segments = rollout.segments_of([d])
        sequence = rollout.sequences[d]
        for s, after in itertools.pairwise(segments):
            assert after.start > s.start + len(s.tokens)  # the defender's reply between
        for s in segments:
            assert sequence[s.start : s.start + len(s.tokens)] == s.tokens
        assert sequence[: segments[0].start] == learner.policy.encode(
            _first_view(learner, rollout, d)
        )


def _first_view(learner, rollout, d):
    from redteam_gym.adversary import adversary_view

    return adversary_view(rollout.transcripts[d][:1], learner.system_prompt)


def test_one_pass_per_dialogue_scores_what_was_sampled(three_turns):
    """The training pass over each dialogue's final sequence gives the logprobs and values the
    sampler saw turn by turn (so the first epoch's ratio is 1), and the reference's one pass
    gives the logprobs of a forward pass per utterance."""
    learner, rollout = three_turns
    batch = rollout.to_batch()
    with torch.no_grad():
        logprobs, values = learner.policy.evaluate_batch(batch, temperature=1.0)
    torch.testing.assert_close(logprobs, batch.logprobs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(values, batch.values, atol=1e-4, rtol=1e-4)
    for s in rollout.segments:
        prefix = rollout.sequences[s.dialogue][: s.start]
        ref = utterance_logprobs(learner.ref_model, prefix, s.tokens)
        torch.testing.assert_close(s.ref_logprobs, ref, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def utterance_logprobs(model, prefix, tokens):
    """The plain loop: one forward pass over one utterance and the ids before it, no padding."""
    ids = torch.tensor([[*prefix, *tokens]], device=model.device)
    logits = model(input_ids=ids).logits[0, len(prefix) - 1 : -1].float()
    return logits.log_softmax(-1).gather(-1, ids[0, len(prefix) :, None]).squeeze(-1).cpu()


@pytest.mark.parametrize(("learner_cls", "config_cls"), [(A2C, A2CConfig), (PPO, PPOConfig)])
def test_top_layers_from_the_shared_bottom_give_the_full_forward(
    tiny_lm_dir, learner_cls, config_cls
):
    learner = learner_cls(tiny_config(config_cls, tiny_lm_dir, max_turns=2, batch_size=3))
    policy = learner.policy
    assert policy.shares_bottom
    rollout = learner.collect_rollout()
    batch = rollout.to_batch()
    assert batch.boundary is not None and batch.boundary.shape[:2] == batch.input_ids.shape
    with torch.no_grad():
        top = policy.evaluate_batch(batch, full=True)
        ref_top = reference_distributions(learner.ref_model, policy, batch, temperature=1.0)
        policy.shares_bottom = False
        whole = policy.evaluate_batch(batch, full=True)
        ref_whole = reference_distributions(learner.ref_model, policy, batch, temperature=1.0)
    for a, b in zip((*top, ref_top), (*whole, ref_whole), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_different_bottom_is_not_shared(tiny_lm_dir):
    learner = PPO(tiny_config(PPOConfig, tiny_lm_dir))
    assert learner.policy.shares_bottom
    other = learner.policy.actor.__class__(learner.policy.actor.config).eval()
    assert not learner.policy.share_bottom(other)
    learner.policy.num_frozen_layers = 0
    assert not learner.policy.share_bottom(learner.ref_model)


def test_the_sampler_keeps_the_boundary_states_of_a_whole_dialogue(three_turns):
    """Turn by turn, through its KV cache, the sampler fed every id of a dialogue but the
    last through the frozen bottom: its states there are a whole forward pass's."""
    from agents.common.shared_bottom import boundary_states

    learner, rollout = three_turns
    batch = rollout.to_batch()
    assert learner.policy.shares_bottom and batch.boundary is not None
    _, full = boundary_states(
        learner.ref_model,
        learner.policy.num_frozen_layers,
        batch.input_ids,
        batch.attention_mask,
        batch.position_ids,
    )
    for d, ids in enumerate(rollout.sequences):
        n = len(ids) - 1
        torch.testing.assert_close(batch.boundary[d, :n], full[d, :n], atol=1e-5, rtol=1e-4)
