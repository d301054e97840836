"""Safety judges: batched P(unsafe) of the last message of each conversation (the reward).

`make_judge` builds one from a short spec:

| spec | judge |
|---|---|
| `"profanity"` | `ProfanityJudge`: PyPI `alt-profanity-check`, offline, microseconds |
| `"semantic"` (default) | `SemanticJudge`: all-MiniLM-L6-v2 fine-tuned on the project's labelled corpus, offline, categories |
| `"toxblock"` | `ToxBlockJudge`: PyPI `tox-block`'s Jigsaw BiLSTM in torch, offline, 6 labels |
| `"llama-guard"` | `LlamaGuardJudge` on `meta-llama/Llama-Guard-3-1B` |
| `"llama-guard:<id or path>"` | `LlamaGuardJudge` on that causal LM (`llama-guard:smollm2-135m-instruct` is an offline stand-in) |
| `"llama-guard:openai:URL#MODEL"` | `ServedLlamaGuardJudge`: Llama Guard on an OpenAI-compatible server with logprobs (vLLM) |
| `"classifier:<id or path>[@label]"` | `ClassifierJudge` (e.g. `classifier:unitary/toxic-bert@toxic`) |
| `"a+b"`, or a list of specs/judges | `EnsembleJudge` averaging them |
| `"ray[replicas=N]:<spec>"` | `RayJudge`: that judge on N Ray actors, each batch split over them |
| any object with `score` | used as is |
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from redteam_gym.defaults import DEFAULT_JUDGE
from redteam_gym.distributed import is_ray_spec, parse_ray_spec
from redteam_gym.judges.base import Judge, JudgeOutput, validate_conversations
from redteam_gym.judges.classifier import ClassifierJudge
from redteam_gym.judges.ensemble import REDUCTIONS, EnsembleJudge
from redteam_gym.judges.llama_guard import (
    DEFAULT_LLAMA_GUARD,
    LLAMA_GUARD_CATEGORIES,
    LlamaGuardJudge,
    build_prompt,
    neutralize_content,
)
from redteam_gym.judges.profanity import ProfanityJudge
from redteam_gym.judges.semantic import SemanticJudge
from redteam_gym.judges.toxblock import TOXBLOCK_LABELS, ToxBlockJudge
from redteam_gym.served.endpoint import is_openai_spec

__all__ = [
    "DEFAULT_JUDGE",
    "DEFAULT_LLAMA_GUARD",
    "JUDGES",
    "LLAMA_GUARD_CATEGORIES",
    "REDUCTIONS",
    "TOXBLOCK_LABELS",
    "ClassifierJudge",
    "EnsembleJudge",
    "Judge",
    "JudgeOutput",
    "LlamaGuardJudge",
    "ProfanityJudge",
    "SemanticJudge",
    "ToxBlockJudge",
    "build_prompt",
    "check_judge_spec",
    "make_judge",
    "neutralize_content",
    "validate_conversations",
]


JUDGES = ("profanity", "semantic", "toxblock", "llama-guard", "classifier")
"""Judge names `make_judge` knows (`llama-guard` and `classifier` take `:<model>`)."""

_FORMS = (
    "'profanity', 'semantic', 'toxblock', 'llama-guard', 'llama-guard:<hf id or path>', "
    "'llama-guard:openai:URL#MODEL' (served), 'classifier:<hf id or path>[@label]', 'a+b' (mean ensemble), "
    "'ray[replicas=N]:<spec>' (on Ray actors), a list of these, "
    "or an object with a score(conversations) method"
)
_DEFAULT_CLASSIFIER_LABEL = "toxic"


def check_judge_spec(spec: str | Judge | Sequence[str | Judge]) -> None:
    """Raise `ValueError` (listing the valid forms) when `make_judge` could not read `spec`;
    builds nothing and loads no model."""
    if not isinstance(spec, str) and callable(getattr(spec, "score", None)):
        return
    if is_ray_spec(spec):
        check_judge_spec(parse_ray_spec(str(spec))[1])
        return
    if isinstance(spec, str):
        parts: list = spec.split("+") if "+" in spec else [spec]
    elif isinstance(spec, Sequence) and not isinstance(spec, (bytes, bytearray)):
        parts = list(spec)
    else:
        raise ValueError(f"judge must be one of {_FORMS}; got {spec!r}")
    if not parts or any(isinstance(p, str) and not p.strip() for p in parts):
        raise ValueError(f"judge has an empty part: {parts!r}; valid forms: {_FORMS}")
    for part in parts:
        if isinstance(part, str):
            _parse(part)
        else:
            check_judge_spec(part)


def make_judge(
    spec: str | Judge | Sequence[str | Judge],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> Judge:
    """Build a judge from a name, a `+`-joined or listed ensemble, or pass a judge through.

    A one-element list gives that judge itself. Model paths containing `+` must be given
    in a list (a string splits at every `+`).

    Raises:
        ValueError: an unknown spec (the message lists the valid forms).
        ModelNotFoundError: a named model that is not available locally.
    """
    if not isinstance(spec, str) and callable(getattr(spec, "score", None)):
        return spec  # type: ignore[return-value]
    if is_ray_spec(spec):
        from redteam_gym.distributed import RayJudge

        return RayJudge(str(spec), device=device, dtype=dtype)
    if isinstance(spec, str):
        if "+" in spec:
            return _ensemble(spec.split("+"), device, dtype)
        return _single(spec, device, dtype)
    if isinstance(spec, Sequence) and not isinstance(spec, (bytes, bytearray)):
        return _ensemble(list(spec), device, dtype)
    raise ValueError(f"judge must be one of {_FORMS}; got {spec!r}")


def _ensemble(
    parts: Sequence[str | Judge],
    device: str | torch.device | None,
    dtype: torch.dtype | str | None,
) -> Judge:
    if not parts or any(isinstance(p, str) and not p.strip() for p in parts):
        raise ValueError(f"judge has an empty part: {parts!r}; valid forms: {_FORMS}")
    judges = [make_judge(p, device=device, dtype=dtype) for p in parts]
    return judges[0] if len(judges) == 1 else EnsembleJudge(judges, reduce="mean")


def _parse(spec: str) -> tuple[str, str, str | None]:
    """`(kind, model, label)` of a single judge spec; `ValueError` names a bad one."""
    kind, sep, model = spec.strip().partition(":")
    kind = kind.strip().lower().replace("_", "-")
    model = model.strip()
    if kind in ("profanity", "semantic", "toxblock") and not sep:
        return kind, "", None
    if kind == "llama-guard" and (model or not sep):
        return kind, model or DEFAULT_LLAMA_GUARD, None
    if kind == "classifier" and model:
        # HF ids hold no '@', so the last '@' starts the label.
        name, at, label = model.rpartition("@")
        if at and name.strip() and label.strip():
            return kind, name.strip(), label.strip()
        if at:
            raise ValueError(f"judge {spec!r} has an empty model or label; valid forms: {_FORMS}")
        return kind, model, _DEFAULT_CLASSIFIER_LABEL
    raise ValueError(f"judge must be one of {_FORMS}; got {spec!r}")


def _single(spec: str, device: str | torch.device | None, dtype: torch.dtype | str | None) -> Judge:
    kind, model, label = _parse(spec)
    if kind == "profanity":
        return ProfanityJudge()
    if kind == "semantic":
        return SemanticJudge(device=device)
    if kind == "toxblock":
        return ToxBlockJudge(device=device)
    if kind == "llama-guard":
        if is_openai_spec(model):
            # imported here: the served judge needs the `openai` client (the `serve` extra)
            from redteam_gym.served.judge import ServedLlamaGuardJudge

            return ServedLlamaGuardJudge(model)
        return LlamaGuardJudge(model, device=device, dtype=dtype)
    assert label is not None
    return ClassifierJudge(model, label, device=device, dtype=dtype)
