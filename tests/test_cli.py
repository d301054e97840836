"""The command line's parser: one flag generator (`agents.common.flags`) for every command,
and a parser that loads no model library."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from agents import CONFIGS, LEARNERS, KLConfig, PPOConfig, RARLHFConfig
from agents.common.flags import add_flags, config_from_args, flag_of, flags, given
from benchmarks.selfplay import GameConfig
from benchmarks.suites import Suite
from redteam_gym.envs.config import FIELDS

ROOT = Path(__file__).resolve().parents[1]
MODEL_LIBRARIES = ("torch", "transformers", "sentence_transformers", "peft", "sklearn")


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["game", "--help"]])
def test_building_the_parser_imports_no_model_library(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from redteam_cli import build_parser\n"
        "try:\n"
        f"    build_parser().parse_args({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {MODEL_LIBRARIES!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr


def test_learner_names_are_the_configs_names() -> None:
    assert list(LEARNERS) == list(CONFIGS)
    assert all(LEARNERS[name].config_class is CONFIGS[name] for name in CONFIGS)


def test_flags_follow_the_naming_rule() -> None:
    by_dest = {f.dest: f for f in flags(RARLHFConfig)}
    assert by_dest["batch_size"].flag == "--batch-size"
    assert by_dest["kl.coef"].flag == "--kl-coef" and by_dest["lora.rank"].flag == "--lora-rank"
    assert by_dest["env.judge"].flag == "--judge"  # the env's fields keep their names
    assert by_dest["env.device"].flag == "--env-device"  # --device is the learner's
    assert by_dest["env.max_turns"].flag == "--turns"  # spelt once, for every command
    assert flag_of(Suite, "env.max_turns") == flag_of(GameConfig, "env.max_turns") == "--turns"
    assert {f.dest.removeprefix("env.") for f in flags(PPOConfig) if f.dest.startswith("env.")} == (
        FIELDS
    )


def test_flag_types_come_from_the_annotations_as_written() -> None:
    by_dest = {f.dest: f for f in flags(RARLHFConfig)}
    assert (by_dest["env.max_turns"].kind, by_dest["env.p_max"].kind) == (int, float)
    assert by_dest["env.defender"].kind is str  # `str | Defender`
    assert by_dest["env.device"].kind is str  # `str | torch.device | None`
    assert by_dest["env.terminate_on_unsafe"].kind is bool
    assert by_dest["kl.estimator"].choices == ("k1", "k3", "abs", "mse")
    assert by_dest["role"].choices == ("adversary", "defender")
    assert {f.dest: f.kind for f in flags(GameConfig)}["adversary_config"] is str  # JSON


def test_config_from_args_keeps_the_defaults_of_absent_flags() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, *CONFIGS.values())
    args = parser.parse_args(["--turns", "2", "--kl-coef", "0.1", "--no-lr-decay"])
    assert given(args, PPOConfig) == {"env.max_turns": 2, "kl.coef": 0.1, "lr_decay": False}
    config = config_from_args(PPOConfig, args)
    assert config == PPOConfig(max_turns=2, kl=KLConfig(coef=0.1), lr_decay=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--kl-estimator", "k2"])  # not one of the choices


def test_every_command_takes_turns_once() -> None:
    from redteam_cli import build_parser

    parser = build_parser()
    for command in ("train", "eval", "demo", "game"):
        argv = [command, "--turns", "2"]
        argv += {"train": ["--updates", "1", "--out", "x"], "game": ["--out", "x"]}.get(command, [])
        assert vars(parser.parse_args(argv))["env.max_turns"] == 2
