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

from agents.common.policy import (
    ActorCritic,
    boundary_states,
    final_hidden,
    states_before,
    token_logits,
    top_layers,
)
from redteam_gym.adversary import EMPTY_UTTERANCE, parse_observation
from redteam_gym.metrics.diversity import distinct_n
from redteam_gym.models import SamplingConfig
from redteam_gym.roles import ROLES, Role


@dataclass
class Segment:
    """One adversary utterance: its prompt, sampled tokens and what the rollout saw."""

    dialogue: int
    turn: int
    start: int
    """Where the utterance's first id sits in its dialogue's token sequence."""
    tokens: list[int]
    logprobs: torch.Tensor
    values: torch.Tensor
    ref_logprobs: torch.Tensor | None
    """The reference's logprobs, filled in when the rollout ends."""
    reward: float
    defender_unsafe_prob: float
    adversary_unsafe_prob: float
    text: str = ""
    """The utterance as the env received it."""
    reward_terms: dict[str, float] = field(default_factory=dict)
    """The env's reward, term by term (`info["reward_terms"]`)."""


@dataclass
class TokenBatch:
    """Dialogues as tensors: each one's token sequence `[B, N]` (right padded) and its trained
    tokens as a trajectory `[B, L]` (every turn's utterance, concatenated)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
    """`[B, L]`: where each trained token sits in its row of `input_ids`."""
    tokens: torch.Tensor
    mask: torch.Tensor
    """`[B, L]` bool: which trajectory entries are tokens (the rest is padding)."""
    logprobs: torch.Tensor
    """The sampling policy's logprobs `[B, L]`."""
    values: torch.Tensor
    ref_logprobs: torch.Tensor
    boundary: torch.Tensor | None = None
    """`[B, N, hidden]`: the reference's states at the input of the actor's first trained
    layer, when the actor shares its frozen bottom with the reference."""

    @property
    def position_ids(self) -> torch.Tensor:
        n = self.input_ids.shape[1]
        return torch.arange(n, device=self.input_ids.device).expand(len(self.input_ids), -1)

    def rows(self, index: Sequence[int] | torch.Tensor) -> TokenBatch:
        """The batch of these rows, trimmed to their longest sequence and trajectory."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.input_ids.device)
        n = int(self.attention_mask[index].sum(1).max())
        width = int(self.mask[index].sum(1).max())
        return TokenBatch(
            input_ids=self.input_ids[index, :n],
            attention_mask=self.attention_mask[index, :n],
            positions=self.positions[index, :width],
            tokens=self.tokens[index, :width],
            mask=self.mask[index, :width],
            logprobs=self.logprobs[index, :width],
            values=self.values[index, :width],
            ref_logprobs=self.ref_logprobs[index, :width],
            boundary=None if self.boundary is None else self.boundary[index, :n],
        )

    @classmethod
    def build(
        cls,
        sequences: Sequence[Sequence[int]],
        segments: Sequence[Segment],
        groups: Sequence[int],
        *,
        pad_token_id: int,
        device: torch.device | str = "cpu",
    ) -> TokenBatch:
        """The batch of dialogues `groups` (rows in that order) from their sequences and
        segments (segments of other dialogues are ignored)."""
        index = {d: i for i, d in enumerate(groups)}
        mine = sorted((s for s in segments if s.dialogue in index), key=lambda s: s.turn)
        seq_len = max(len(sequences[d]) for d in groups)
        input_ids = torch.full((len(groups), seq_len), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(groups), seq_len), dtype=torch.long)
        for d, i in index.items():
            input_ids[i, : len(sequences[d])] = torch.as_tensor(sequences[d], dtype=torch.long)
            attention_mask[i, : len(sequences[d])] = 1
        rows = {
            "positions": [torch.arange(s.start, s.start + len(s.tokens)) for s in mine],
            "tokens": [torch.as_tensor(s.tokens, dtype=torch.long) for s in mine],
            "logprobs": [s.logprobs for s in mine],
            "values": [s.values for s in mine],
            "ref_logprobs": [
                s.ref_logprobs if s.ref_logprobs is not None else torch.zeros(len(s.tokens))
                for s in mine
            ],
        }
        packed = {k: pack(mine, v, groups)[0] for k, v in rows.items()}
        mask = pack(mine, rows["tokens"], groups)[1]
        for s in mine:
            if sequences[s.dialogue][s.start : s.start + len(s.tokens)] != list(s.tokens):
                raise ValueError(
                    f"dialogue {s.dialogue} turn {s.turn}: the sequence does not hold the "
                    "utterance's ids at its start"
                )
        return cls(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            mask=mask.to(device),
            **{k: v.to(device) for k, v in packed.items()},
        )


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
    bottoms: list[torch.Tensor | None] = [None] * num
    cache = None  # the actor's KV cache, carried from turn to turn
    sampled = [0] * num  # ids sampled at each dialogue's last turn
    for turn in range(envs.max_turns):
        prompts = [sequences[i] for i in active]
        samples = policy.generate(prompts, sampling, generator, prefix_cache=cache)
        cache = samples.cache
        if samples.states is not None and samples.states_start is not None:
            for row, i in enumerate(active):
                start, states = samples.states_start[row], samples.states[row]
                before = bottoms[i]
                bottoms[i] = states if before is None else torch.cat([before[:start], states])
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
    if policy.shares_bottom and all(b is not None for b in bottoms):
        batch.boundary = _stack_bottoms(bottoms, sequences, batch.input_ids.shape[1])
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


def _stack_bottoms(
    bottoms: Sequence[torch.Tensor | None], sequences: Sequence[Sequence[int]], width: int
) -> torch.Tensor:
    """`[D, width, hidden]` boundary states, right padded. The sampler never feeds a
    dialogue's last id, so its row stays zero: being last, it changes no state the losses
    read (causal attention), as the rows of padding do not."""
    first = next(b for b in bottoms if b is not None)
    out = first.new_zeros((len(bottoms), width, first.shape[-1]))
    for i, (states, ids) in enumerate(zip(bottoms, sequences, strict=True)):
        assert states is not None
        n = min(len(states), len(ids))
        if n < len(ids) - 1:
            raise RuntimeError(
                f"dialogue {i}: the sampler kept boundary states for {n} of {len(ids)} ids"
            )
        out[i, :n] = states[:n]
    return out


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
    args = (batch.input_ids, batch.attention_mask, batch.position_ids)
    start = policy.num_frozen_layers
    with policy.adapters_off():
        if policy.shares_bottom and batch.boundary is not None:
            hidden = top_layers(ref_model, batch.boundary, *args[1:], start)
        elif policy.shares_bottom:
            hidden, batch.boundary = boundary_states(ref_model, start, *args)
        else:
            hidden = final_hidden(ref_model, *args)
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
