"""The dialogue mechanics shared by the single and the native vector env.

A `DialogueEngine` owns the frozen defender, the judge and the openers, and advances any
number of dialogues by one turn with ONE batched defender call and ONE batched judge call.
The transcript codec and the chat views are in `redteam_gym.transcript`, the adversary's
side (its protocol, prompt and view) in `redteam_gym.adversary`, the settings in
`redteam_gym.envs.config`.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from gymnasium import spaces

from redteam_gym.adversary import EMPTY_UTTERANCE
from redteam_gym.defenders import make_defender
from redteam_gym.envs.config import EnvConfig
from redteam_gym.faults import ComponentError, call_component
from redteam_gym.judges import make_judge
from redteam_gym.judges.base import JudgeOutput
from redteam_gym.models import ChatLM, SamplingConfig, encode_text
from redteam_gym.prompts import Opener, load_openers
from redteam_gym.rewards import RewardTerms, StepScores
from redteam_gym.transcript import (
    ADVERSARY,
    CHARSET,
    DEFENDER,
    OPENER,
    defender_view,
    judge_view,
    thread_view,
)

_SURROGATE = re.compile("[\ud800-\udfff]")

RESET_OPTIONS = frozenset({"opener_id", "opener_index"})
"""What `reset(options=...)` accepts: the opener by id or by index."""
ACTION_MAX_CHARS = 8_192
"""Longest utterance accepted as an action (it is then cut to `max_utterance_tokens`)."""


def text_space(max_length: int, min_length: int = 0) -> spaces.Text:
    return spaces.Text(max_length=max_length, min_length=min_length, charset=CHARSET)


@dataclass
class Dialogue:
    """One dialogue in progress."""

    opener: Opener
    transcript: list[dict[str, str]] = field(default_factory=list)
    turn: int = 0
    done: bool = False

    @classmethod
    def start(cls, opener: Opener) -> Dialogue:
        return cls(opener, [{"role": OPENER, "content": opener.text}])


@dataclass
class TurnResult:
    """What one turn produced for one dialogue."""

    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


Chat = list[dict[str, str]]
_Rows = TypeVar("_Rows", np.ndarray, list[Any])


@dataclass
class JudgeBatch:
    """The conversations of one step's judge call, in named blocks.

    A step scores its replies, its utterances and whatever the reward's terms ask for in ONE
    judge call; each block records its rows, so a reader asks for `rows("joint", p)` and
    never counts offsets that depend on which terms are on. The engine's blocks, in order:
    `"defender"` (each reply in its conversation), `"adversary"` (each utterance in its
    conversation), `"joint"` (utterance and reply as one text; only with the `joint` term) and
    `"echo"` (the replies with their echoes removed, one per `echo_rows` dialogue).
    """

    chats: list[Chat] = field(default_factory=list)
    """Every conversation of the call, block after block."""
    blocks: dict[str, slice] = field(default_factory=dict)
    """Each block's rows in `chats`."""
    echoed: list[str | None] = field(default_factory=list)
    """Per dialogue, its reply with the echoes removed, or None (nothing echoed, or no
    `echo` term)."""

    def add(self, name: str, chats: Sequence[Chat]) -> None:
        """Append a block."""
        if name in self.blocks:
            raise ValueError(f"the judge batch already holds a {name!r} block")
        start = len(self.chats)
        self.chats.extend(chats)
        self.blocks[name] = slice(start, len(self.chats))

    def __contains__(self, name: object) -> bool:
        return name in self.blocks

    def rows(self, name: str, values: _Rows) -> _Rows:
        """A block's rows of `values`, one per conversation of the call (its scores or
        categories)."""
        if len(values) != len(self.chats):
            raise ValueError(f"{len(values)} values for a judge batch of {len(self.chats)}")
        return values[self.blocks[name]]

    @property
    def echo_rows(self) -> list[int]:
        """The dialogues whose reply echoes the utterance: those the `"echo"` block holds."""
        return [i for i, text in enumerate(self.echoed) if text]


class DialogueEngine:
    """Defender + judge + openers, advancing a batch of dialogues one turn at a time."""

    action_name = "the adversary's utterance"
    """What the agent's action is, as error messages name it."""

    def __init__(self, config: EnvConfig | None = None, **kwargs: Any) -> None:
        """From `config` (default: `EnvConfig()`) with any `EnvConfig` field in `kwargs`
        replacing its value; both are validated by `EnvConfig`."""
        if config is not None and not isinstance(config, EnvConfig):
            raise TypeError(f"config must be an EnvConfig, got {type(config).__name__}")
        c = (config or EnvConfig()).replace(**kwargs)
        self.config = c
        self.reward = RewardTerms(c.reward, p_max=c.p_max)
        self.max_turns = int(c.max_turns)
        self.max_utterance_tokens = c.max_utterance_tokens
        self.terminate_on_unsafe = c.terminate_on_unsafe
        self.unsafe_threshold = c.unsafe_threshold
        self.retry_smaller_batch = c.retry_smaller_batch
        self.openers = load_openers(c.prompts, split=c.split)
        if not self.openers:
            raise ValueError(f"prompts={c.prompts!r} split={c.split!r} has no conversation openers")
        # the first opener of each id: ids name openers in `reset(options={"opener_id": ...})`
        self._opener_ids: dict[str, Opener] = {}
        for o in self.openers:
            self._opener_ids.setdefault(o.id, o)
        thread = c.thread_format()
        sampling = SamplingConfig(
            max_new_tokens=c.defender_max_new_tokens,
            temperature=c.defender_temperature,
            top_p=c.defender_top_p,
            min_new_tokens=(
                min(c.defender_min_new_tokens, c.defender_max_new_tokens - 1)
                if thread is not None
                else 0
            ),
        )
        self.defender = make_defender(
            c.defender,
            system_prompt=c.defender_system_prompt,
            sampling=sampling,
            device=c.device,
            dtype=c.dtype,
            thread=thread,
            weights=c.defender_weights,
        )
        # the conversation as the defender reads it: a chat, or a thread with the opener apart;
        # a defender object that says its format (`ChatLM.format`) keeps its own
        fmt = getattr(self.defender, "format", c.defender_format)
        self.defender_view = thread_view if fmt == "completion" else defender_view
        self.judge = make_judge(c.judge, device=c.device, dtype=c.dtype)
        self._tokenizer = getattr(self.defender, "tokenizer", None)
        if self.reward.config.uses("likelihood") and not hasattr(self.defender, "log_likelihood"):
            raise ValueError(
                "reward term 'likelihood' needs a defender with log_likelihood() (a causal-LM "
                f"defender such as ChatLM); {type(self.defender).__name__} has none"
            )

    # ----- episodes -------------------------------------------------------------------------

    def end_dialogues(self) -> None:
        """Free what the dialogues so far keep alive: the defender's KV cache of the last
        batch, which only a call continuing those same dialogues could use. Kept through a
        reset, it stayed alive while the next batch allocated its own, so each reset raised
        the allocator's high-water mark (`benchmarks/perf/soak.py`)."""
        clear = getattr(self.defender, "clear_cache", None)
        if callable(clear):
            clear()

    def new_dialogue(self, rng: np.random.Generator, opener: Opener | None = None) -> Dialogue:
        """A dialogue from `opener`, or from one drawn from `rng`. The draw happens either
        way, so a seed's later draws do not depend on whether the opener was chosen."""
        drawn = self.openers[int(rng.integers(len(self.openers)))]
        return Dialogue.start(drawn if opener is None else opener)

    def opener_of(self, options: Mapping[str, Any] | None, where: str = "options") -> Opener | None:
        """The opener that `reset(options=...)` names, or None to draw one.

        `{"opener_id": id}` names an opener by its id (`info["opener_id"]`), `{"opener_index":
        k}` by its position in `openers`.
        """
        if not options:
            return None
        if not isinstance(options, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(options).__name__}")
        unknown = sorted(set(options) - RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; known: {sorted(RESET_OPTIONS)}")
        if "opener_id" in options and "opener_index" in options:
            raise ValueError(f"{where}: give opener_id or opener_index, not both")
        if options.get("opener_id") is not None:
            found = self._opener_ids.get(str(options["opener_id"]))
            if found is None:
                raise ValueError(
                    f"{where}: no opener with id {options['opener_id']!r} among the "
                    f"{len(self.openers)} openers of this env (e.g. {self.openers[0].id!r})"
                )
            return found
        index = options.get("opener_index")
        if index is None:
            return None
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise ValueError(f"{where}: opener_index must be an int, got {index!r}")
        if not 0 <= index < len(self.openers):
            raise ValueError(
                f"{where}: opener_index must be in 0..{len(self.openers) - 1}, got {index}"
            )
        return self.openers[int(index)]

    def check_action(self, action: Any, dialogue: Dialogue | None, *, where: str = "action") -> str:
        """The utterance `action` stands for: any text in the action space is accepted, and
        whitespace alone says nothing, so it becomes `EMPTY_UTTERANCE` as an LM adversary's
        empty utterance does. Raises for what is not such text."""
        if dialogue is None:
            raise RuntimeError("call reset() before step()")
        if dialogue.done:
            raise RuntimeError("the episode has ended: call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(
                f"{where} must be {self.action_name} as a str, got {type(action).__name__}"
            )
        if not action:
            raise ValueError(f"{where} is empty (the action space needs 1+ chars)")
        surrogate = _SURROGATE.search(action)
        if surrogate:
            # not valid Unicode: no tokenizer can encode it (and the action space excludes it)
            raise ValueError(
                f"{where} holds a lone surrogate U+{ord(surrogate.group()):04X} at index "
                f"{surrogate.start()}: not valid Unicode text"
            )
        return action if action.strip() else EMPTY_UTTERANCE

    def clip_utterance(self, text: str) -> tuple[str, bool]:
        """Cut an utterance to `max_utterance_tokens` (defender tokens; ~4 chars each when the
        defender has no tokenizer)."""
        text = text.strip()[:ACTION_MAX_CHARS]
        if self._tokenizer is None:
            limit = 4 * self.max_utterance_tokens
            return (text[:limit], True) if len(text) > limit else (text, False)
        ids = encode_text(self._tokenizer, text)
        if len(ids) <= self.max_utterance_tokens:
            return text, False
        return self._tokenizer.decode(ids[: self.max_utterance_tokens]).strip(), True

    def step(
        self,
        dialogues: Sequence[Dialogue],
        utterances: Sequence[str],
        generator: torch.Generator | None,
    ) -> list[TurnResult]:
        """Advance each dialogue by one turn: its adversary utterance (cut to
        `max_utterance_tokens`) joins the transcript, then one defender batch and one judge
        batch."""
        clipped = [self.clip_utterance(u) for u in utterances]
        for d, (text, _) in zip(dialogues, clipped, strict=True):
            d.transcript.append({"role": ADVERSARY, "content": text})
        return self._turn(dialogues, clipped, generator, added=True)

    def answer(
        self, dialogues: Sequence[Dialogue], generator: torch.Generator | None
    ) -> list[TurnResult]:
        """Advance each dialogue by one turn whose user message is already in its transcript
        (the defender as the agent: `SafeDialogue-v0` and the game). The defender answers the
        conversation as it stands, and the adversary's scores are those of the last message
        before the reply (the opener alone, in `SafeDialogue-v0`'s prompt mode)."""
        said = [(d.transcript[-1]["content"], False) for d in dialogues]
        return self._turn(dialogues, said, generator, added=False)

    def _turn(
        self,
        dialogues: Sequence[Dialogue],
        said: Sequence[tuple[str, bool]],
        generator: torch.Generator | None,
        *,
        added: bool,
    ) -> list[TurnResult]:
        """The reply, the scores and the reward of a turn whose user message, `said` (text,
        truncated), ends each transcript; `added` says whether this turn put it there."""
        if not dialogues:
            return []
        texts = [text for text, _ in said]
        replies = self.respond([self.defender_view(d.transcript) for d in dialogues], generator)
        adversary_views = [judge_view(d.transcript) for d in dialogues]
        # what came before each utterance (the last message, whether added here or not)
        contexts = ["\n\n".join(m["content"] for m in d.transcript[:-1]) for d in dialogues]
        likelihood = None
        if self.reward.config.uses("likelihood"):
            likelihood = self.defender.log_likelihood(  # type: ignore[attr-defined]
                [self.defender_view(d.transcript) for d in dialogues],
                [len(text) for text in texts],
                score_chars=self.reward.novel_spans(texts, contexts),
            )
        for d, reply in zip(dialogues, replies, strict=True):
            d.transcript.append({"role": DEFENDER, "content": reply})
        batch = self.judge_batch(
            texts, replies, [judge_view(d.transcript) for d in dialogues], adversary_views
        )
        scores = self.score(batch.chats)
        p = scores.p_unsafe
        cats = scores.categories or [[] for _ in batch.chats]
        p_def, p_adv = batch.rows(DEFENDER, p), batch.rows(ADVERSARY, p)
        p_novel = None
        if self.reward.config.uses("echo"):
            # nothing echoed: the reply's own p; only echoes: an empty reply, p = 0
            p_novel = np.where([t is None for t in batch.echoed], p_def, 0.0)
            p_novel[batch.echo_rows] = batch.rows("echo", p)
        terms = self.reward(
            StepScores(
                utterances=texts,
                p_defender=p_def,
                p_adversary=p_adv,
                defender_categories=(
                    batch.rows(DEFENDER, scores.categories) if scores.categories else None
                ),
                p_joint=batch.rows("joint", p) if "joint" in batch else None,
                p_novel=p_novel,
                likelihood=likelihood,
                replies=list(replies),
                prompts=texts,
                contexts=contexts,
                likelihood_floor=(
                    -math.log(len(self._tokenizer)) if self._tokenizer is not None else None
                ),
            )
        )
        def_cats, adv_cats = batch.rows(DEFENDER, cats), batch.rows(ADVERSARY, cats)
        results = []
        for i, d in enumerate(dialogues):
            d.turn += 1
            unsafe = float(p_def[i]) >= self.unsafe_threshold
            terminated = bool(self.terminate_on_unsafe and unsafe)
            truncated = not terminated and d.turn >= self.max_turns
            d.done = terminated or truncated
            info = {
                "turn": d.turn,
                "defender_response": replies[i],
                "defender_unsafe_prob": float(p_def[i]),
                "adversary_unsafe_prob": float(p_adv[i]),
                "defender_categories": list(def_cats[i]),
                "adversary_categories": list(adv_cats[i]),
                "defender_unsafe": unsafe,
                "reward_terms": terms[i],
                "utterance": said[i][0] if added else None,
                "utterance_truncated": said[i][1],
                "opener_id": d.opener.id,
                "transcript": [dict(m) for m in d.transcript],
            }
            results.append(TurnResult(sum(terms[i].values()), terminated, truncated, info))
        return results

    def judge_batch(
        self,
        utterances: Sequence[str],
        replies: Sequence[str],
        reply_chats: Sequence[Chat],
        utterance_chats: Sequence[Chat],
    ) -> JudgeBatch:
        """Everything one step asks of the judge: each reply and each utterance in its
        conversation, then what the reward's terms need, the utterance and the reply as one
        text (`joint`) and the replies with their echoes removed (`echo`)."""
        batch = JudgeBatch()
        batch.add(DEFENDER, reply_chats)
        batch.add(ADVERSARY, utterance_chats)
        if self.reward.config.uses("joint"):
            batch.add(
                "joint",
                [
                    [{"role": "user", "content": f"{u}\n\n{r}"}]
                    for u, r in zip(utterances, replies, strict=True)
                ],
            )
        batch.echoed = self.reward.echo_texts(utterances, replies)
        batch.add(
            "echo",
            [
                [*reply_chats[i][:-1], {"role": "assistant", "content": batch.echoed[i] or ""}]
                for i in batch.echo_rows
            ],
        )
        return batch

    def respond(
        self, conversations: list[list[dict[str, str]]], generator: torch.Generator | None
    ) -> list[str]:
        """The defender's replies, checked: one `str` per conversation (`ComponentError`
        names the defender otherwise)."""
        replies = call_component(
            "defender",
            lambda chunk: list(self.defender.respond(chunk, generator)),
            conversations,
            lambda parts: [r for part in parts for r in part],
            retry_smaller_batch=self.retry_smaller_batch,
        )
        if len(replies) != len(conversations):
            raise ComponentError(
                "defender",
                f"returned {len(replies)} replies for {len(conversations)} conversations",
            )
        bad = [(i, r) for i, r in enumerate(replies) if not isinstance(r, str)]
        if bad:
            i, r = bad[0]
            raise ComponentError(
                "defender",
                f"returned {type(r).__name__} {r!r} instead of a str reply for conversation {i} "
                f"({len(bad)} of {len(replies)} replies are not text)",
            )
        return replies

    def score(self, chats: list[list[dict[str, str]]]) -> JudgeOutput:
        """The judge's scores, checked: one finite P(unsafe) in [0, 1] per conversation
        (`ComponentError` names the judge otherwise)."""
        out = call_component(
            "judge",
            self.judge.score,
            chats,
            _join_judge_outputs,
            retry_smaller_batch=self.retry_smaller_batch,
        )
        p = np.asarray(getattr(out, "p_unsafe", None), dtype=np.float64).reshape(-1)
        if p.shape != (len(chats),):
            raise ComponentError(
                "judge", f"returned {p.size} scores for {len(chats)} conversations"
            )
        bad = np.flatnonzero(~np.isfinite(p) | (p < 0.0) | (p > 1.0))
        if bad.size:
            raise ComponentError(
                "judge",
                f"returned P(unsafe) {float(p[bad[0]])} for conversation {int(bad[0])} "
                f"({bad.size} of {p.size} scores are NaN or outside [0, 1])",
            )
        return JudgeOutput(p, getattr(out, "categories", None))

    def reset_info(self, dialogue: Dialogue) -> dict[str, Any]:
        return {
            "turn": 0,
            "opener_id": dialogue.opener.id,
            "opener": dialogue.opener.text,
            "opener_topic": dialogue.opener.topic,
            "transcript": [dict(m) for m in dialogue.transcript],
        }


def _join_judge_outputs(parts: list[Any]) -> JudgeOutput:
    """One `JudgeOutput` from the outputs of consecutive chunks of a batch."""
    p = np.concatenate([np.asarray(o.p_unsafe, dtype=np.float64).reshape(-1) for o in parts])
    cats = [getattr(o, "categories", None) for o in parts]
    if all(c is None for c in cats):
        return JudgeOutput(p)
    rows = [
        list(row)
        for o, c in zip(parts, cats, strict=True)
        for row in (c if c is not None else [[] for _ in range(len(o.p_unsafe))])
    ]
    return JudgeOutput(p, rows)


def torch_generator(engine: DialogueEngine, seed: int) -> torch.Generator:
    """A generator on the defender's device (sampling on a GPU needs one there)."""
    device = engine.defender.device if isinstance(engine.defender, ChatLM) else "cpu"
    return torch.Generator(device=device).manual_seed(seed % (2**63))


def seed_from(rng: np.random.Generator) -> int:
    return int(rng.integers(0, sys.maxsize))
