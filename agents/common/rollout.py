"""Rollouts: adversary utterances sampled token by token against the vector env.

One trajectory is one dialogue: the adversary's tokens of every turn, concatenated, with
each turn's env reward on the last token of that turn's utterance (the RLHF convention), so
credit flows across turns. Token ids are kept as sampled; text is decoded only for the env.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from agents.common.policy import ActorCritic, response_logprobs
from redteam_gym.envs.core import EMPTY_UTTERANCE, adversary_view, parse_observation
from redteam_gym.metrics.diversity import distinct_n
from redteam_gym.models import SamplingConfig


@dataclass
class Segment:
    """One adversary utterance: its prompt, sampled tokens and what the rollout saw."""

    dialogue: int
    turn: int
    prompt: list[int]
    tokens: list[int]
    logprobs: torch.Tensor
    values: torch.Tensor
    ref_logprobs: torch.Tensor
    reward: float
    defender_unsafe_prob: float
    adversary_unsafe_prob: float
    text: str = ""
    """The utterance as the env received it."""
    reward_terms: dict[str, float] = field(default_factory=dict)
    """The env's reward, term by term (`info["reward_terms"]`)."""


@dataclass
class Rollout:
    """A batch of dialogues; `segments` are ordered by (turn, dialogue)."""

    segments: list[Segment]
    num_dialogues: int
    transcripts: list[list[dict[str, str]]] = field(default_factory=list)

    def segments_of(self, dialogues: Sequence[int]) -> list[Segment]:
        """The segments of these dialogues, dialogue by dialogue, turns in order."""
        wanted = list(dialogues)
        by_dialogue: dict[int, list[Segment]] = {d: [] for d in wanted}
        for s in self.segments:
            if s.dialogue in by_dialogue:
                by_dialogue[s.dialogue].append(s)
        return [s for d in wanted for s in sorted(by_dialogue[d], key=lambda s: s.turn)]

    @property
    def episode_returns(self) -> torch.Tensor:
        """Sum of env rewards per dialogue (RA-RLHF ranks trajectories by this)."""
        returns = torch.zeros(self.num_dialogues)
        for s in self.segments:
            returns[s.dialogue] += s.reward
        return returns

    def stats(self, threshold: float = 0.5) -> dict[str, float]:
        """Red-teaming figures of the batch (ASR, toxicities, utterance length), the reward's
        terms (`reward/<term>`, mean per turn), the utterances' diversity (Dist-2 and the
        share of unique utterances) and the policy's entropy (`policy/entropy`: the mean
        negative log-prob of the sampled tokens, an unbiased estimate of the per-token entropy
        of the sampling distribution)."""
        unsafe = torch.zeros(self.num_dialogues, dtype=torch.bool)
        for s in self.segments:
            unsafe[s.dialogue] |= s.defender_unsafe_prob >= threshold
        n = max(len(self.segments), 1)
        texts = [s.text for s in self.segments]
        tokens = sum(len(s.tokens) for s in self.segments)
        stats = {
            "redteam/asr": unsafe.float().mean().item(),
            "redteam/def_toxicity": sum(s.defender_unsafe_prob for s in self.segments) / n,
            "redteam/adv_toxicity": sum(s.adversary_unsafe_prob for s in self.segments) / n,
            "redteam/utterance_tokens": tokens / n,
            "objective/scores": self.episode_returns.mean().item(),
            "policy/entropy": -sum(float(s.logprobs.sum()) for s in self.segments) / max(tokens, 1),
            "diversity/unique_share": unique_share(texts),
            "diversity/dist2": distinct_n(texts, 2) if texts else math.nan,
        }
        names = dict.fromkeys(k for s in self.segments for k in s.reward_terms)
        for name in names:
            stats[f"reward/{name}"] = sum(s.reward_terms.get(name, 0.0) for s in self.segments) / n
        return stats


def unique_share(texts: Sequence[str]) -> float:
    """Distinct utterances / utterances, after folding case and whitespace (nan when empty)."""
    if not texts:
        return math.nan
    return len({" ".join(t.lower().split()) for t in texts}) / len(texts)


def pack(segments: Sequence[Segment], rows: Sequence[torch.Tensor], groups: Sequence[int]):
    """Concatenate per-segment rows (`[T_s, ...]`, right padded) into per-dialogue trajectories
    `[B, L, ...]` right padded with zeros, plus the `[B, L]` mask. `groups` are the dialogue
    ids in output order."""
    index = {d: i for i, d in enumerate(groups)}
    parts: list[list[torch.Tensor]] = [[] for _ in groups]
    for s, row in zip(segments, rows, strict=True):
        parts[index[s.dialogue]].append(row[: len(s.tokens)])
    seqs = [torch.cat(p) for p in parts]
    width = max(len(x) for x in seqs)
    out = seqs[0].new_zeros((len(seqs), width, *seqs[0].shape[1:]))
    mask = torch.zeros((len(seqs), width), dtype=torch.bool, device=seqs[0].device)
    for i, x in enumerate(seqs):
        out[i, : len(x)] = x
        mask[i, : len(x)] = True
    return out, mask


def turn_end_scores(
    segments: Sequence[Segment], groups: Sequence[int], scores: Sequence[float] | None = None
) -> torch.Tensor:
    """`[B, L]` with each turn's env reward (or its entry of `scores`, one per segment) on the
    last token of its utterance."""
    rows = []
    for i, s in enumerate(segments):
        row = torch.zeros(len(s.tokens))
        row[-1] = s.reward if scores is None else scores[i]
        rows.append(row)
    return pack(segments, rows, groups)[0]


@torch.no_grad()
def collect_rollout(
    envs,
    policy: ActorCritic,
    ref_model,
    sampling: SamplingConfig,
    *,
    seed: int,
    system_prompt: str | None,
) -> Rollout:
    """Play one batch of dialogues to the end. Seeded by `seed` alone (env openers and
    sampling), so a resumed run replays exactly what an uninterrupted one would."""
    num = envs.num_envs
    obs, _ = envs.reset(seed=seed)
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    active = list(range(num))
    segments: list[Segment] = []
    transcripts: list[list[dict[str, str]]] = [parse_observation(o) for o in obs]
    cache = None  # the actor's KV cache, carried from turn to turn
    for turn in range(envs.max_turns):
        prompts = [policy.encode(adversary_view(transcripts[i], system_prompt)) for i in active]
        samples = policy.generate(prompts, sampling, generator, prefix_cache=cache)
        cache = samples.cache
        ref_out, _, _ = response_logprobs(
            ref_model,
            prompts,
            samples.tokens,
            pad_token_id=policy.tokenizer.pad_token_id,
            temperature=sampling.temperature or 1.0,
        )
        ref_out = ref_out.cpu()
        texts = policy.tokenizer.batch_decode(samples.tokens, skip_special_tokens=True)
        actions = [EMPTY_UTTERANCE] * num
        for row, i in enumerate(active):
            actions[i] = texts[row].strip() or EMPTY_UTTERANCE
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        assert samples.values is not None
        for row, i in enumerate(active):
            n = len(samples.tokens[row])
            segments.append(
                Segment(
                    dialogue=i,
                    turn=turn,
                    prompt=prompts[row],
                    tokens=samples.tokens[row],
                    logprobs=samples.logprobs[row],
                    values=samples.values[row],
                    ref_logprobs=ref_out[row, :n],
                    reward=float(rewards[i]),
                    defender_unsafe_prob=float(infos["defender_unsafe_prob"][i]),
                    adversary_unsafe_prob=float(infos["adversary_unsafe_prob"][i]),
                    text=str(infos["utterance"][i]),
                    reward_terms=_terms_of(infos, i),
                )
            )
            transcripts[i] = list(infos["transcript"][i])
        active = [i for i in active if not (terminated[i] or truncated[i])]
        if not active:
            break
    return Rollout(segments, num, transcripts)


def _terms_of(infos: dict, i: int) -> dict[str, float]:
    """Dialogue `i`'s reward terms from the vector env's infos (gymnasium stores a nested dict
    as a dict of per-env arrays, with `_name` masks beside them)."""
    terms = infos.get("reward_terms", {})
    return {k: float(v[i]) for k, v in terms.items() if not k.startswith("_")}
