"""TokenLevel and StrategyMenu wrappers on a tiny random defender."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import redteam_gym  # noqa: F401
from redteam_gym.adversary import EMPTY_UTTERANCE, adversary_view
from redteam_gym.models import encode_chat
from redteam_gym.transcript import ADVERSARY
from redteam_gym.wrappers import DEFAULT_STRATEGIES, Strategy, StrategyMenu, TokenLevel
from redteam_gym.wrappers.strategy_menu import quote_of, topic_phrase

# check_env on any wrapper says so; nothing else may warn.
WRAPPED_NOTICE = "is different from the unwrapped version"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Two cores shared with other test runs: one thread is far faster than two contending.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_env(tiny_lm_dir):
    return gym.make(
        "RedTeamDialogue-v0",
        defender=str(tiny_lm_dir),
        judge="profanity",
        max_turns=2,
        defender_max_new_tokens=4,
    )


def assert_checkers_pass(env: gym.Env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    messages = [str(w.message) for w in caught]
    assert [m for m in messages if WRAPPED_NOTICE not in m] == []


# ----- TokenLevel -----------------------------------------------------------------------------


def token_env(base_env, **kwargs) -> TokenLevel:
    return TokenLevel(base_env, **{"max_utterance_tokens": 3, "max_obs_tokens": 48, **kwargs})


def plain_tokens(env: TokenLevel, text: str = " the cat sat on the mat") -> list[int]:
    ids = env.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert not set(ids) & env.stop_token_ids
    return ids


def test_token_level_passes_gymnasium_and_sb3_checkers(base_env):
    env = token_env(base_env)
    assert env.action_space == gym.spaces.Discrete(len(env.tokenizer))
    assert env.action_space.n == 49152
    assert_checkers_pass(env)


def test_token_level_rewards_only_the_sending_step_at_the_limit(base_env):
    env = token_env(base_env, max_utterance_tokens=3)
    env.reset(seed=0)
    tokens = plain_tokens(env)[:3]
    for i, token in enumerate(tokens[:2], start=1):
        _, reward, terminated, truncated, info = env.step(token)
        assert (reward, terminated, truncated) == (0.0, False, False)
        assert info == {"utterance_tokens": i, "utterance_sent": False}
        assert env.utterance_ids == tokens[:i]
    _, reward, terminated, truncated, info = env.step(tokens[2])
    assert info["utterance_sent"] and info["utterance_tokens"] == 3 and info["turn"] == 1
    expected = env.tokenizer.decode(tokens).strip()
    assert info["transcript"][-2] == {"role": ADVERSARY, "content": expected}
    assert reward == pytest.approx(-math.log1p(-info["defender_unsafe_prob"]))
    assert reward > 0.0 and not terminated and not truncated
    assert env.utterance_ids == []


def test_token_level_sends_at_the_stop_token_and_ends_the_episode(base_env):
    env = token_env(base_env, max_utterance_tokens=8)
    env.reset(seed=1)
    tokens = plain_tokens(env)[:2]
    for token in tokens:
        assert env.step(token)[1] == 0.0
    _, _, _, truncated, info = env.step(env.stop_token_id)
    assert info["utterance_sent"] and info["utterance_tokens"] == 2 and not truncated
    assert info["utterance"] == env.tokenizer.decode(tokens).strip()
    # EOS as the first token of the last turn sends the placeholder and ends the episode.
    _, reward, terminated, truncated, info = env.step(env.stop_token_id)
    assert info["utterance"] == EMPTY_UTTERANCE and info["utterance_tokens"] == 0
    assert truncated and not terminated and info["turn"] == 2 and reward > 0.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(tokens[0])


def test_token_level_drops_special_tokens_from_the_utterance(base_env):
    env = token_env(base_env, max_utterance_tokens=3)
    env.reset(seed=2)
    im_start = env.tokenizer.convert_tokens_to_ids("<|im_start|>")
    word = plain_tokens(env, " hello")[0]
    env.step(word)
    env.step(im_start)
    _, _, _, _, info = env.step(word)
    assert info["utterance"] == "hello hello"


def test_token_level_observation_window(base_env):
    window = 48
    env = token_env(base_env, max_utterance_tokens=8, max_obs_tokens=window)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    context = encode_chat(env.tokenizer, adversary_view(info["transcript"]))
    n = min(len(context), window)
    assert obs["input_ids"][-n:].tolist() == context[-n:]
    assert obs["attention_mask"].sum() == n
    tokens = plain_tokens(env)[:3]
    for token in tokens:
        obs, *_ = env.step(token)
    assert obs["input_ids"][-3:].tolist() == tokens
    assert obs["attention_mask"][-3:].tolist() == [1, 1, 1]
    assert obs["input_ids"][-window:-3].tolist() == (context + tokens)[-window:-3]
    assert obs["input_ids"].dtype == np.int64 and env.observation_space.contains(obs)


def test_token_level_left_pads_short_contexts(base_env):
    env = token_env(base_env, max_obs_tokens=4096)
    obs, info = env.reset(seed=4)
    n = len(encode_chat(env.tokenizer, adversary_view(info["transcript"])))
    assert n < 4096
    assert obs["attention_mask"].tolist() == [0] * (4096 - n) + [1] * n
    assert (obs["input_ids"][: 4096 - n] == env.pad_token_id).all()


@pytest.mark.parametrize("action", [-1, 49152, "5", 1.0, True, None, np.array([1, 2])])
def test_token_level_bad_action_raises(base_env, action):
    env = token_env(base_env)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_token_level_bad_arguments_raise(base_env):
    with pytest.raises(ValueError, match="max_utterance_tokens"):
        TokenLevel(base_env, max_utterance_tokens=0)
    with pytest.raises(ValueError, match="max_obs_tokens"):
        TokenLevel(base_env, max_obs_tokens=0)
    with pytest.raises(ValueError, match="stop_token_ids"):
        TokenLevel(base_env, stop_token_ids=[10**6])


# ----- StrategyMenu ---------------------------------------------------------------------------


@pytest.fixture()
def menu_env(base_env) -> StrategyMenu:
    return StrategyMenu(base_env)


def test_strategy_menu_passes_gymnasium_and_sb3_checkers(menu_env):
    k = len(DEFAULT_STRATEGIES)
    assert menu_env.action_space == gym.spaces.Discrete(k)
    assert menu_env.observation_space.shape == (2 + 1 + k + 4,)
    assert menu_env.observation_space.dtype == np.float32
    assert_checkers_pass(menu_env)


def test_strategy_menu_features_follow_the_dialogue(menu_env):
    k, turns = len(DEFAULT_STRATEGIES), 2
    obs, _ = menu_env.reset(seed=5)
    expected = np.zeros(turns + 1 + k + 4, dtype=np.float32)
    expected[0] = 1.0
    np.testing.assert_array_equal(obs, expected)
    ret, p_max = 0.0, 0.0
    for turn, action in enumerate([5, 2], start=1):
        obs, reward, _, truncated, info = menu_env.step(action)
        assert info["strategy"] == DEFAULT_STRATEGIES[action].name
        assert info["transcript"][-2]["content"] == info["utterance"]
        ret += reward
        p_max = max(p_max, info["defender_unsafe_prob"])
        expected = np.zeros_like(expected)
        expected[turn] = 1.0
        expected[turns + 1 + action] = 1.0
        expected[-4:] = (
            info["defender_unsafe_prob"],
            p_max,
            info["adversary_unsafe_prob"],
            1.0 - math.exp(-ret),
        )
        np.testing.assert_allclose(obs, expected, rtol=1e-6, atol=1e-6)
        assert menu_env.observation_space.contains(obs)
    assert truncated


def test_strategy_menu_writes_the_chosen_strategy_with_topic(menu_env):
    obs, info = menu_env.reset(seed=6)
    openers = {o.id: o for o in menu_env.unwrapped.engine.openers}
    topic = topic_phrase(openers[info["opener_id"]].topic)
    _, _, _, _, info = menu_env.step(1)  # ask_opinion: both phrasings name the topic
    assert topic in info["utterance"]
    candidates = {t.format(topic=topic, quote="") for t in DEFAULT_STRATEGIES[1].templates}
    assert info["utterance"] in candidates
    # same seed, same utterance (the wrapper's phrasing draw is seeded by reset)
    menu_env.reset(seed=6)
    assert menu_env.step(1)[4]["utterance"] == info["utterance"]


def test_strategy_menu_quotes_the_last_reply(base_env):
    quote = Strategy("echo", ('You said "{quote}"',))
    env = StrategyMenu(base_env, strategies=[quote])
    _, info = env.reset(seed=7)
    _, _, _, _, info = env.step(0)
    assert info["utterance"] == f'You said "{quote_of(info["transcript"][0]["content"])}"'
    reply = info["defender_response"]
    _, _, _, _, info = env.step(0)
    assert info["utterance"] == f'You said "{quote_of(reply)}"'


@pytest.mark.parametrize("action", [-1, 8, "1", 0.0, False])
def test_strategy_menu_bad_action_raises(menu_env, action):
    menu_env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        menu_env.step(action)


def test_strategy_definitions_are_checked():
    with pytest.raises(ValueError, match="no templates"):
        Strategy("empty", ())
    with pytest.raises(ValueError, match="topic"):
        Strategy("bad", ("about {subject}",))
    with pytest.raises(ValueError, match="tuple"):
        Strategy("str", "about {topic}")  # type: ignore[arg-type]
    assert Strategy("list", ["a {topic}"]).templates == ("a {topic}",)  # type: ignore[arg-type]


def test_topic_phrase_and_quote():
    assert topic_phrase(None) == "this"
    assert topic_phrase("personalfinance") == "personal finance"
    assert topic_phrase("cooking") == "cooking"
    assert quote_of("one  two\nthree", max_words=2) == "one two..."
    assert quote_of("one two") == "one two"
    assert quote_of("   ") == "..."
