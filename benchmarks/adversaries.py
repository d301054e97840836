"""The adversaries an eval runs: the built-in baselines, a trained checkpoint, or any object
with ``act``; their names and re-seeding."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suites import Suite

logger = logging.getLogger(__name__)

ADVERSARIES = ("zero-shot", "few-shot")
"""Built-in adversary names ``make_adversary`` knows (anything else is a checkpoint DIR)."""


def adversary_name(adversary: Any) -> str:
    """A short display name: the adversary's ``name`` attribute, else its class name."""
    name = getattr(adversary, "name", None)
    if isinstance(name, str) and name:
        return name
    known = {"ZeroShotAdversary": "zero-shot", "FewShotAdversary": "few-shot"}
    cls = type(adversary).__name__
    return known.get(cls, cls)


def make_adversary(
    spec: str | os.PathLike[str],
    suite: Suite,
    *,
    model: str | None = None,
    pool: Sequence[str] | str | os.PathLike[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> Any:
    """Build an adversary: ``"zero-shot"``, ``"few-shot"`` (with ``pool``) or a checkpoint DIR.

    Baselines sample with ``suite.adversary_sampling`` from ``model`` (embedded SmolLM2 by
    default). A DIR is a trained learner checkpoint, loaded with ``agents.load_adversary``.
    """
    from redteam_gym.models import SMOLLM2, SamplingConfig

    sampling = SamplingConfig(
        max_new_tokens=suite.adversary_sampling.max_new_tokens,
        temperature=suite.adversary_sampling.temperature,
        top_p=suite.adversary_sampling.top_p,
    )
    name = str(spec)
    if name == "zero-shot":
        from agents.baselines import ZeroShotAdversary

        return ZeroShotAdversary(
            model or SMOLLM2, sampling=sampling, seed=suite.seed, device=device, dtype=dtype
        )
    if name == "few-shot":
        from agents.baselines import FewShotAdversary

        return FewShotAdversary(
            model or SMOLLM2,
            pool=str(pool) if isinstance(pool, os.PathLike) else pool,
            sampling=sampling,
            threshold=suite.env.unsafe_threshold,
            seed=suite.seed,
            device=device,
            dtype=dtype,
        )
    path = Path(name)
    if not path.is_dir():
        raise ValueError(
            f"adversary must be one of {ADVERSARIES} or a trained checkpoint directory; "
            f"{name!r} is neither"
        )
    from agents import load_adversary

    return load_adversary(path)


def reseed_adversary(adversary: Any, seed: int) -> bool:
    """Re-seed an adversary's randomness in place; False if it exposes no way to."""
    reseed = getattr(adversary, "reseed", None)
    if callable(reseed):
        reseed(seed)
        return True
    generator = getattr(adversary, "generator", None)
    if generator is None:
        return False
    import torch

    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)
        return True
    if isinstance(generator, np.random.Generator):
        adversary.generator = np.random.default_rng(seed)
        return True
    return False


def adversary_detail(adversary: Any) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "class": f"{type(adversary).__module__}.{type(adversary).__qualname__}"
    }
    lm = getattr(adversary, "lm", None)
    if lm is not None:
        detail["model"] = str(getattr(lm, "name", ""))
        sampling = getattr(lm, "sampling", None)
        if sampling is not None:
            detail["sampling"] = {
                k: getattr(sampling, k) for k in ("max_new_tokens", "temperature", "top_p")
            }
    for attr in ("k", "pool_source"):
        if hasattr(adversary, attr):
            detail[attr] = getattr(adversary, attr)
    return detail
