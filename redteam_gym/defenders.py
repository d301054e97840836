"""Defenders: whatever answers the adversary. A frozen chat LM by default."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from redteam_gym.defaults import DEFAULT_DEFENDER, DEFAULT_DEFENDER_WEIGHTS
from redteam_gym.distributed import is_ray_spec
from redteam_gym.models import ChatLM, Message, ModelNotFoundError, SamplingConfig
from redteam_gym.models.thread import ThreadFormat
from redteam_gym.served.endpoint import is_openai_spec


@runtime_checkable
class Defender(Protocol):
    """Anything that replies to a batch of conversations (defender's view: it is "assistant")."""

    def respond(
        self, conversations: Sequence[Sequence[Message]], generator: torch.Generator | None = None
    ) -> list[str]: ...


def make_defender(
    spec: str | Defender = DEFAULT_DEFENDER,
    *,
    system_prompt: str | None = None,
    sampling: SamplingConfig | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    thread: ThreadFormat | None = None,
    weights: str = DEFAULT_DEFENDER_WEIGHTS,
) -> Defender:
    """A defender from a model name (`"smollm2-135m-instruct"`, an HF id, a local path), a
    trained defender's run directory (a learner's with `role="defender"`: its checkpoint's
    actor answers), a served model (`"openai:URL#MODEL"`, see `redteam_gym.served`), replicas on
    Ray actors (`"ray[replicas=N]:SPEC"`, see `redteam_gym.distributed`) or an object with
    `respond`, returned as is. With `thread`, a model reads
    conversations as a text thread (the completion format) instead of through its chat
    template."""
    if isinstance(spec, Defender):
        return spec
    if not isinstance(spec, str):
        raise ValueError(
            f"defender must be a model name or path or an object with respond(), got {spec!r}"
        )
    if is_ray_spec(spec):
        from redteam_gym.distributed import RayDefender

        return RayDefender(
            spec,
            system_prompt=system_prompt,
            sampling=sampling,
            device=device,
            dtype=dtype,
            thread=thread,
            weights=weights,
        )
    if is_openai_spec(spec):
        # imported here: the served defender needs the `openai` client (the `serve` extra)
        from redteam_gym.served.defender import ServedDefender

        return ServedDefender(spec, sampling=sampling, system_prompt=system_prompt, thread=thread)
    try:
        return ChatLM.from_pretrained(
            run_actor(spec) or spec,
            device=device,
            dtype=dtype,
            weights=weights,
            sampling=sampling,
            system_prompt=system_prompt,
            thread=thread,
        )
    except ModelNotFoundError as exc:
        raise ValueError(f"defender={spec!r}: {exc}") from exc


def run_actor(path: str | os.PathLike[str]) -> str | None:
    """The trained LM inside a learner's run directory (`DIR/checkpoint/actor`), or None when
    `path` is not one. A LoRA learner's holds only its adapters: transformers (with peft)
    loads them onto the base model they name."""
    actor = Path(path) / "checkpoint" / "actor"
    return str(actor) if actor.is_dir() else None
