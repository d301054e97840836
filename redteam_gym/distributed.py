"""The defender and the judge as replicas on Ray actors: one batch split over many workers.

    env = gym.make("RedTeamDialogue-v0", defender="ray[replicas=4]:smollm2-135m-instruct",
                   judge="ray[replicas=2]:semantic")

`ray[option=value,...]:SPEC` wraps any defender or judge spec (a model, a served
`openai:URL#MODEL`, a judge ensemble `a+b`): each replica is a Ray actor that builds the
component from `SPEC` once, and a batch is cut into one contiguous shard per replica, the
shards run at once, and their results are joined in order. Options:

| option | default | meaning |
|---|---|---|
| `replicas` | 2 | actors, each holding one copy of the component |
| `address` | none | a running cluster (`auto`, `ray://head:10001`); none starts Ray on this machine |
| `num_cpus`, `num_gpus` | 1, 0 | what each replica reserves |
| `timeout_s` | 600 | longest wait for one batch; then a named error, never a hang |
| `max_restarts` | 3 | times Ray starts a dead replica again; the call in flight on it is retried as many times |

A replica that dies (its process killed, its node lost) is started again by Ray
(`max_restarts`), which retries the shard it was running (`max_task_retries`): the batch comes
back whole, one result per conversation, in order. Same spec and settings, same greedy replies
as the in-process component; a seeded batch seeds each shard from the env's generator, so
sampled replies are reproducible but differ from the in-process ones.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from redteam_gym.models.chat import Message

if TYPE_CHECKING:  # the judges import this module for `is_ray_spec`
    from redteam_gym.judges.base import JudgeOutput

__all__ = ["RAY_SPEC", "RayDefender", "RayJudge", "RayOptions", "is_ray_spec", "parse_ray_spec"]

RAY_SPEC = re.compile(r"^\s*ray(?:\[(?P<options>[^\]]*)\])?:(?P<inner>.+)$", re.DOTALL)
"""`ray[option=value,...]:SPEC`."""


@dataclass(frozen=True)
class RayOptions:
    """How a component is spread over Ray actors (see the module docstring)."""

    replicas: int = 2
    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    timeout_s: float = 600.0
    max_restarts: int = 3

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.timeout_s <= 0 or self.max_restarts < 0:
            raise ValueError(
                "ray options: replicas >= 1, timeout_s > 0 and max_restarts >= 0 are needed, "
                f"got {self}"
            )


def is_ray_spec(spec: object) -> bool:
    """Whether `spec` is `ray[...]:SPEC`."""
    return isinstance(spec, str) and RAY_SPEC.match(spec) is not None


def parse_ray_spec(spec: str) -> tuple[RayOptions, str]:
    """`ray[option=value,...]:SPEC` -> its options and the inner `SPEC`."""
    found = RAY_SPEC.match(spec)
    if found is None or not found["inner"].strip():
        raise ValueError(f"a Ray spec has the form 'ray[option=value,...]:SPEC', got {spec!r}")
    types = {f.name: f.type for f in fields(RayOptions)}
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (found["options"] or "").split(","))):
        name, eq, value = (s.strip() for s in part.partition("="))
        if not eq or name not in types:
            raise ValueError(f"{spec!r}: bad Ray option {part!r}; known: {sorted(types)}")
        cast = {"int": int, "float": float}.get(str(types[name]).split(" ")[0], str)
        try:
            values[name] = cast(value)
        except ValueError as exc:
            raise ValueError(f"{spec!r}: Ray option {name}={value!r} is not a number") from exc
    return RayOptions(**values), found["inner"].strip()


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "a ray[...] spec needs Ray: pip install 'redteam-gym[ray]' (make install does)"
        ) from exc
    return ray


def _start(options: RayOptions) -> Any:
    ray = _ray()
    if not ray.is_initialized():
        # workers import redteam_gym the way this process does
        path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), *_source_root()) if p)
        ray.init(
            address=options.address,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
    return ray


def _source_root() -> list[str]:
    import redteam_gym

    return [os.path.dirname(os.path.dirname(os.path.abspath(redteam_gym.__file__)))]


def _shards(n: int, parts: int) -> list[slice]:
    """Contiguous, near-equal slices of `range(n)`, none empty."""
    bounds = np.linspace(0, n, min(parts, n) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


class _Replicas:
    """Ray actors each holding one component, and a batch sharded over them."""

    def __init__(self, options: RayOptions, actor_class: Any, *args: Any) -> None:
        ray = _start(options)
        self.options = options
        remote = ray.remote(actor_class).options(
            num_cpus=options.num_cpus,
            num_gpus=options.num_gpus,
            max_restarts=options.max_restarts,
            max_task_retries=options.max_restarts,
        )
        self.actors = [remote.remote(*args) for _ in range(options.replicas)]

    def run(self, method: str, items: Sequence[Any], extra: Sequence[Any], what: str) -> list[Any]:
        """`actor.method(shard, extra[k])` over the shards, joined in order."""
        ray = _ray()
        shards = _shards(len(items), len(self.actors))
        refs = [
            getattr(actor, method).remote(list(items[s]), extra[k])
            for k, (actor, s) in enumerate(zip(self.actors, shards, strict=False))
        ]
        try:
            return ray.get(refs, timeout=self.options.timeout_s)
        except ray.exceptions.GetTimeoutError as exc:
            raise TimeoutError(
                f"Ray replicas of the {what}: no answer in {self.options.timeout_s} s"
            ) from exc
        except ray.exceptions.RayActorError as exc:
            raise RuntimeError(
                f"a Ray replica of the {what} died more than max_restarts="
                f"{self.options.max_restarts} times: {exc}"
            ) from exc

    def call_all(self, method: str) -> list[Any]:
        ray = _ray()
        refs = [getattr(a, method).remote() for a in self.actors]
        return ray.get(refs, timeout=self.options.timeout_s)

    def close(self) -> None:
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


class DefenderReplica:
    """One Ray actor's defender (built from its spec in the actor's process)."""

    def __init__(self, spec: str, settings: dict[str, Any]) -> None:
        from redteam_gym.defenders import make_defender

        self.defender = make_defender(spec, **settings)

    def respond(self, conversations: list[list[Message]], seed: int | None) -> list[str]:
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return list(self.defender.respond(conversations, generator))

    def format(self) -> str | None:
        return getattr(self.defender, "format", None)

    def tokenizer(self) -> Any:
        return getattr(self.defender, "tokenizer", None)

    def pid(self) -> int:
        return os.getpid()


class JudgeReplica:
    """One Ray actor's judge."""

    def __init__(self, spec: str, settings: dict[str, Any]) -> None:
        from redteam_gym.judges import make_judge

        self.judge = make_judge(spec, **settings)

    def score(self, conversations: list[list[Message]], _: None) -> JudgeOutput:
        return self.judge.score(conversations)

    def pid(self) -> int:
        return os.getpid()


class RayDefender:
    """A defender whose batches are split over Ray actor replicas (`defender="ray[...]:SPEC"`).

    Args:
        spec: `ray[option=value,...]:SPEC`, or the inner spec with `options`.
        options: Ray settings when `spec` is the inner spec.
        **settings: `make_defender`'s keywords (sampling, system_prompt, thread, device,
            dtype, weights), given to every replica.
    """

    def __init__(self, spec: str, options: RayOptions | None = None, **settings: Any) -> None:
        if options is None:
            options, spec = parse_ray_spec(spec)
        self.spec = spec
        self.name = f"ray[replicas={options.replicas}]:{spec}"
        self.replicas = _Replicas(options, DefenderReplica, spec, settings)
        self.format = self.replicas.call_all("format")[0]
        # cuts utterances to the env's max_utterance_tokens, as the replicas' own would
        self.tokenizer = self.replicas.call_all("tokenizer")[0]

    def __repr__(self) -> str:
        return f"RayDefender({self.name!r})"

    def respond(
        self, conversations: Sequence[Sequence[Message]], generator: torch.Generator | None = None
    ) -> list[str]:
        """The replicas' replies, one per conversation, in order."""
        if not conversations:
            return []
        parts = len(_shards(len(conversations), len(self.replicas.actors)))
        seeds: list[int | None] = [None] * parts
        if generator is not None:
            seeds = [int(s) for s in torch.randint(0, 2**31 - 1, (parts,), generator=generator)]
        shards = self.replicas.run("respond", conversations, seeds, "defender")
        return [reply for shard in shards for reply in shard]

    def close(self) -> None:
        self.replicas.close()


class RayJudge:
    """A judge whose batches are split over Ray actor replicas (`judge="ray[...]:SPEC"`)."""

    def __init__(self, spec: str, options: RayOptions | None = None, **settings: Any) -> None:
        if options is None:
            options, spec = parse_ray_spec(spec)
        self.spec = spec
        self.name = f"ray[replicas={options.replicas}]:{spec}"
        self.replicas = _Replicas(options, JudgeReplica, spec, settings)

    def __repr__(self) -> str:
        return f"RayJudge({self.name!r})"

    def close(self) -> None:
        self.replicas.close()

    def score(self, conversations: Sequence[Sequence[Message]]) -> JudgeOutput:
        """The replicas' scores, joined in order."""
        from redteam_gym.judges.base import JudgeOutput

        if not conversations:
            return JudgeOutput(np.zeros(0))
        parts = self.replicas.run("score", conversations, [None] * len(conversations), "judge")
        p = np.concatenate([part.p_unsafe for part in parts])
        if any(part.categories is None for part in parts):
            return JudgeOutput(p)
        return JudgeOutput(p, [c for part in parts for c in part.categories])
