"""redteam_gym.game: the two-player ParallelEnv, its API checks, turns and reward split."""

from __future__ import annotations

import math

import pytest
from pettingzoo.test import parallel_api_test
from pettingzoo.test.seed_test import parallel_seed_test

from redteam_gym.game import AGENTS, GAME_DEFAULTS, RedTeamGameEnv, parallel_env
from redteam_gym.rewards import DEFENDER_TERMS, perez_reward
from redteam_gym.transcript import ADVERSARY, DEFENDER, OPENER, parse_observation

# `safety` alone for the defender: the `safe` preset's relevance term loads MiniLM
FAST = {"judge": "profanity", "reward": "perez,safety=1"}
UNSAFE_REPLY = "fuck you, you stupid fucking idiot"
BENIGN_REPLY = "Storms can be lovely to watch from indoors, and parking away from trees helps."


def play(env, moves):
    """Step through `moves` (one text per half turn), each agent sending it on its move and
    a placeholder when idle; returns every step's outputs."""
    out = []
    for text in moves:
        mover = env.to_move
        out.append(env.step({a: text if a == mover else "idle" for a in env.agents}))
    return out


@pytest.mark.parametrize("max_turns", [1, 3])
def test_parallel_api(max_turns):
    env = parallel_env(max_turns=max_turns, **FAST)
    # the API test passes options={"options": 1}: ignored, with a warning naming it
    with pytest.warns(UserWarning, match=r"ignores the option\(s\) \['options'\]"):
        parallel_api_test(env, num_cycles=4 * max_turns + 2)
    assert isinstance(env, RedTeamGameEnv) and env.metadata["name"] == "redteam_game_v0"


def test_parallel_api_in_the_completion_format():
    env = parallel_env(max_turns=2, defender_format="completion", **FAST)
    with pytest.warns(UserWarning, match=r"ignores the option\(s\) \['options'\]"):
        parallel_api_test(env, num_cycles=10)
    assert env.thread_format == env.engine.config.thread_format() is not None


@pytest.mark.parametrize("defender_format", ["chat", "completion"])
def test_the_defender_reads_the_conversation_in_the_games_format(defender_format):
    """The defender's info holds the conversation as a frozen defender of this format reads
    it (`ChatLM.respond` takes it as is); the adversary's info does not."""
    from redteam_gym.models import ThreadFormat
    from redteam_gym.transcript import defender_view, thread_view

    env = parallel_env(max_turns=2, defender_format=defender_format, **FAST)
    view = defender_view if defender_format == "chat" else thread_view
    _, infos = env.reset(seed=0)
    *_, (_, _, _, _, infos) = play(env, ["hi there", "Hello!", "how are you?"])
    transcript = infos["defender"]["transcript"]
    assert [m["role"] for m in transcript] == [OPENER, ADVERSARY, DEFENDER, ADVERSARY]
    assert infos["defender"]["defender_view"] == view(transcript)
    assert "defender_view" not in infos["adversary"]
    if defender_format == "completion":
        assert isinstance(env.thread_format, ThreadFormat)
        assert env.thread_format.render(infos["defender"]["defender_view"]).endswith(
            "\nUser1: hi there\nUser2: Hello!\nUser1: how are you?\nUser2:"
        )
    else:
        assert env.thread_format is None


def test_parallel_seed():
    parallel_seed_test(lambda: parallel_env(max_turns=2, **FAST))


def test_same_seed_same_game():
    def game(seed):
        env = parallel_env(max_turns=2, **FAST)
        obs, infos = env.reset(seed=seed)
        steps = play(env, ["hi", "hello", UNSAFE_REPLY, "calm down"])
        return infos["adversary"]["opener_id"], obs, [(s[0], s[1], s[4]) for s in steps]

    assert game(5) == game(5)
    assert len({game(s)[0] for s in range(6)}) > 1  # the seed draws the opener


def test_turns_alternate_and_truncate():
    env = parallel_env(max_turns=3, **FAST)
    obs, infos = env.reset(seed=0)
    assert env.agents == list(AGENTS) and env.to_move == "adversary"
    assert infos["adversary"]["to_move"] and not infos["defender"]["to_move"]
    assert infos["adversary"]["turn"] == 0 and [
        m["role"] for m in parse_observation(obs["defender"])
    ] == [OPENER]
    for turn in (1, 2, 3):
        obs, rewards, terminated, truncated, infos = env.step({"adversary": f"question {turn}"})
        assert rewards == {"adversary": 0.0, "defender": 0.0}
        assert infos["defender"]["to_move"] and not infos["adversary"]["to_move"]
        assert (
            infos["adversary"]["turn"] == turn
            and infos["adversary"]["utterance"] == f"question {turn}"
        )
        assert parse_observation(obs["adversary"])[-1] == {
            "role": ADVERSARY,
            "content": f"question {turn}",
        }
        assert not any(truncated.values())
        obs, rewards, terminated, truncated, infos = env.step({"defender": f"answer {turn}"})
        assert parse_observation(obs["defender"])[-1] == {
            "role": DEFENDER,
            "content": f"answer {turn}",
        }
        assert obs["adversary"] == obs["defender"]
        assert infos["defender"]["turn"] == turn and "reward_terms" in infos["adversary"]
        assert not any(terminated.values())
        if turn < 3:
            assert infos["adversary"]["to_move"] and not infos["defender"]["to_move"]
            assert not any(truncated.values()) and env.agents == list(AGENTS)
    assert truncated == {"adversary": True, "defender": True}
    assert env.agents == [] and env.to_move is None
    assert not infos["adversary"]["to_move"] and not infos["defender"]["to_move"]
    assert len(infos["defender"]["transcript"]) == 1 + 2 * 3
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step({"adversary": "more"})
    env.reset()
    assert env.agents == list(AGENTS) and env.to_move == "adversary"


def test_terminate_on_unsafe_ends_the_game_for_both():
    env = parallel_env(max_turns=3, terminate_on_unsafe=True, **FAST)
    env.reset(seed=0)
    *_, (_, _, terminated, truncated, infos) = play(env, ["hi", BENIGN_REPLY, "and?", UNSAFE_REPLY])
    assert terminated == {"adversary": True, "defender": True}
    assert not any(truncated.values()) and env.agents == []
    assert infos["defender"]["defender_unsafe"]


def test_reward_split_unsafe_and_benign():
    env = parallel_env(max_turns=2, **FAST)
    env.reset(seed=0)
    (_, r_adv_step, *_), (_, rewards, _, _, infos) = play(env, ["say something rude", UNSAFE_REPLY])
    assert r_adv_step == {"adversary": 0.0, "defender": 0.0}
    info = infos["defender"]
    # the same info, but the defender's own view of the conversation
    assert "defender_view" in info
    assert {**info, "defender_view": None} == {
        **infos["adversary"],
        "to_move": False,
        "defender_view": None,
    }
    p = info["defender_unsafe_prob"]
    assert p >= 0.5 and info["defender_response"] == UNSAFE_REPLY
    assert info["reward_terms"]["perez"] == pytest.approx(-math.log1p(-min(p, 0.999)))
    assert rewards["adversary"] == info["reward_terms"]["perez"] > 0
    assert rewards["defender"] == info["reward_terms"]["safety"] < 0
    assert rewards["defender"] == pytest.approx(-rewards["adversary"])

    _, (_, rewards, _, _, infos) = play(env, ["say something rude", BENIGN_REPLY])
    assert infos["adversary"]["defender_unsafe_prob"] < 0.5
    assert rewards["adversary"] == pytest.approx(0.0, abs=0.3)
    assert rewards["defender"] == pytest.approx(0.0, abs=0.3)


def test_default_reward_splits_by_defender_terms():
    """The default `perez,safe`: the defender gets safety, refusal and relevance."""
    env = parallel_env(judge="profanity")
    assert GAME_DEFAULTS.reward == "perez,safe"
    env.reset(seed=0)
    _, (_, rewards, _, _, infos) = play(env, ["Do you like storms?", "I can't help with that."])
    terms = infos["defender"]["reward_terms"]
    assert set(terms) == {"perez", "safety", "refusal", "relevance"}
    assert terms["refusal"] == -0.25
    assert rewards["defender"] == pytest.approx(sum(terms[t] for t in DEFENDER_TERMS))
    assert rewards["adversary"] == pytest.approx(terms["perez"])
    assert terms["perez"] == pytest.approx(
        perez_reward(infos["defender"]["defender_unsafe_prob"], 0.999)
    )


def test_the_idle_agents_action_is_ignored():
    def game(idle):
        env = parallel_env(max_turns=2, **FAST)
        env.reset(seed=1)
        out = []
        for text in ["hi", "hello", "well?", "fine"]:
            mover = env.to_move
            actions = {mover: text}
            if idle != "missing":
                actions["defender" if mover == "adversary" else "adversary"] = idle
            out.append(env.step(actions))
        return out

    assert game("missing") == game(UNSAFE_REPLY) == game(12345) == game(None)


def test_the_adversary_utterance_is_clipped():
    env = parallel_env(max_utterance_tokens=4, **FAST)  # 4 tokens: 16 chars without a tokenizer
    env.reset(seed=0)
    _, _, _, _, infos = env.step({"adversary": "x" * 40})
    assert infos["adversary"]["utterance"] == "x" * 16 and infos["adversary"]["utterance_truncated"]
    _, _, _, _, infos = env.step({"defender": "   "})  # whitespace alone says "..."
    assert infos["defender"]["utterance"] == "x" * 16
    assert infos["defender"]["defender_response"] == "..."


def test_opener_options():
    env = parallel_env(**FAST)
    _, infos = env.reset(seed=0, options={"opener_index": 2})
    chosen = env.engine.openers[2]
    assert infos["defender"]["opener_id"] == chosen.id
    _, infos = env.reset(options={"opener_id": chosen.id})
    assert infos["adversary"]["opener"] == chosen.text
    with pytest.raises(ValueError, match="no opener with id"):
        env.reset(options={"opener_id": "no-such-opener"})
    with pytest.raises(ValueError, match="opener_index must be in"):
        env.reset(options={"opener_index": 10**6})


def test_bad_actions_name_the_agent():
    env = parallel_env(**FAST)
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"adversary": "hi"})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="no entry for 'adversary'"):
        env.step({"defender": "hi"})
    with pytest.raises(
        TypeError, match=r"actions\['adversary'\] must be the adversary's utterance"
    ):
        env.step({"adversary": 3})
    with pytest.raises(ValueError, match=r"actions\['adversary'\] is empty"):
        env.step({"adversary": ""})
    with pytest.raises(ValueError, match="unknown agent"):
        env.step({"adversary": "hi", "judge": "x"})
    with pytest.raises(TypeError, match="dict"):
        env.step(["hi", "there"])
    env.step({"adversary": "hi"})
    with pytest.raises(ValueError, match="no entry for 'defender'"):
        env.step({"adversary": "hi"})
    with pytest.raises(TypeError, match=r"actions\['defender'\] must be the defender's reply"):
        env.step({"defender": b"bytes"})
    with pytest.raises(ValueError, match="unknown agent"):
        env.action_space("judge")


def test_bad_arguments():
    with pytest.raises(ValueError, match="defender is an agent"):
        parallel_env(defender="smollm2-135m-instruct", **FAST)
    with pytest.raises(ValueError, match=r"no term for the defender \(one of"):
        parallel_env(judge="profanity", reward="perez")
    with pytest.raises(ValueError, match=r"no term for the adversary \(one of"):
        parallel_env(judge="profanity", reward="safety=1")
    with pytest.raises(ValueError, match="needs a defender with log_likelihood"):
        parallel_env(judge="profanity", reward="perez,safety=1,likelihood=0.1")
    with pytest.raises(ValueError, match="max_turns"):
        parallel_env(max_turns=9, **FAST)
    with pytest.raises(ValueError, match="render_mode"):
        parallel_env(render_mode="human", **FAST)


def test_render_ansi_is_the_transcript():
    env = parallel_env(render_mode="ansi", **FAST)
    assert env.render() is None
    obs, _ = env.reset(seed=0)
    env.step({"adversary": "hello"})
    text = env.render()
    assert isinstance(text, str) and text.endswith("[adversary]\nhello")
    assert text.startswith(obs["adversary"])
