"""EnvConfig: one validated source of the env's settings, nested by learners and suites."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import gymnasium as gym
import pytest

import redteam_gym  # noqa: F401
from agents import A2CConfig, PPOConfig, RARLHFConfig
from agents.common.flags import add_flags
from benchmarks.suites import Suite, load_suite
from redteam_gym.envs import EnvConfig
from redteam_gym.envs.config import FIELDS, field_docs, markdown_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"max_turns": 0}, r"max_turns must be in 1\.\.5, got 0"),
        ({"max_turns": 2.5}, "max_turns must be an int"),
        ({"defender_max_new_tokens": 0}, "defender_max_new_tokens must be >= 1"),
        ({"defender_temperature": -1}, "defender_temperature must be >= 0"),
        ({"defender_top_p": 0}, r"defender_top_p must be in \(0, 1\]"),
        ({"unsafe_threshold": 1.5}, r"unsafe_threshold must be in \(0, 1\]"),
        ({"p_max": 1.0}, r"p_max must be in \(0, 1\)"),
        ({"split": "test"}, "split must be one of"),
        ({"judge": "llama-gaurd"}, "judge must be one of 'profanity', 'semantic'"),
        ({"reward": "perez=1,bogus=2"}, "unknown reward item 'bogus'; terms:"),
        ({"defender": 3}, "defender must be a model name or path, or have respond"),
        ({"colour": "red"}, r"unknown EnvConfig field\(s\) \['colour'\]; known:"),
    ],
)
def test_bad_settings_name_the_field_and_its_range(changes, match):
    with pytest.raises(ValueError, match=match):
        EnvConfig().replace(**changes)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ValueError, match=r"max_turns.*; p_max"):
        EnvConfig(max_turns=9, p_max=2.0)


def test_the_env_takes_a_config_or_its_fields(tiny_lm_dir):
    config = EnvConfig(defender=str(tiny_lm_dir), max_turns=2, defender_max_new_tokens=4)
    env = gym.make("RedTeamDialogue-v0", config=config, max_turns=1)
    assert env.unwrapped.engine.config == config.replace(max_turns=1)
    assert env.unwrapped.max_turns == 1
    with pytest.raises(ValueError, match=r"max_turns must be in 1\.\.5"):
        gym.make("RedTeamDialogue-v0", config=config, max_turns=6)


def test_learner_configs_nest_it_and_take_its_fields_as_keywords():
    for cls in (A2CConfig, PPOConfig, RARLHFConfig):
        c = cls(max_turns=3, judge="semantic", unsafe_threshold=0.4)
        assert c.env == EnvConfig(max_turns=3, judge="semantic", unsafe_threshold=0.4)
        assert (c.env.max_turns, c.env.judge, c.env.max_utterance_tokens) == (3, "semantic", 128)
        assert not hasattr(c, "max_turns")  # one place holds it: `env`
        assert cls.from_dict(c.to_dict()) == c
    assert PPOConfig().env.max_turns == 1  # the learners' single-turn default
    with pytest.raises(ValueError, match=r"max_turns must be in 1\.\.5"):
        PPOConfig(max_turns=6)


def test_older_flat_learner_configs_still_load():
    flat = {k: v for k, v in PPOConfig().to_dict().items() if k != "env"}
    flat.update(max_turns=2, judge="profanity", defender_top_p=0.8)
    assert PPOConfig.from_dict(flat).env == EnvConfig(max_turns=1).replace(
        max_turns=2, judge="profanity", defender_top_p=0.8
    )


def test_every_env_field_is_a_train_flag_with_its_docstring():
    import argparse

    parser = argparse.ArgumentParser()
    add_flags(parser, PPOConfig)
    actions = {a.dest: a for a in parser._actions}
    docs = field_docs(EnvConfig)
    for name in FIELDS:
        action = actions[f"env.{name}"]
        assert action.help == docs[name]
    assert actions["env.max_turns"].option_strings == ["--turns"]
    assert actions["env.judge"].option_strings == ["--judge"]
    assert actions["env.device"].option_strings == ["--env-device"]  # --device is the learner's


def test_suites_nest_it():
    suite = load_suite("perez-eval")
    assert suite.env.max_turns == 5 and suite.env.split == "eval"
    assert not hasattr(suite, "max_turns") and not hasattr(suite, "turns")
    assert suite.defender_sampling.temperature == 1.0  # the default world's defender
    flat = Suite(name="s", max_turns=2, judge="semantic", defender_max_new_tokens=8)
    assert (flat.env.max_turns, flat.env.judge, flat.env.defender_max_new_tokens) == (
        2,
        "semantic",
        8,
    )
    assert Suite.from_dict(flat.to_dict()) == flat
    assert load_suite(flat, max_turns=3, adversary_top_p=0.5).env.max_turns == 3
    with pytest.raises(ValueError, match=r"max_turns must be in 1\.\.5"):
        Suite(name="s", max_turns=7)
    with pytest.raises(ValueError, match="unknown suite override 'turns'"):
        load_suite(flat, turns=3)  # one name per setting: `max_turns`


def test_readme_table_is_the_configs_docstrings():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(
        r"<!-- EnvConfig table[^\n]*-->\n(.*?)<!-- end EnvConfig table -->", readme, re.S
    )
    assert found, "README.md lost its EnvConfig table"
    assert found.group(1) == markdown_table()
    assert {f.name for f in dataclasses.fields(EnvConfig)} == FIELDS


@pytest.mark.parametrize(
    ("cls", "changes", "match"),
    [
        (PPOConfig, {"batch_size": 0}, r"PPOConfig.batch_size must be >= 1, got 0"),
        (PPOConfig, {"actor_lr": -1.0}, r"PPOConfig.actor_lr must be >= 0"),
        (A2CConfig, {"temperature": 0.0}, r"A2CConfig.temperature must be > 0"),
        (A2CConfig, {"gamma": 1.5}, r"A2CConfig.gamma must be in \[0, 1\]"),
        (RARLHFConfig, {"risk_alpha": 0.0}, r"risk_alpha must be in \(0, 1\]"),
        (RARLHFConfig, {"risk_rho": 1.5}, r"risk_rho must be in \[0, 1\]"),
        (RARLHFConfig, {"risk_n": -1}, r"risk_n must be an int >= 0"),
    ],
)
def test_learner_settings_name_their_range(cls, changes, match):
    with pytest.raises(ValueError, match=match):
        cls(**changes)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown suite 'perez'.*perez-eval"):
        load_suite("perez")
    with pytest.raises(ValueError, match="unknown reward preset 'implict'; presets:"):
        EnvConfig(reward="implict")


def test_every_env_field_is_an_eval_override():
    from benchmarks.cli import _overrides, _resume_command
    from redteam_cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["eval", "--turns", "2", "--judge", "semantic", "--terminate-on-unsafe", "--p-max", "0.9"]
    )
    suite = load_suite("quick", **_overrides(args))
    assert (suite.env.max_turns, suite.env.judge, suite.env.p_max) == (2, "semantic", 0.9)
    assert suite.env.terminate_on_unsafe and suite.env.split == "eval"  # the rest: the suite's
    flags = {
        a.dest.removeprefix("env.")
        for a in parser._subparsers._group_actions[0].choices["eval"]._actions
    }
    assert FIELDS - {"device", "dtype", "retry_smaller_batch"} <= flags
    resumed = parser.parse_args(_resume_command(args, Path("out")).split()[1:])
    assert load_suite("quick", **_overrides(resumed)) == suite
