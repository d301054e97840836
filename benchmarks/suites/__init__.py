"""Evaluation suites: the protocol of an evaluation, as data.

A suite fixes everything but the adversary: which openers, how many turns and
conversations, the defender and its sampling, the judge, the seeds, the unsafe
threshold and the CVaR level. Built-in suites are the JSON files next to this module:

==============  ============================================================================
``perez-eval``  the seed paper's protocol (section 5.1): 500 conversations of 5 turns on the
                eval-split openers
``quick``       the same protocol scaled down (32 conversations x 3 turns): minutes on a CPU
``single-turn`` Perez et al. (2022)'s single-turn setting: 500 one-turn conversations
==============  ============================================================================

``load_suite`` also reads a user's JSON file with the same fields (any field left out
takes the ``Suite`` default), and applies overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redteam_gym.envs.config import FIELDS as ENV_FIELDS
from redteam_gym.envs.config import EnvConfig

__all__ = [
    "SUITES_DIR",
    "Sampling",
    "Suite",
    "list_suites",
    "load_suite",
]

SUITES_DIR = Path(__file__).resolve().parent
"""Where the built-in suite JSON files live."""


@dataclass(frozen=True)
class Sampling:
    """How an LM samples its utterances (mirrors `redteam_gym.models.SamplingConfig`)."""

    max_new_tokens: int = 64
    """Most tokens per utterance."""
    temperature: float = 1.0
    """Softmax temperature; 0 is greedy."""
    top_p: float = 1.0
    """Nucleus mass; 1.0 disables it."""

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise ValueError(f"max_new_tokens must be an int, got {self.max_new_tokens!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def _default_env() -> EnvConfig:
    """The eval env of a suite file that leaves settings out: the default world (`EnvConfig()`)
    on the held-out openers, with 5 turns where the env's default is 3, because 5 is the seed
    paper's evaluation protocol (section 5.1, the `perez-eval` suite)."""
    return EnvConfig(max_turns=5, split="eval")


_OLD_KEYS = {"turns": "max_turns"}
"""Keys of the flat layout of older suite files (before `env`) whose env field has another
name; read from files only (`Suite.from_dict`), never as keywords."""


def _env_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Move the env settings given at the top level (`Suite(name="s", max_turns=2)`, and the
    flat layout of older suite files) into `data["env"]`; `defender_sampling` becomes its
    three fields."""
    data = dict(data)
    moved: dict[str, Any] = {}
    for key in list(data):
        if key == "defender_sampling":
            value = data.pop(key)
            value = dataclasses.asdict(value) if isinstance(value, Sampling) else dict(value)
            moved.update({f"defender_{k}": v for k, v in value.items()})
        elif key in ENV_FIELDS and key not in _OWN_FIELDS:
            moved[key] = data.pop(key)
    if moved:
        env = data.get("env") or _default_env()
        if isinstance(env, dict):
            env = _default_env().replace(**env)
        data["env"] = env.replace(**moved)
    return data


def _suite_init(cls):
    """Let `Suite` take the fields of its `env` as keywords of its own (`_env_keys`)."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **_env_keys(kwargs))

    cls.__init__ = __init__
    return cls


@_suite_init
@dataclass(frozen=True)
class Suite:
    """One evaluation protocol: the env it runs (`env`), how many conversations, the
    adversaries' sampling, the seed and the CVaR level. Every field is plain JSON data.

    The env's fields are also accepted as keywords, so `Suite(name="s", max_turns=2,
    judge="semantic")` works; they are read in `env` (`suite.env.max_turns`), and suite
    files hold them under `env`.
    """

    name: str
    """Short name, used in output paths and reports."""
    description: str = ""
    """One line on what the suite measures."""
    env: EnvConfig = field(default_factory=_default_env)
    """The env's settings: openers (`prompts`, `split`), turns (`max_turns`), the defender
    and its sampling, the judge, `unsafe_threshold`, `max_utterance_tokens`. The defender is
    sampled by default, as a deployed chat model answers."""
    rollouts: int = 500
    """Number of conversations."""
    batch_size: int = 8
    """Conversations run together (``num_envs`` of the vector env). Part of the protocol:
    batched sampling draws depend on the batch, so resume needs the same value."""
    adversary_sampling: Sampling = field(
        default_factory=lambda: Sampling(max_new_tokens=24, temperature=1.0, top_p=0.95)
    )
    """Decoding of the adversaries the runner builds (zero-shot, few-shot); an adversary
    object passed in keeps its own."""
    seed: int = 0
    """Seeds the opener order and every batch (see ``benchmarks.runner``)."""
    cvar_alpha: float = 0.1
    """Tail level of ``return_cvar`` (RA-RLHF): mean of the lowest ``alpha`` returns."""

    def __post_init__(self) -> None:
        if isinstance(self.env, dict):
            object.__setattr__(self, "env", _default_env().replace(**self.env))
        if not isinstance(self.env, EnvConfig):
            raise ValueError(f"suite env must be an EnvConfig or a dict, got {self.env!r}")
        if isinstance(self.adversary_sampling, dict):
            object.__setattr__(
                self,
                "adversary_sampling",
                _from_dict(Sampling, self.adversary_sampling, "suite adversary_sampling"),
            )
        elif not isinstance(self.adversary_sampling, Sampling):
            raise ValueError(
                f"adversary_sampling must be a Sampling or a dict, got {self.adversary_sampling!r}"
            )
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"suite name must be a non-empty string, got {self.name!r}")
        for name in ("rollouts", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"suite {name} must be an int, got {value!r}")
        if self.rollouts < 1:
            raise ValueError(f"suite rollouts must be >= 1, got {self.rollouts}")
        if self.batch_size < 1:
            raise ValueError(f"suite batch_size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise ValueError(f"suite seed must be >= 0, got {self.seed}")
        for name in ("prompts", "judge", "defender"):
            value = getattr(self.env, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"suite {name} must be a non-empty string, got {value!r}")
        if not 0.0 < self.cvar_alpha <= 1.0:
            raise ValueError(f"suite cvar_alpha must be in (0, 1], got {self.cvar_alpha}")

    @property
    def defender_sampling(self) -> Sampling:
        """The defender's decoding, from the env's settings."""
        return Sampling(
            max_new_tokens=self.env.defender_max_new_tokens,
            temperature=self.env.defender_temperature,
            top_p=self.env.defender_top_p,
        )

    @property
    def num_batches(self) -> int:
        """Batches needed for ``rollouts`` conversations (the last one may be padded)."""
        return -(-self.rollouts // self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        """The suite as JSON-ready data (what ``Suite.from_dict`` reads back)."""
        data = dataclasses.asdict(self)
        data["env"] = self.env.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "suite") -> Suite:
        """Build a suite from JSON data (the nested layout, or the flat one of older files);
        unknown keys raise ``ValueError`` naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"{source} must be a JSON object, got {type(data).__name__}")
        try:
            data = {_OLD_KEYS.get(k, k) if k not in _OWN_FIELDS else k: v for k, v in data.items()}
            return _from_dict(cls, _env_keys(data), source)
        except ValueError as exc:
            if str(exc).startswith(source):
                raise
            raise ValueError(f"{source}: {exc}") from exc

    def with_overrides(self, **overrides: Any) -> Suite:
        """A copy with the given fields replaced; ``None`` values are ignored.

        Env fields go into ``env``; ``adversary_max_new_tokens``
        (and ``_temperature``, ``_top_p``) set one field of ``adversary_sampling``.
        """
        changes: dict[str, Any] = {}
        env: dict[str, Any] = {}
        sampling: dict[str, Any] = {}
        for key, value in overrides.items():
            if value is None:
                continue
            role, _, attr = key.partition("_")
            if role == "adversary" and attr in _SAMPLING_FIELDS:
                sampling[attr] = value
            elif key in _OWN_FIELDS:
                changes[key] = value
            elif key in ENV_FIELDS:
                env[key] = value
            else:
                known = sorted(_OWN_FIELDS | ENV_FIELDS)
                raise ValueError(f"unknown suite override {key!r}; known: {known}")
        if env:
            changes["env"] = changes.get("env", self.env).replace(**env)
        if sampling:
            changes["adversary_sampling"] = dataclasses.replace(self.adversary_sampling, **sampling)
        return dataclasses.replace(self, **changes) if changes else self


_OWN_FIELDS = frozenset(f.name for f in dataclasses.fields(Suite))
_SAMPLING_FIELDS = {f.name for f in dataclasses.fields(Sampling)}


def _from_dict(cls: type, data: Any, source: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{source} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source} has unknown field(s) {unknown}; known: {sorted(known)}")
    try:
        return cls(**data)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"{source}: {exc}") from exc


def list_suites() -> list[str]:
    """Names of the built-in suites."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.json"))


def load_suite(name_or_path: str | os.PathLike[str] | Suite, **overrides: Any) -> Suite:
    """A built-in suite by name, or a suite JSON file by path, with overrides applied.

    Overrides are ``Suite`` fields and the env's (``prompts=``, ``max_turns=``, ``rollouts=``,
    ``judge=``, ``defender=``, ``seed=`` ...); ``None`` means "keep the suite's value".
    Raises ``ValueError`` for an unknown name (listing the built-ins), a bad file or field.
    """
    if isinstance(name_or_path, Suite):
        return name_or_path.with_overrides(**overrides)
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text in list_suites():
        path = SUITES_DIR / f"{text}.json"
    elif not (path.suffix == ".json" or path.is_file()):
        raise ValueError(
            f"unknown suite {text!r}: give a built-in name ({', '.join(list_suites())}) "
            "or the path of a suite JSON file"
        )
    if not path.is_file():
        raise ValueError(f"suite file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"suite file {str(path)!r} is not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return Suite.from_dict(data, source=f"suite file {str(path)!r}").with_overrides(**overrides)
