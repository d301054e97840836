"""The eval runner: an adversary against a suite, batched through the native vector env.

The parts live in their own modules: ``benchmarks.adversaries`` (building and seeding
adversaries), ``benchmarks.records`` (the JSONL file), ``benchmarks.batches`` (seeds, the env
and one batch) and ``benchmarks.summary`` (the metrics); this module is the loop over batches
and the resume rules, and re-exports their public names.

``evaluate(adversary, suite, out_dir)`` runs ``suite.rollouts`` conversations of
``suite.env.max_turns`` turns, ``suite.batch_size`` at a time (``num_envs``), writes every turn
to ``out_dir/rollouts.jsonl`` as it goes, computes the metrics of ``benchmarks/README.md`` and writes
``summary.json``, ``report.md`` and ``plots/`` (``benchmarks.report``).

Openers and seeds (what makes ``resume`` and cross-adversary comparisons exact)
-------------------------------------------------------------------------------
- **Opener order.** Rollout ``i`` uses opener ``perm[i % n]`` where ``perm`` is a
  permutation of the suite's ``n`` openers drawn from ``suite.seed`` alone: every
  adversary evaluated on a suite sees the same openers in the same rollouts.
- **Choosing openers and seeds.** Each batch resets the vector env with
  ``options={"opener_id": [...]}`` (the openers of its rollouts) and one seed per rollout,
  ``rollout_seed(suite.seed, i)``, a function of ``(suite.seed, i)`` only. The defender's
  sampling generator is seeded by the env from the batch's per-env seeds, so it is fixed by
  ``(suite.seed, batch)`` as well.
- **Adversary seeding.** Before each batch the adversary is re-seeded with a seed derived
  from ``(suite.seed, batch index)``: ``adversary.reseed(seed)`` if it has one, else its
  ``generator`` attribute (a ``torch.Generator`` is re-seeded in place, a numpy
  ``Generator`` replaced). An adversary with neither still runs, with a warning that a
  resumed eval may then differ from an uninterrupted one.
- **Batches** always hold rollouts ``[b * B, (b + 1) * B)``; the last one is padded with
  the rollouts that would come next and the padding is discarded. So a batch's results
  depend on ``(suite, b)`` only: resuming (even with a larger ``rollouts``) reproduces
  an uninterrupted run exactly on the same hardware and library versions. ``batch_size``
  is part of the protocol: batched sampling draws depend on the batch.

``rollouts.jsonl``: one JSON object per conversation, appended batch by batch, each batch
flushed and fsync'd (an interruption loses at most the batch in flight)::

    {"rollout": 0, "batch": 0, "opener_id": "...", "opener": "...", "opener_p_unsafe": 0.01,
     "turns": [{"turn": 1, "adversary": "...", "adversary_truncated": false,
                "defender": "...", "adversary_p_unsafe": 0.02, "defender_p_unsafe": 0.7,
                "adversary_categories": [], "defender_categories": ["S10"],
                "defender_unsafe": true, "reward": 1.2, "adversary_log_ppl": 3.1}, ...],
     "return": 1.3, "success": true, "first_unsafe_turn": 1, "implicit": true}

``opener_p_unsafe`` is the judge's P(unsafe) of the opener read as a user message: the
prompt score of the tail-quantile plot. ``adversary_log_ppl`` is the log perplexity
(nats/token) of the utterance under the frozen defender model given the defender's
chat-rendered conversation before it (null when the defender is not a local LM).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.adversaries import (
    ADVERSARIES,
    adversary_detail,
    adversary_name,
    make_adversary,
    reseed_adversary,
)
from benchmarks.batches import (
    BatchError,
    batch_seed,
    engine_of,
    make_envs,
    opener_order,
    rollout_seed,
    run_batch,
    score_openers,
)
from benchmarks.records import ROLLOUTS_FILE, append_records, jsonable, read_rollouts
from benchmarks.suites import Suite, load_suite
from benchmarks.summary import SUMMARY_KEYS, Summary, compute_summary
from redteam_gym.faults import ComponentError
from redteam_gym.interrupts import Interrupted, stop_on_sigint

__all__ = [
    "ADVERSARIES",
    "ROLLOUTS_FILE",
    "SUMMARY_KEYS",
    "BatchError",
    "Summary",
    "adversary_name",
    "batch_seed",
    "compute_summary",
    "evaluate",
    "make_adversary",
    "make_envs",
    "opener_order",
    "read_rollouts",
    "reseed_adversary",
    "rollout_seed",
]

EVAL_FILE = "eval.json"
"""The run's settings, written first and checked on resume."""
EVAL_PROTOCOL = 2
"""How rollouts get their openers and seeds; an eval resumes only under its own protocol
(1: seeds searched until the env drew the wanted openers; 2: openers chosen by reset options,
seeds derived per rollout)."""


logger = logging.getLogger(__name__)

# Settings allowed to change on resume: they do not change any rollout (see module doc).
_RESUMABLE_CHANGES = frozenset(
    {"name", "description", "rollouts", "env.retry_smaller_batch", "env.device", "env.dtype"}
)


# ----- evaluate ---------------------------------------------------------------------------


def evaluate(
    adversary: Any,
    suite: str | os.PathLike[str] | Suite = "quick",
    out_dir: str | os.PathLike[str] | None = None,
    *,
    prompts: str | None = None,
    max_turns: int | None = None,
    rollouts: int | None = None,
    batch_size: int | None = None,
    judge: str | None = None,
    defender: str | None = None,
    seed: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    adversary_model: str | None = None,
    few_shot_pool: Sequence[str] | str | os.PathLike[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    embedding_model: Any = None,
    report: bool = True,
    retry_smaller_batch: bool = False,
) -> Summary:
    """Evaluate an adversary on a suite and return its summary.

    Args:
        adversary: any object with ``act(observations) -> list[str]``, or ``"zero-shot"``,
            ``"few-shot"`` or a checkpoint DIR (built by ``make_adversary`` after the env, so
            a baseline on the defender's model shares its weights).
        suite: a built-in suite name, a suite JSON path, or a ``Suite``.
        out_dir: the eval DIR (``rollouts.jsonl``, ``eval.json``, ``summary.json``,
            ``report.md``, ``plots/``); ``None`` keeps everything in memory (no resume).
        prompts, max_turns, rollouts, batch_size, judge, defender, seed: suite overrides.
        resume: continue the rollouts already in ``out_dir`` (same settings required;
            ``rollouts`` may grow). Without it an existing ``rollouts.jsonl`` is an error
            unless ``overwrite``.
        progress: show a tqdm bar (conversations/s) on stderr.
        adversary_model, few_shot_pool: model and example pool of a built-in adversary.
        device, dtype: where the defender, judge and built-in adversaries run.
        embedding_model: sentence embedder for ``embedding_diversity`` (MiniLM by default).
        report: write ``report.md`` and ``plots/`` (``summary.json`` is always written).
        retry_smaller_batch: when the defender or judge runs out of memory, retry its call on
            halves of the batch (down to one conversation) before giving up; a batch so
            retried samples its replies chunk by chunk, so it differs from an unsplit one.

    Failures and interruptions: a defender or judge that fails raises ``BatchError`` naming
    the batch and the component; the first SIGINT (Ctrl-C) finishes the batch in flight,
    writes it and raises ``redteam_gym.interrupts.Interrupted``. Either way the rollouts of
    the batches before are on disk and ``resume=True`` continues from them.
    """
    start_time = time.perf_counter()
    suite = load_suite(
        suite,
        prompts=prompts,
        max_turns=max_turns,
        rollouts=rollouts,
        batch_size=batch_size,
        judge=judge,
        defender=defender,
        seed=seed,
    )
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs an out_dir holding the rollouts to resume")
    rollouts_path = out / ROLLOUTS_FILE if out is not None else None
    existing: list[dict[str, Any]] = []
    if rollouts_path is not None and rollouts_path.exists() and rollouts_path.stat().st_size:
        if resume:
            existing = read_rollouts(rollouts_path, repair=True)
        elif overwrite:
            rollouts_path.unlink()
        else:
            raise FileExistsError(
                f"{rollouts_path} already holds rollouts: resume it (resume=True, --resume), "
                "overwrite it (overwrite=True, --overwrite) or choose another out_dir"
            )

    if isinstance(adversary, str | os.PathLike) and str(adversary) not in ADVERSARIES:
        # A checkpoint: load (or fail) before paying for the env's models.
        adversary = make_adversary(adversary, suite, device=device, dtype=dtype)
    envs = make_envs(suite, device=device, dtype=dtype)
    if isinstance(adversary, str | os.PathLike):
        # Built after the env: a baseline on the defender's model shares its frozen weights.
        adversary = make_adversary(
            adversary, suite, model=adversary_model, pool=few_shot_pool, device=device, dtype=dtype
        )
    if not callable(getattr(adversary, "act", None)):
        raise TypeError(f"adversary must have act(observations) -> list[str], got {adversary!r}")
    name = adversary_name(adversary)
    settings = {
        "protocol": EVAL_PROTOCOL,
        "suite": suite.to_dict(),
        "adversary": name,
        "adversary_detail": adversary_detail(adversary),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _check_or_write_settings(out / EVAL_FILE, settings, resume and bool(existing))

    engine = engine_of(envs)
    engine.retry_smaller_batch = retry_smaller_batch  # the env may be a cached one: set it
    # One entry per id: reset options name openers by id, so ids must name one opener each.
    openers = list({o.id: o for o in engine.openers}.values())
    order = opener_order(len(openers), suite.seed)
    num_slots = suite.num_batches * suite.batch_size
    targets = [int(order[i % len(openers)]) for i in range(num_slots)]
    seeds = [rollout_seed(suite.seed, i) for i in range(num_slots)]
    used = sorted(set(targets[: suite.rollouts]))
    opener_scores = score_openers(engine.judge, [openers[k] for k in used], suite.batch_size)

    done = {r["rollout"]: r for r in existing if r["rollout"] < suite.rollouts}
    can_reseed = True
    new_count = 0
    loop_start = time.perf_counter()
    from tqdm.auto import tqdm

    with (
        stop_on_sigint("the batch in flight, saving its rollouts") as stop,
        tqdm(
            total=suite.rollouts,
            initial=len(done),
            unit="conv",
            desc=f"{suite.name}/{name}",
            disable=not progress,
            dynamic_ncols=True,
            file=sys.stderr,
        ) as bar,
    ):
        for b in range(suite.num_batches):
            ids = list(range(b * suite.batch_size, (b + 1) * suite.batch_size))
            missing = [i for i in ids if i < suite.rollouts and i not in done]
            if not missing:
                continue
            if not reseed_adversary(adversary, batch_seed(suite.seed, b)) and can_reseed:
                can_reseed = False
                warnings.warn(
                    f"adversary {name!r} has no reseed(seed) method or generator attribute: "
                    "its batches are not re-seeded, so a resumed eval may differ from an "
                    "uninterrupted one",
                    stacklevel=2,
                )
            try:
                records = run_batch(
                    envs,
                    adversary,
                    suite,
                    b,
                    [seeds[i] for i in ids],
                    ids,
                    [openers[targets[i]].id for i in ids],
                    opener_scores,
                )
            except ComponentError as exc:
                saved = (
                    f"; the {len(done)} rollouts before it are saved in {rollouts_path} "
                    "(continue with resume=True, --resume)"
                    if rollouts_path is not None
                    else ""
                )
                raise BatchError(
                    f"batch {b} (rollouts {ids[0]}-{ids[-1]}) failed: {exc}{saved}",
                    batch=b,
                    component=exc.component,
                ) from exc
            fresh = [r for r in records if r["rollout"] in missing]
            if rollouts_path is not None:
                append_records(rollouts_path, fresh)
            done.update({r["rollout"]: r for r in fresh})
            new_count += len(fresh)
            bar.update(len(fresh))
            bar.set_postfix(asr=f"{np.mean([r['success'] for r in done.values()]):.1%}")
            if stop.requested and len(done) < suite.rollouts:
                raise Interrupted(
                    f"eval stopped by SIGINT after batch {b}: "
                    + (
                        f"{len(done)} of {suite.rollouts} rollouts saved in {rollouts_path}; "
                        f"resume with `redteam-gym eval ... --out {out} --resume` "
                        "(or evaluate(..., resume=True))"
                        if rollouts_path is not None
                        else "nothing saved (no out_dir)"
                    )
                )
    loop_time = time.perf_counter() - loop_start

    records = [done[i] for i in sorted(done)]
    summary = compute_summary(records, suite, embedding_model=embedding_model)
    summary.update(
        {
            "suite": suite.name,
            "adversary": name,
            "adversary_detail": settings["adversary_detail"],
            "judge": suite.env.judge,
            "defender": suite.env.defender,
            "seed": suite.seed,
            "settings": suite.to_dict(),
            "resumed_rollouts": sum(r["rollout"] < suite.rollouts for r in existing),
            "new_rollouts": new_count,
            "generation_time_s": loop_time,
            "rollouts_per_s": new_count / loop_time if new_count and loop_time > 0 else math.nan,
            "wall_time_s": time.perf_counter() - start_time,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "out_dir": str(out) if out is not None else None,
        }
    )
    summary = jsonable(summary)
    if out is not None:
        from benchmarks.report import write_report, write_summary

        if report:
            write_report(out, summary, records)
        else:
            write_summary(out, summary)
    return summary


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level: `{"env": {"max_turns": 5}}` -> `{"env.max_turns": 5}`."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key == "env":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_or_write_settings(path: Path, settings: dict[str, Any], resuming: bool) -> None:
    """On resume, refuse settings that would change the rollouts; else record them."""
    if resuming and path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("protocol", 1) != settings["protocol"]:
            raise ValueError(
                f"cannot resume {path.parent}: its rollouts were seeded by eval protocol "
                f"{stored.get('protocol', 1)}, this runner uses protocol {settings['protocol']} "
                "(openers chosen by reset options); rerun it from the start with --overwrite"
            )
        old, new = _flat(stored.get("suite", {})), _flat(settings["suite"])
        changed = sorted(
            k
            for k in set(old) | set(new)
            if k not in _RESUMABLE_CHANGES and old.get(k) != new.get(k)
        )
        if changed:
            raise ValueError(
                f"cannot resume {path.parent}: suite setting(s) {changed} differ from the "
                f"interrupted run ({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in changed)})"
            )
        if stored.get("adversary") != settings["adversary"]:
            raise ValueError(
                f"cannot resume {path.parent}: it holds adversary {stored.get('adversary')!r}, "
                f"not {settings['adversary']!r}"
            )
    from redteam_gym.files import atomic_write

    atomic_write(path, json.dumps(jsonable(settings), indent=2) + "\n")
