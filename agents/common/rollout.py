"""Rollouts: adversary utterances sampled token by token against the vector env.

One trajectory is one dialogue: the adversary's tokens of every turn, concatenated, with
each turn's env reward on the last token of that turn's utterance (the RLHF convention), so
credit flows across turns. Token ids are kept as sampled; text is decoded only for the env.

A dialogue is also one token sequence: each turn's prompt is the previous turn's prompt, the
ids sampled for it, and the chat template's continuation (the end of that turn and the
defender's reply), or, for a defender reading a text thread, the thread's next lines. So the reference scores a whole dialogue in one forward pass at the end of
the rollout, and every training epoch scores it in one more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from agents.common.batch import Segment, TokenBatch, pack
from agents.common.policy import ActorCritic, states_before, token_logits
from agents.common.shared_bottom import BoundaryStates, reference_hidden
from redteam_gym.adversary import EMPTY_UTTERANCE, parse_observation
from redteam_gym.metrics.diversity import distinct_n
from redteam_gym.models import SamplingConfig
from redteam_gym.roles import ROLES, Role


@dataclass
class Rollout:
    """A batch of dialogues; `segments` are ordered by (turn, dialogue)."""

    segments: list[Segment]
    num_dialogues: int
    transcripts: list[list[dict[str, str]]] = field(default_factory=list)
    sequences: list[list[int]] = field(default_factory=list)
    """Each dialogue's token sequence as the adversary saw it, every utterance in place."""
    batch: TokenBatch | None = None
    """Every dialogue as tensors, built once (`to_batch`)."""

    def to_batch(self, dialogues: Sequence[int] | None = None) -> TokenBatch:
        """The tensors of these dialogues (all of them by default), rows in that order."""
        if self.batch is None:
            raise ValueError("this rollout has no token batch (collect_rollout builds it)")
        if dialogues is None:
            return self.batch
        return self.batch.rows(list(dialogues))

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
    role: Role = ROLES["adversary"],
) -> Rollout:
    """Play one batch of dialogues to the end, then score every dialogue under the reference
    in one forward pass. Seeded by `seed` alone (env openers and sampling), so a resumed run
    replays exactly what an uninterrupted one would."""
    if role.thread != policy.thread:
        raise ValueError(
            f"the {role.name}'s view is read as {role.thread or 'a chat'} but the policy "
            f"encodes {policy.thread or 'a chat'}: build the policy with the role's thread"
        )
    num = envs.num_envs
    obs, _ = envs.reset(seed=seed)
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    active = list(range(num))
    segments: list[Segment] = []
    transcripts: list[list[dict[str, str]]] = [parse_observation(o) for o in obs]
    # each dialogue's ids so far: the first prompt, then sampled ids and continuations
    sequences = [policy.encode(role.view(t, system_prompt)) for t in transcripts]
    # with a shared bottom, its output at each id, as the sampler fed them (see `sample`)
    boundary = BoundaryStates(num)
    cache = None  # the actor's KV cache, carried from turn to turn
    sampled = [0] * num  # ids sampled at each dialogue's last turn
    for turn in range(envs.max_turns):
        prompts = [sequences[i] for i in active]
        samples = policy.generate(prompts, sampling, generator, prefix_cache=cache)
        cache = samples.cache
        boundary.add(samples, active)
        texts = policy.decode(samples.tokens)
        actions = [EMPTY_UTTERANCE] * num
        for row, i in enumerate(active):
            actions[i] = texts[row] or EMPTY_UTTERANCE
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        assert samples.values is not None
        for row, i in enumerate(active):
            segments.append(
                Segment(
                    dialogue=i,
                    turn=turn,
                    start=len(sequences[i]),
                    tokens=samples.tokens[row],
                    logprobs=samples.logprobs[row],
                    values=samples.values[row],
                    ref_logprobs=None,
                    reward=float(rewards[i]),
                    defender_unsafe_prob=float(infos["defender_unsafe_prob"][i]),
                    adversary_unsafe_prob=float(infos["adversary_unsafe_prob"][i]),
                    text=str(infos[role.text_info][i]),
                    reward_terms=_terms_of(infos, i),
                )
            )
            sequences[i] = sequences[i] + samples.tokens[row]
            sampled[i] = len(samples.tokens[row])
            transcripts[i] = list(infos["transcript"][i])
        active = [i for i in active if not (terminated[i] or truncated[i])]
        if not active:
            break
        for i in active:
            view = role.view(transcripts[i], system_prompt)
            sequences[i] = _continue(policy, sequences[i], view, sampled[i])
    batch = TokenBatch.build(
        sequences,
        segments,
        list(range(num)),
        pad_token_id=policy.tokenizer.pad_token_id,
        device=policy.device,
    )
    if policy.shares_bottom:
        batch.boundary = boundary.stack(sequences, batch.input_ids.shape[1])
    score_with_reference(batch, ref_model, policy, temperature=sampling.temperature or 1.0)
    _unpack_reference(batch, segments, num)
    return Rollout(segments, num, transcripts, sequences, batch)


def _continue(
    policy: ActorCritic, sequence: list[int], chat: list[dict[str, str]], sampled: int
) -> list[int]:
    """The dialogue's next prompt: its ids so far (ending with the `sampled` ids of the
    message just sampled) and the template's continuation of `chat` (the policy's view)
    after that message."""
    last = max(i for i, m in enumerate(chat) if m["role"] == "assistant")
    tail = policy.continuation(chat, after=last)
    if policy.thread is not None:
        # a reply that stopped at the next speaker's tag ("\nUser1:") wrote the thread's
        # markup itself: the ids it wrote are not written twice
        for n in range(min(sampled, len(tail)), 0, -1):
            if sequence[-n:] == tail[:n]:
                return sequence + tail[n:]
        return sequence + tail
    # the sampled stop token is the template's end of turn: keep one of them
    if tail and sequence and sequence[-1] in policy.eos_token_ids and tail[0] == sequence[-1]:
        tail = tail[1:]
    return sequence + tail


@torch.no_grad()
def reference_logits(
    batch: TokenBatch, ref_model, policy: ActorCritic, *, temperature: float
) -> torch.Tensor:
    """The frozen reference's next-token logits at the batch's trained tokens, `[B, L, vocab]`.

    When the actor shares its bottom (`ActorCritic.share_bottom`), the pass runs only the
    reference's top layers from `batch.boundary` (the sampler's states), or, without them,
    runs whole and fills `batch.boundary` with its states at the first trained layer. With
    LoRA, `ref_model` is the actor itself, run with its adapters off
    (`ActorCritic.adapters_off`)."""
    start = policy.num_frozen_layers if policy.shares_bottom else None
    with policy.adapters_off():
        hidden = reference_hidden(ref_model, batch, start)
        return token_logits(ref_model, states_before(hidden, batch.positions)) / temperature


def score_with_reference(
    batch: TokenBatch, ref_model, policy: ActorCritic, *, temperature: float
) -> None:
    """Fill `batch.ref_logprobs` from one reference pass over every dialogue
    (`reference_logits`)."""
    logits = reference_logits(batch, ref_model, policy, temperature=temperature)
    logprobs = logits.log_softmax(-1).gather(-1, batch.tokens[..., None]).squeeze(-1)
    batch.ref_logprobs = logprobs.masked_fill(~batch.mask, 0.0)


def _unpack_reference(batch: TokenBatch, segments: Sequence[Segment], num: int) -> None:
    """Each segment's slice of the batch's reference logprobs."""
    offset = [0] * num
    for s in sorted(segments, key=lambda s: s.turn):
        n = len(s.tokens)
        s.ref_logprobs = batch.ref_logprobs[
            s.dialogue, offset[s.dialogue] : offset[s.dialogue] + n
        ].cpu()
        offset[s.dialogue] += n


def _terms_of(infos: dict, i: int) -> dict[str, float]:
    """Dialogue `i`'s reward terms from the vector env's infos (gymnasium stores a nested dict
    as a dict of per-env arrays, with `_name` masks beside them)."""
    terms = infos.get("reward_terms", {})
    return {k: float(v[i]) for k, v in terms.items() if not k.startswith("_")}
