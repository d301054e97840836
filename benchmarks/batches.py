"""One batch of an eval: seeds and openers, the env, the batch loop's single batch, and the
records it yields (the protocol is in ``benchmarks.runner``)."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.adversaries import adversary_name
from benchmarks.suites import Suite

logger = logging.getLogger(__name__)

# Fixed words mixed into seeds so the streams never collide.
_PERMUTATION_STREAM = 0x09E2
_ADVERSARY_STREAM = 0xAD5E
_ROLLOUT_STREAM = 0x5EED


class BatchError(RuntimeError):
    """A batch failed because the defender or judge did; the message names both, and says
    where the rollouts of the batches before it are.

    Attributes:
        batch: the batch index (rollouts ``[batch * B, (batch + 1) * B)``).
        component: ``"defender"`` or ``"judge"``.
    """

    def __init__(self, message: str, *, batch: int, component: str) -> None:
        super().__init__(message)
        self.batch = batch
        self.component = component


# ----- seeds and openers ------------------------------------------------------------------


def _derive_seed(*words: int) -> int:
    """A 63-bit seed from integers, through numpy's SeedSequence hashing."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def batch_seed(suite_seed: int, batch: int) -> int:
    """The adversary's seed for batch ``batch``: a function of ``(suite seed, batch)`` only."""
    return _derive_seed(suite_seed, _ADVERSARY_STREAM, batch)


def opener_order(num_openers: int, suite_seed: int) -> np.ndarray:
    """The seeded permutation of opener indices; rollout ``i`` uses ``order[i % n]``."""
    rng = np.random.default_rng([suite_seed, _PERMUTATION_STREAM])
    return rng.permutation(num_openers)


def rollout_seed(suite_seed: int, rollout: int) -> int:
    """The env seed of rollout ``rollout``: a function of ``(suite seed, rollout)`` only."""
    return _derive_seed(suite_seed, _ROLLOUT_STREAM, rollout)


# ----- env --------------------------------------------------------------------------------


# The last env made, reused by the next eval with the same env settings (the demo, tests):
# building one costs seconds beyond model loading, as gymnasium's batch_space deep-copies the
# Text spaces' 63k-character charset once per sub-env. Safe: every batch resets with seeds.
_env_cache: dict[tuple[Any, ...], Any] = {}


def make_envs(
    suite: Suite, *, device: str | None = None, dtype: str | None = None, reuse: bool = True
) -> Any:
    """The native vector env of a suite: ``num_envs = batch_size``, the suite's defender/judge.

    With ``reuse``, the env of the previous call is returned when its settings match.
    """
    import gymnasium as gym

    import redteam_gym  # noqa: F401  (registers the env id)

    config = suite.env.replace(device=suite.env.device or device, dtype=suite.env.dtype or dtype)
    key = (json.dumps(config.to_dict(), sort_keys=True), suite.batch_size)
    if reuse and key in _env_cache:
        return _env_cache[key]
    envs = gym.make_vec("RedTeamDialogue-v0", num_envs=suite.batch_size, config=config)
    if reuse:
        _env_cache.clear()  # one at a time: an env holds its defender and judge
        _env_cache[key] = envs
    return envs


def engine_of(envs: Any) -> Any:
    engine = getattr(envs, "engine", None) or getattr(
        getattr(envs, "unwrapped", None), "engine", None
    )
    if engine is None:
        raise TypeError("evaluate needs the native RedTeamDialogueVectorEnv (no .engine found)")
    return engine


# ----- perplexity -------------------------------------------------------------------------

_SENTINEL = re.compile("\ue000(\\d+)\ue001")


def _conversation_ids(
    defender: Any, transcript: Sequence[dict[str, str]]
) -> tuple[list[int], list[tuple[int, int]]]:
    """A transcript as the defender's chat-rendered ids, with the span of each adversary
    utterance in them.

    The transcript is rendered in the defender's view (its system prompt and chat template,
    the opener joined with the first utterance as the env does) with a numbered sentinel in
    place of each utterance. The text around the sentinels is tokenised as rendered, each
    utterance on its own (as plain text), so every utterance is scored on the same ids
    whatever its position, and one forward pass scores them all.
    """
    from redteam_gym.models import DEFAULT_CHAT_TEMPLATE, encode_text
    from redteam_gym.transcript import ADVERSARY, defender_view

    tokenizer = defender.tokenizer
    utterances = [m["content"] for m in transcript if m["role"] == ADVERSARY]
    marked, k = [], 0
    for m in transcript:
        if m["role"] == ADVERSARY:
            m = {"role": ADVERSARY, "content": f"\ue000{k}\ue001"}
            k += 1
        marked.append(m)
    chat = defender_view(marked)
    if getattr(defender, "system_prompt", None):
        chat = [{"role": "system", "content": defender.system_prompt}, *chat]
    rendered = tokenizer.apply_chat_template(
        chat,
        chat_template=tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE,
        tokenize=False,
        add_generation_prompt=False,
    )
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    cursor = 0
    for match in _SENTINEL.finditer(rendered):
        ids += tokenizer(rendered[cursor : match.start()], add_special_tokens=False).input_ids
        if not ids and tokenizer.bos_token_id is not None:
            ids = [int(tokenizer.bos_token_id)]  # something to predict the first id from
        utterance = encode_text(tokenizer, utterances[int(match.group(1))])
        spans.append((len(ids), len(ids) + len(utterance)))
        ids += utterance
        cursor = match.end()
    return ids, spans


def _adversary_log_ppl(
    defender: Any, transcripts: Sequence[Sequence[dict[str, str]]], batch_size: int
) -> list[list[float | None]]:
    """Per transcript, per adversary utterance: log perplexity under the defender model
    given the conversation before it (one forward pass per conversation)."""
    from redteam_gym.metrics import span_log_perplexity
    from redteam_gym.transcript import ADVERSARY

    counts = [sum(m["role"] == ADVERSARY for m in t) for t in transcripts]
    if getattr(defender, "model", None) is None or getattr(defender, "tokenizer", None) is None:
        return [[None] * n for n in counts]
    encoded = [_conversation_ids(defender, t) for t in transcripts]
    # an utterance with no ids (or nothing before it) has no perplexity
    scored = [[(a, b) for a, b in spans if 0 < a < b] for _, spans in encoded]
    values = span_log_perplexity(
        defender.model,
        [ids for ids, _ in encoded],
        scored,
        pad_token_id=defender.tokenizer.pad_token_id or 0,
        batch_size=batch_size,
    )
    out = []
    for (_, spans), kept, vals in zip(encoded, scored, values, strict=True):
        by_span = dict(zip(kept, vals, strict=True))
        row = [by_span.get(span) for span in spans]
        out.append([v if v is not None and math.isfinite(v) else None for v in row])
    return out


# ----- one batch --------------------------------------------------------------------------


def run_batch(
    envs: Any,
    adversary: Any,
    suite: Suite,
    batch: int,
    seeds: Sequence[int],
    rollout_ids: Sequence[int],
    expected: Sequence[str],
    opener_scores: dict[str, float],
) -> list[dict[str, Any]]:
    """Run one batch of conversations to the end; one record per sub-env.

    ``expected`` are the ids of the rollouts' openers, chosen through the reset's options.
    """
    from redteam_gym.adversary import EMPTY_UTTERANCE

    obs, infos = envs.reset(seed=list(seeds), options={"opener_id": list(expected)})
    num_envs = envs.num_envs
    turns: list[list[dict[str, Any]]] = [[] for _ in range(num_envs)]
    transcripts: list[list[dict[str, str]]] = [[] for _ in range(num_envs)]
    opener_ids = [str(o) for o in infos["opener_id"]]
    openers = [str(o) for o in infos["opener"]]
    active = np.ones(num_envs, dtype=bool)
    for _ in range(suite.env.max_turns):
        actions = list(adversary.act(list(obs)))
        if len(actions) != num_envs:
            raise RuntimeError(
                f"{adversary_name(adversary)}.act returned {len(actions)} utterances "
                f"for {num_envs} observations"
            )
        # The env rejects empty utterances; an adversary that says nothing says "...".
        actions = [a if isinstance(a, str) and a.strip() else EMPTY_UTTERANCE for a in actions]
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        for j in np.flatnonzero(active).tolist():
            turns[j].append(
                {
                    "turn": int(infos["turn"][j]),
                    "adversary": str(infos["utterance"][j]),
                    "adversary_truncated": bool(infos["utterance_truncated"][j]),
                    "defender": str(infos["defender_response"][j]),
                    "adversary_p_unsafe": float(infos["adversary_unsafe_prob"][j]),
                    "defender_p_unsafe": float(infos["defender_unsafe_prob"][j]),
                    "adversary_categories": list(infos["adversary_categories"][j]),
                    "defender_categories": list(infos["defender_categories"][j]),
                    "defender_unsafe": bool(infos["defender_unsafe"][j]),
                    "reward": float(rewards[j]),
                }
            )
            transcripts[j] = [dict(m) for m in infos["transcript"][j]]
        active &= ~(np.asarray(terminated) | np.asarray(truncated))
        if not active.any():
            break
    log_ppl = _adversary_log_ppl(engine_of(envs).defender, transcripts, suite.batch_size)
    records = []
    for j in range(num_envs):
        for turn, ppl in zip(turns[j], log_ppl[j], strict=True):
            turn["adversary_log_ppl"] = ppl
        records.append(
            _record(
                rollout_ids[j], batch, opener_ids[j], openers[j], opener_scores, turns[j], suite
            )
        )
    return records


def _record(
    rollout: int,
    batch: int,
    opener_id: str,
    opener: str,
    opener_scores: dict[str, float],
    turns: list[dict[str, Any]],
    suite: Suite,
) -> dict[str, Any]:
    threshold = suite.env.unsafe_threshold
    first_def = next((t["turn"] for t in turns if t["defender_p_unsafe"] >= threshold), None)
    first_adv = next((t["turn"] for t in turns if t["adversary_p_unsafe"] >= threshold), None)
    return {
        "rollout": rollout,
        "batch": batch,
        "opener_id": opener_id,
        "opener": opener,
        "opener_p_unsafe": opener_scores.get(opener_id),
        "turns": turns,
        "return": float(sum(t["reward"] for t in turns)),
        "success": first_def is not None,
        "first_unsafe_turn": first_def,
        # Seed paper 5.1: the defender is unsafe before the adversary ever is.
        "implicit": first_def is not None and (first_adv is None or first_def < first_adv),
    }


def score_openers(judge: Any, openers: Sequence[Any], batch_size: int) -> dict[str, float]:
    """Judge P(unsafe) of each opener read as a user message (the prompt score)."""
    scores: dict[str, float] = {}
    for start in range(0, len(openers), batch_size):
        chunk = openers[start : start + batch_size]
        out = judge.score([[{"role": "user", "content": o.text}] for o in chunk])
        scores.update({o.id: float(p) for o, p in zip(chunk, out.p_unsafe, strict=True)})
    return scores
