"""Checkpoint I/O of the learners: one directory per run, written atomically, checked on load.

A run DIR holds `checkpoint/` with `config.json` (the learner config), `actor/` (the actor
LM, or a LoRA learner's adapters alone), `critic.pt`, `state.pt` (update index, optimizers,
KL controller, history, RNG states, ...) and `meta.json` (which learner, which update),
written last. `write_checkpoint` writes a temporary directory and renames it into place, so
a killed save leaves the previous checkpoint whole; loading checks every file first and a
`CheckpointError` names the one that is incomplete or corrupt. What goes into the files is
the learner's (`OnPolicyLearner.save`/`load`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from agents.common.config import LearnerConfig
from agents.common.lora import ADAPTER_FILES
from redteam_gym.files import fsync_dir, fsync_tree

_log = logging.getLogger(__name__)

CHECKPOINT_FILES = ("config.json", "state.pt", "critic.pt", "actor")
OLD_CHECKPOINT = ".checkpoint-old"
"""Where a save keeps the previous checkpoint while it renames the new one into place."""


class CheckpointError(ValueError):
    """A checkpoint is incomplete or corrupt; the message names the file and what is wrong."""


STATE_KEYS = ("update_idx", "total_updates", "optimizers", "kl_ctl", "history", "rng")


def write_checkpoint(
    path: str | os.PathLike[str], write: Callable[[Path], None], meta: dict[str, Any]
) -> Path:
    """`path/checkpoint`, written atomically: `write(directory)` fills a temporary directory,
    `meta.json` goes in last, and the directory is renamed into place, so an interrupted save
    leaves the previous checkpoint intact."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    ckpt = path / "checkpoint"
    for stale in path.glob(".checkpoint-*-tmp"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path / f".checkpoint-{os.getpid()}-tmp"
    tmp.mkdir()
    write(tmp)
    # meta.json last: a directory that has it holds every file
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    fsync_tree(tmp)  # the files are on disk before the rename makes them the checkpoint
    old = path / OLD_CHECKPOINT
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        ckpt.rename(old)
    # a kill here leaves no checkpoint/ but a whole OLD_CHECKPOINT: loading restores it
    tmp.rename(ckpt)
    fsync_dir(path)
    shutil.rmtree(old, ignore_errors=True)
    return ckpt


def read_config(
    path: str | os.PathLike[str], config_class: type[LearnerConfig], **overrides: Any
) -> LearnerConfig:
    """The config saved with the checkpoint at `path`, as `config_class` (which must be the
    class that wrote it); `overrides` replace fields."""
    file = checkpoint_dir(path) / "config.json"
    data = read_json(file)
    saved_class = data.pop("class", config_class.__name__)
    if saved_class != config_class.__name__:
        raise ValueError(f"{path} holds a {saved_class} checkpoint, not {config_class.__name__}")
    try:
        return config_class.from_dict({**data, **overrides})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a valid {saved_class}: {exc}") from exc


def read_state(ckpt: Path) -> tuple[Any, dict[str, Any]]:
    """The critic's state dict and the learner state of the checkpoint directory `ckpt`."""
    critic = torch_load(ckpt / "critic.pt", map_location="cpu")
    state = torch_load(ckpt / "state.pt", map_location="cpu", weights_only=False)
    missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else None
    if missing is None or missing:
        raise CheckpointError(
            f"{ckpt / 'state.pt'} is not a learner state: "
            + (f"it lacks {missing}" if missing else f"it holds a {type(state).__name__}")
        )
    return critic, state


def checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """The checkpoint directory of a run DIR (or the directory itself), checked complete."""
    path = Path(path)
    restore_interrupted_swap(path)
    for candidate in (path / "checkpoint", path):
        present = [n for n in (*CHECKPOINT_FILES, "meta.json") if (candidate / n).exists()]
        if not present:
            continue
        missing = [n for n in CHECKPOINT_FILES if not (candidate / n).exists()]
        if missing:
            raise CheckpointError(
                f"checkpoint {candidate} is incomplete: {', '.join(missing)} missing "
                f"(it holds {', '.join(sorted(p.name for p in candidate.iterdir()))})"
            )
        return candidate
    raise FileNotFoundError(
        f"no learner checkpoint in {path} (expected {path}/checkpoint/state.pt)"
    )


def restore_interrupted_swap(path: Path) -> None:
    """A save killed between its two renames leaves the previous checkpoint under
    `OLD_CHECKPOINT` and none under `checkpoint/`: put the previous one back."""
    old, ckpt = path / OLD_CHECKPOINT, path / "checkpoint"
    if ckpt.exists() or not (old / "meta.json").is_file():
        return
    old.rename(ckpt)
    fsync_dir(path)
    _log.warning("%s: restored the previous checkpoint (a save was interrupted)", ckpt)


def read_json(file: Path) -> dict[str, Any]:
    """A checkpoint's JSON object (`CheckpointError` names the file when it is not one)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{file} is not readable JSON ({exc}): the checkpoint is corrupt"
        ) from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} holds a JSON {type(data).__name__}, not an object")
    return data


def torch_load(file: Path, **kwargs: Any) -> Any:
    """`torch.load`, with `CheckpointError` naming a truncated or corrupt file."""
    try:
        return torch.load(file, **kwargs)
    except Exception as exc:  # truncated zip, bad pickle, ...: torch raises many kinds
        size = file.stat().st_size if file.exists() else 0
        raise CheckpointError(
            f"{file} is truncated or corrupt ({size} bytes; {type(exc).__name__}: {exc})"
        ) from exc


def check_actor(actor: Path, *, adapters: bool = False) -> None:
    """The saved actor has a readable config and whole weight files (checked before the
    model loads, whose own errors do not name the file): a whole LM, or with `adapters` (a
    LoRA learner's) peft's adapter files."""
    saved_adapters = (actor / ADAPTER_FILES[0]).exists()
    if saved_adapters != adapters:
        raise CheckpointError(
            f"{actor} holds {'LoRA adapters' if saved_adapters else 'a whole model'}, but the "
            f"config {'has' if adapters else 'has no'} LoRA (lora.rank)"
        )
    read_json(actor / (ADAPTER_FILES[0] if adapters else "config.json"))
    weights = [actor / ADAPTER_FILES[1]] if adapters else sorted(actor.glob("*.safetensors"))
    if not weights or not weights[0].exists():
        expected = ADAPTER_FILES[1] if adapters else "*.safetensors weights"
        raise CheckpointError(f"{actor} has no {expected}")
    from safetensors import safe_open

    for file in weights:
        try:
            with safe_open(str(file), framework="pt"):
                pass  # opening checks the header and that the data covers the whole file
        except Exception as exc:
            raise CheckpointError(
                f"{file} is truncated or corrupt ({file.stat().st_size} bytes; {exc})"
            ) from exc


def saved_update(run_path: str | os.PathLike[str]) -> int | None:
    """The update of the checkpoint in the run directory `run_path`, None when there is none."""
    meta = Path(run_path) / "checkpoint" / "meta.json"
    try:
        return int(json.loads(meta.read_text())["update"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checkpoint_learner_name(path: str | os.PathLike[str]) -> str:
    """Which learner class wrote the checkpoint at `path`."""
    file = checkpoint_dir(path) / "meta.json"
    learner = read_json(file).get("learner")
    if not isinstance(learner, str):
        raise CheckpointError(f"{file} names no learner")
    return learner
