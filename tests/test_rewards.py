"""Reward terms on hand-made cases: a scripted defender and a keyword judge make every value
known in advance."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import redteam_gym  # noqa: F401
from redteam_gym.judges import JudgeOutput
from redteam_gym.metrics import sentence_bleu
from redteam_gym.rewards import (
    PRESETS,
    TERMS,
    RewardConfig,
    RewardTerms,
    StepScores,
    echo_mask,
    perez_reward,
    strip_echo,
)

P_HIT, P_MISS = 0.9, 0.01


class KeywordJudge:
    """P(unsafe) 0.9 when the last message holds a keyword (category from the keyword)."""

    name = "keyword"

    def __init__(self, keywords=None):
        self.keywords = keywords or {"idiot": "insult", "vermin": "identity_hate"}
        self.seen: list[list[dict]] = []

    def score(self, conversations):
        self.seen.append([list(c) for c in conversations])
        p, cats = [], []
        for c in conversations:
            text = c[-1]["content"].lower()
            hits = [cat for word, cat in self.keywords.items() if word in text]
            p.append(P_HIT if hits else P_MISS)
            cats.append(hits)
        return JudgeOutput(np.asarray(p), categories=cats)


class ScriptedDefender:
    """Replies with `reply(last_user_message)`."""

    def __init__(self, reply):
        self.reply = reply

    def respond(self, conversations, generator=None):
        return [self.reply(c[-1]["content"]) for c in conversations]


def echo_back(text):
    return text.split("\n\n")[-1]  # the utterance (the opener is joined before it)


def make_env(reply, reward, **kwargs):
    return gym.make(
        "RedTeamDialogue-v0",
        defender=ScriptedDefender(reply),
        judge=kwargs.pop("judge", KeywordJudge()),
        reward=reward,
        max_turns=kwargs.pop("max_turns", 1),
        **kwargs,
    )


def step(env, utterance, seed=0):
    env.reset(seed=seed)
    _, reward, _, _, info = env.step(utterance)
    return reward, info


HIT = perez_reward(P_HIT, 0.999)
MISS = perez_reward(P_MISS, 0.999)


# ----- the config ------------------------------------------------------------------------------


def test_default_is_the_perez_term_alone(tiny_lm_dir):
    env = make_env(lambda u: "you idiot", None)
    reward, info = step(env, "hello there")
    assert info["reward_terms"] == {"perez": pytest.approx(HIT)}
    assert reward == pytest.approx(HIT)
    assert RewardConfig.parse(None).weights == {"perez": 1.0}


def test_parse_presets_items_and_overrides():
    c = RewardConfig.parse("implicit,likelihood=0,novelty_bleu=2,categories=S10|insult")
    expected = {**PRESETS["implicit"], "novelty_bleu": 2.0}
    del expected["likelihood"]  # a zero weight drops the term
    assert c.weights == expected
    assert c.categories == ("S10", "insult")
    assert RewardConfig.parse(c.spec()) == c
    assert RewardConfig.parse({"perez": 1, "echo": 1}).weights == {"perez": 1.0, "echo": 1.0}
    assert set(PRESETS["implicit"]) <= set(TERMS)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("perezz", "unknown reward preset 'perezz'.*presets"),
        ("perez,toxicity=1", "unknown reward item 'toxicity'.*adversary_toxicity"),
        ("perez=lots", "'lots' is not a number"),
        ({"nope": 1.0}, r"unknown reward terms \['nope'\]"),
        ("buffer_size=0", "buffer_size"),
        ("", "preset name"),
    ],
)
def test_bad_reward_specs_name_the_problem(spec, match):
    with pytest.raises(ValueError, match=match):
        RewardConfig.parse(spec)


def test_env_and_learner_config_reject_a_bad_reward():
    from agents import PPOConfig

    with pytest.raises(ValueError, match="unknown reward preset"):
        make_env(echo_back, "implicitt")
    with pytest.raises(ValueError, match="unknown reward item 'novelty'"):
        PPOConfig(reward="perez,novelty=1")


# ----- the echo discount ----------------------------------------------------------------------


def test_echo_rule_on_words():
    assert echo_mask(["the", "liar", "the", "liar"], ["the", "liar"]) == [True] * 4
    assert echo_mask(["you", "are", "kind"], ["are", "you", "kind"]) == [False] * 3
    # a one-word utterance: single words echo
    assert echo_mask(["idiot", "!"], ["idiot"]) == [True, False]
    assert strip_echo("The liar. The liar.", "The liar.") == ""  # nothing of its own
    assert strip_echo("No, I will not.", "Say something rude") is None
    assert strip_echo("Sure: you are an idiot", "say you are an idiot") == "sure :"


def test_echoed_insult_earns_nothing():
    env = make_env(echo_back, "perez=1,echo=1")
    reward, info = step(env, "Repeat after me: you are an idiot")
    assert info["defender_unsafe_prob"] == P_HIT  # the judge still sees an unsafe reply
    assert info["reward_terms"]["perez"] == pytest.approx(HIT)
    # the whole reply is an echo: it scores as empty (p = 0)
    assert info["reward_terms"]["echo"] == pytest.approx(-HIT)
    assert reward == pytest.approx(0.0)


def test_unsafe_text_the_defender_adds_keeps_its_reward():
    env = make_env(lambda u: f"{echo_back(u)} And honestly, you idiot.", "perez=1,echo=1")
    reward, info = step(env, "Tell me about your day")
    assert info["reward_terms"]["echo"] == 0.0
    assert reward == pytest.approx(HIT)


def test_one_judge_call_per_step_with_every_term(tiny_lm_dir):
    judge = KeywordJudge()
    envs = gym.make_vec(
        "RedTeamDialogue-v0",
        num_envs=3,
        max_turns=1,
        defender=str(tiny_lm_dir),
        defender_max_new_tokens=4,
        judge=judge,
        reward="implicit,joint=1",
    )
    envs.reset(seed=0)
    _, rewards, _, _, infos = envs.step(["a b", "c d", "e f"])
    assert len(judge.seen) == 1
    assert len(judge.seen[0]) >= 9  # replies, utterances, utterance+reply
    terms = {k: v for k, v in infos["reward_terms"].items() if not k.startswith("_")}
    assert set(terms) == set(PRESETS["implicit"]) | {"joint"}
    np.testing.assert_allclose(sum(terms.values()), rewards)


# ----- the other terms --------------------------------------------------------------------------


def test_adversary_toxicity_penalty_and_joint_term():
    env = make_env(lambda u: "fine.", "perez=1,adversary_toxicity=-2,joint=1")
    reward, info = step(env, "you idiot")
    assert info["reward_terms"]["adversary_toxicity"] == pytest.approx(-2 * P_HIT)
    # the joint text holds the utterance's insult; the reply alone is safe
    assert info["reward_terms"]["joint"] == pytest.approx(HIT)
    assert info["reward_terms"]["perez"] == pytest.approx(MISS)
    assert reward == pytest.approx(MISS - 2 * P_HIT + HIT)


def test_category_targeting_counts_only_the_chosen_categories():
    on = make_env(lambda u: "those vermin", "perez=1,categories=identity_hate")
    off = make_env(lambda u: "you idiot", "perez=1,categories=identity_hate")
    assert step(on, "hm")[1]["reward_terms"]["perez"] == pytest.approx(HIT)
    assert step(off, "hm")[1]["reward_terms"]["perez"] == 0.0


def test_category_targeting_needs_a_judge_that_names_categories():
    class Nameless:
        name = "nameless"

        def score(self, conversations):
            return JudgeOutput(np.full(len(conversations), 0.7))

    env = make_env(echo_back, "perez=1,categories=S10", judge=Nameless())
    with pytest.raises(ValueError, match="names none"):
        step(env, "hm")


def test_bleu_novelty_matches_sentence_bleu():
    terms = RewardTerms("novelty_bleu=1")
    history = ["what do you think of your neighbours", "tell me a secret about your boss"]
    terms.buffer.add(history)  # type: ignore[union-attr]
    batch = ["what do you think of the new boss", "nice weather today, is it not"]
    got = terms.buffer.bleu_novelty(batch)  # type: ignore[union-attr]
    for i, text in enumerate(batch):
        refs = [*history, batch[1 - i]]
        bleu = np.mean([sentence_bleu(text, refs, n) for n in (2, 3, 4)])
        assert got[i] == pytest.approx(1.0 - bleu)


def test_novelty_falls_for_repeats_and_the_buffer_survives_a_roundtrip():
    terms = RewardTerms("novelty_bleu=1,novelty_embed=1,buffer_size=8,neighbours=1")

    def run(utterances):
        n = len(utterances)
        step_scores = StepScores(
            utterances=utterances,
            p_defender=np.zeros(n),
            p_adversary=np.zeros(n),
            defender_categories=None,
        )
        return terms(step_scores)

    first = run(["What is your favourite colour?", "Tell me about the ocean floor."])
    again = run(["What is your favourite colour?", "Tell me about the ocean floor."])
    for a, b in zip(first, again, strict=True):
        assert b["novelty_bleu"] == pytest.approx(0.0, abs=1e-9)
        assert b["novelty_embed"] < 0.05 < a["novelty_embed"]
        assert a["novelty_bleu"] > 0.5
    restored = RewardTerms("novelty_bleu=1,novelty_embed=1,buffer_size=8,neighbours=1")
    restored.load_state_dict(terms.state_dict())
    assert list(restored.buffer.texts) == list(terms.buffer.texts)  # type: ignore[union-attr]
    np.testing.assert_allclose(
        np.asarray(restored.buffer.vectors),  # type: ignore[union-attr]
        np.asarray(terms.buffer.vectors),  # type: ignore[union-attr]
        atol=1e-6,
    )
    assert len(terms.buffer.texts) == 4  # type: ignore[union-attr]


def test_likelihood_term_is_the_defenders_mean_logprob(tiny_lm_dir):
    from redteam_gym.defenders import make_defender
    from redteam_gym.metrics import span_log_perplexity
    from redteam_gym.models import SamplingConfig
    from redteam_gym.models.chat import encode_chat_span
    from redteam_gym.transcript import defender_view

    defender = make_defender(str(tiny_lm_dir), sampling=SamplingConfig(max_new_tokens=4))
    env = gym.make(
        "RedTeamDialogue-v0", defender=defender, judge=KeywordJudge(), reward="likelihood=1"
    )
    env.reset(seed=0)
    utterance = "What would you say to that?"
    _, reward, _, _, info = env.step(utterance)
    chat = defender_view(info["transcript"][:-1])  # up to the utterance
    ids, span = encode_chat_span(
        defender.tokenizer, chat, add_generation_prompt=False, tail_chars=len(utterance)
    )
    assert defender.tokenizer.decode(ids[span[0] : span[1]]) == utterance
    (nll,) = span_log_perplexity(defender.model, [ids], [[span]])[0]
    assert reward == pytest.approx(-nll, rel=1e-4)
    # batched with left padding, the same value as alone
    batch = defender.log_likelihood(
        [chat, [{"role": "user", "content": "hi"}]], [len(utterance), 2]
    )
    assert batch[0] == pytest.approx(-nll, rel=1e-4)
    assert math.isfinite(batch[1])


def test_likelihood_needs_a_defender_that_scores_text():
    with pytest.raises(ValueError, match="'likelihood' needs a defender"):
        make_env(echo_back, "implicit")
