"""A rollout's dialogues as data: each adversary utterance a `Segment`, the dialogues as one
`TokenBatch` of tensors, built once per rollout and sliced by rows for the minibatches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


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
