"""Sampling: the nucleus filter and the KV cache kept across turns."""

from __future__ import annotations

import pytest
import torch

from redteam_gym.models import SamplingConfig, load_causal_lm, sample
from redteam_gym.models.chat_lm import ChatLM, eos_token_ids
from redteam_gym.models.generation import NUCLEUS_CANDIDATES, draw, filter_logits


def sorted_nucleus(logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference top-p: rank the whole vocabulary. Also each token's mass ranked above it."""
    ranked, order = torch.sort(logits, descending=True, dim=-1)
    probs = ranked.softmax(-1)
    before = probs.cumsum(-1) - probs
    drop = before >= top_p
    kept = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return kept, before.scatter(-1, order, before)


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("vocab", [4 * NUCLEUS_CANDIDATES, 64 * NUCLEUS_CANDIDATES])
def test_nucleus_matches_a_full_sort(top_p, vocab):
    gen = torch.Generator().manual_seed(0)
    peaked = torch.randn(6, vocab, generator=gen) * 6  # nucleus inside the candidates
    flat = torch.randn(2, vocab, generator=gen) * 0.1  # nucleus wider: the full-sort fallback
    # with the larger vocabulary, nuclei past the first candidates but within 16x as many
    middle = torch.randn(3, vocab, generator=gen) * 2.5
    for logits in (peaked, flat, middle, torch.cat([peaked, flat, middle])):
        got = filter_logits(logits, 0, top_p)
        want, before = sorted_nucleus(logits, top_p)
        # the same tokens, but where the mass above a token is top_p to float rounding
        differ = torch.isinf(got) != torch.isinf(want)
        assert bool(((before[differ] - top_p).abs() < 1e-5).all())
        assert torch.equal(got[~torch.isinf(got)], logits[~torch.isinf(got)])


def test_nucleus_keeps_the_top_token_and_respects_top_k():
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    assert torch.isfinite(filter_logits(logits, 0, 1e-6)).tolist() == [[1, 0, 0, 0, 0]]
    kept = torch.isfinite(filter_logits(logits, 2, 0.9999)).tolist()
    assert kept == [[1, 1, 0, 0, 0]]


def test_draw_follows_the_distribution_as_multinomial_does():
    from scipy.stats import chisquare

    probs = torch.tensor([0.4, 0.0, 0.25, 0.2, 0.1, 0.0, 0.05])
    rows = 40_000
    logprobs = probs.log().expand(rows, -1)
    drawn = draw(logprobs, torch.Generator().manual_seed(0))
    reference = torch.multinomial(probs.expand(rows, -1), 1, generator=torch.Generator())
    expected = (probs[probs > 0] * rows).numpy()
    for ids in (drawn, reference.squeeze(-1)):
        counts = torch.bincount(ids, minlength=len(probs))
        assert int(counts[probs == 0].sum()) == 0  # ids of probability 0 are never drawn
        assert chisquare(counts[probs > 0].numpy(), expected).pvalue > 1e-3
    tail = torch.full((1, 50_000), float("-inf"))
    tail[0, 123] = 0.0
    assert draw(tail.expand(64, -1)).eq(123).all()


def test_draw_keeps_close_distributions_together_under_one_seed():
    # two models' next-token distributions a little apart (as int4 and fp32 weights are):
    # with one seed, the draws should differ only where two ids nearly tie
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2_000, 4_096, generator=gen) * 3
    nearby = logits + 0.02 * torch.randn(logits.shape, generator=gen)
    a = draw(logits.log_softmax(-1), torch.Generator().manual_seed(7))
    b = draw(nearby.log_softmax(-1), torch.Generator().manual_seed(7))
    assert float((a == b).float().mean()) > 0.95


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir):
    model, tokenizer = load_causal_lm(str(tiny_lm_dir), device="cpu")
    return model, tokenizer


def _prompts(tokenizer, texts):
    return [tokenizer(t, add_special_tokens=False).input_ids for t in texts]


def _sample(model, tokenizer, prompts, seed, **kwargs):
    config = SamplingConfig(max_new_tokens=6, temperature=1.0, top_p=0.9)
    return sample(
        model,
        prompts,
        config,
        eos_token_ids=eos_token_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def test_continuing_from_the_cache_matches_a_fresh_prefill(tiny):
    model, tokenizer = tiny
    first = _prompts(tokenizer, ["a short one", "a somewhat longer opening line here", "mid"])
    turn1 = _sample(model, tokenizer, first, seed=1, keep_cache=True)
    assert turn1.cache is not None
    # row 0 and 1 continue their conversation; row 2 starts another one
    second = [
        first[0] + turn1.tokens[0] + _prompts(tokenizer, [" and then?"])[0],
        first[1] + turn1.tokens[1] + _prompts(tokenizer, [" go on, please, tell me"])[0],
        _prompts(tokenizer, ["something else entirely"])[0],
    ]
    widths: list[int] = []
    forward = model.forward

    def recording(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)

    model.forward = recording
    try:
        reused = _sample(model, tokenizer, second, seed=2, prefix_cache=turn1.cache)
    finally:
        del model.forward
    fresh = _sample(model, tokenizer, second, seed=2)
    assert reused.tokens == fresh.tokens
    for a, b in zip(reused.logprobs, fresh.logprobs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # only the ids after each row's shared prefix were prefilled
    assert widths[0] < max(len(p) for p in second)
    continued = [len(second[i]) - len(turn1.cache.tokens[i]) for i in (0, 1)]
    assert widths[0] == max(len(second[2]), *continued)


def test_finished_rows_leave_the_running_batch_and_change_nothing(tiny, monkeypatch):
    from redteam_gym.models import generation

    model, tokenizer = tiny
    texts = ["a short one", "a somewhat longer opening line here", "mid", "x", "four words in it"]
    first = _prompts(tokenizer, texts)
    # one id in nine ends a row: rows finish at different steps of a random model
    ends = list(range(0, len(tokenizer), 9))
    config = SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=0.95)

    def run(prompts, seed, **kwargs):
        return sample(
            model,
            prompts,
            config,
            eos_token_ids=ends,
            pad_token_id=tokenizer.pad_token_id,
            generator=torch.Generator().manual_seed(seed),
            keep_cache=True,
            **kwargs,
        )

    def two_turns():
        turn1 = run(first, seed=4)
        second = [p + t + [7, 8] for p, t in zip(first, turn1.tokens, strict=True)]
        return turn1, run(second, seed=5, prefix_cache=turn1.cache)

    rows: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        dropping = two_turns()
    finally:
        hook.remove()
    assert min(rows) < len(first)  # finished rows did leave the running batch
    monkeypatch.setattr(generation, "_rows_selectable", lambda cache: False)
    feeding = two_turns()  # every row fed to the end, finished ones with padding
    lengths = [len(t) for t in feeding[0].tokens]
    assert len(set(lengths)) > 1, lengths
    for a, b in zip(dropping, feeding, strict=True):
        assert a.tokens == b.tokens
        for x, y in zip(a.logprobs, b.logprobs, strict=True):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
        # a row that left at its last id never fed it: the next turn feeds it again
        for kept, full in zip(a.cache.tokens, b.cache.tokens, strict=True):
            assert kept == full[: len(kept)] and len(full) - len(kept) <= 1
    with pytest.raises(ValueError, match="rows"):
        draw(torch.zeros(2, 5), rows=torch.tensor([0, 1]))


def test_a_cache_for_other_rows_is_not_reused(tiny):
    model, tokenizer = tiny
    prompts = _prompts(tokenizer, ["one two three", "four five"])
    turn1 = _sample(model, tokenizer, prompts, seed=1, keep_cache=True)
    unrelated = _prompts(tokenizer, ["xyz", "completely new words", "third row"])
    got = _sample(model, tokenizer, unrelated, seed=3, prefix_cache=turn1.cache)
    assert got.tokens == _sample(model, tokenizer, unrelated, seed=3).tokens


def test_chat_lm_replies_do_not_depend_on_its_cache(tiny):
    model, tokenizer = tiny
    sampling = SamplingConfig(max_new_tokens=5, temperature=0.7, top_p=0.9)
    cached = ChatLM(model, tokenizer, sampling=sampling)
    uncached = ChatLM(model, tokenizer, sampling=sampling, reuse_cache=False)
    chats = [[{"role": "user", "content": "hi there"}], [{"role": "user", "content": "hello"}]]
    for turn in range(3):
        replies = [
            lm.respond(chats, torch.Generator().manual_seed(turn)) for lm in (cached, uncached)
        ]
        assert replies[0] == replies[1]
        assert cached._cache is not None and uncached._cache is None
        chats = [
            [*c, {"role": "assistant", "content": r}, {"role": "user", "content": f"ok {turn}"}]
            for c, r in zip(chats, replies[0], strict=True)
        ]


def test_buffered_cache_matches_the_stock_dynamic_cache(tiny):
    from transformers.cache_utils import DynamicCache

    from redteam_gym.models.generation import BufferedLayer, cache_kwarg, new_kv_cache

    model, _ = tiny
    name = cache_kwarg(model)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 1000, (3, 200), generator=gen)
    caches = [DynamicCache(config=model.config), new_kv_cache(model)]
    assert all(isinstance(layer, BufferedLayer) for layer in caches[1].layers)
    logits = []
    with torch.no_grad():
        for cache in caches:
            out = model(input_ids=ids[:, :20], use_cache=True, **{name: cache})
            steps = [out.logits[:, -1]]
            # one token at a time past the buffer's first capacity (20 + 128), then a chunk
            for t in range(20, 180):
                out = model(input_ids=ids[:, t : t + 1], use_cache=True, **{name: cache})
                steps.append(out.logits[:, -1])
            cache.crop(-5)  # a cropped cache keeps writing where it now ends
            out = model(input_ids=ids[:, 175:200], use_cache=True, **{name: cache})
            steps.append(out.logits[:, -1])
            logits.append(torch.stack(steps))
        assert caches[1].get_seq_length() == caches[0].get_seq_length() == 200
    torch.testing.assert_close(logits[0], logits[1])


def test_a_sliding_window_cache_is_never_reused():
    from transformers import MistralConfig, MistralForCausalLM

    from redteam_gym.models.generation import _reusable

    config = MistralConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=8,
    )
    model = MistralForCausalLM(config).eval()
    prompt = list(range(1, 11))
    first = sample(
        model,
        [prompt],
        SamplingConfig(max_new_tokens=4),
        eos_token_ids=[0],
        pad_token_id=0,
        keep_cache=True,
    )
    assert first.cache is not None
    assert _reusable(first.cache, [prompt + first.tokens[0] + [5, 6]]) is None


def test_the_cache_goes_in_under_the_name_the_installed_release_takes(tiny):
    import inspect

    from redteam_gym.models.generation import cache_kwarg

    model, _ = tiny
    params = inspect.signature(type(model).forward).parameters
    assert cache_kwarg(model) in params
    # a hook that hides the signature (as the recording wrapper above does) changes nothing
    model.forward = lambda *args, **kwargs: None
    try:
        assert cache_kwarg(model) in params
    finally:
        del model.forward
