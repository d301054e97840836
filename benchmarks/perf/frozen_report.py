"""The frozen-inference benchmark's results: what each side did, its rates, the equal-work
check, and the markdown report (`benchmarks.perf.frozen_inference` measures them)."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.perf import report_header

LLAMA_CPP = "llama.cpp"
BASELINE = "fp32"
"""The mode every comparison is made against: the GGUF dequantised to fp32."""

# ----- results -------------------------------------------------------------------------------


@dataclass
class Pass:
    """One timed pass over all the conversations at one batch size."""

    seconds: float
    """The whole pass: every chunk's prefill and decode steps."""
    prefill_seconds: float
    """Of `seconds`: the chunks' prefill calls."""
    tokens: list[list[int]]
    """Per conversation, the generated ids."""

    @classmethod
    def from_json(cls, data: Any, where: str) -> Pass:
        """A pass as a worker reports it; anything malformed raises `ValueError` naming `where`."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: a pass must be a JSON object, got {data!r}")
        missing = [k for k in ("seconds", "prefill_seconds", "tokens") if k not in data]
        if missing:
            raise ValueError(f"{where}: a pass is missing {missing}")
        seconds, prefill = data["seconds"], data["prefill_seconds"]
        if not all(isinstance(x, (int, float)) and x >= 0 for x in (seconds, prefill)):
            raise ValueError(f"{where}: seconds must be numbers >= 0, got {seconds}, {prefill}")
        if prefill > seconds:
            raise ValueError(f"{where}: prefill_seconds {prefill} exceeds seconds {seconds}")
        tokens = data["tokens"]
        if not isinstance(tokens, list) or not all(
            isinstance(t, list) and all(isinstance(i, int) for i in t) for t in tokens
        ):
            raise ValueError(f"{where}: tokens must be a list of lists of token ids")
        return cls(float(seconds), float(prefill), [list(t) for t in tokens])


@dataclass
class Side:
    """What one side (one of our modes, or llama.cpp) did, pooled over its processes."""

    name: str
    passes: dict[int, list[Pass]] = field(default_factory=dict)
    """Batch size -> its timed passes."""
    errors: dict[int, str] = field(default_factory=dict)
    """Batch sizes that failed on this side, with why."""
    versions: dict[str, str] = field(default_factory=dict)
    replies: list[str] | None = None
    """With `--fidelity`: the greedy env replies to the fidelity conversations."""

    def add(self, result: Mapping[str, Any]) -> None:
        """Pool one process's result line (the `RESULT {json}` of a child or the worker):
        `batches` (batch size -> passes), and optionally `errors`, `versions`, `replies`."""
        if not isinstance(result, Mapping) or not isinstance(result.get("batches"), Mapping):
            raise ValueError(f"{self.name}: a result needs 'batches' (batch size -> passes)")
        for key, passes in result["batches"].items():
            batch = _batch_size(key, self.name)
            if not isinstance(passes, list) or not passes:
                raise ValueError(f"{self.name}: batch {batch} has no passes")
            self.passes.setdefault(batch, []).extend(
                Pass.from_json(p, f"{self.name} batch {batch} pass {k}")
                for k, p in enumerate(passes)
            )
        for key, why in (result.get("errors") or {}).items():
            self.errors[_batch_size(key, self.name)] = str(why)
        self.versions.update({str(k): str(v) for k, v in (result.get("versions") or {}).items()})
        if result.get("replies") is not None:
            self.replies = [str(r) for r in result["replies"]]


def _batch_size(key: Any, side: str) -> int:
    try:
        batch = int(key)
    except (TypeError, ValueError):
        raise ValueError(f"{side}: batch size must be an integer, got {key!r}") from None
    if batch < 1:
        raise ValueError(f"{side}: batch size must be >= 1, got {batch}")
    return batch


def check_equal_work(sides: Sequence[Side], conversations: int, new_tokens: int) -> int:
    """The tokens one pass generates on every side (`conversations x new_tokens`): every pass
    of every side must hold exactly `conversations` replies of exactly `new_tokens` ids, or
    `ValueError` names the side, the batch size and the conversation that differ."""
    for side in sides:
        for batch, passes in side.passes.items():
            for k, p in enumerate(passes):
                where = f"{side.name} at batch {batch}, pass {k}"
                if len(p.tokens) != conversations:
                    raise ValueError(
                        f"unequal work: {where} replied to {len(p.tokens)} conversations, "
                        f"not {conversations}"
                    )
                for c, reply in enumerate(p.tokens):
                    if len(reply) != new_tokens:
                        raise ValueError(
                            f"unequal work: {where} generated {len(reply)} tokens for "
                            f"conversation {c}, not {new_tokens}"
                        )
    return conversations * new_tokens


@dataclass(frozen=True)
class Rates:
    """Medians over a side's timed passes at one batch size."""

    batch: int
    passes: int
    tokens: int
    """Tokens one pass generated."""
    decode_tokens_per_s: float
    """Tokens after each reply's first, over the pass's time after its prefill calls."""
    seconds_per_reply: float
    seconds_per_batch: float
    """The time of one chunk of `batch` replies: one reply's latency at that batch size."""
    prefill_seconds: float


def rates(passes: Sequence[Pass], batch: int) -> Rates:
    """The medians of `passes` (timed passes over the same conversations at `batch`)."""
    if not passes:
        raise ValueError(f"no passes at batch {batch}")
    replies = len(passes[0].tokens)
    decode = [
        (sum(len(t) for t in p.tokens) - len(p.tokens)) / (p.seconds - p.prefill_seconds)
        if p.seconds > p.prefill_seconds
        else float("nan")
        for p in passes
    ]
    chunks = -(-replies // batch)
    return Rates(
        batch=batch,
        passes=len(passes),
        tokens=sum(len(t) for t in passes[0].tokens),
        decode_tokens_per_s=statistics.median(decode),
        seconds_per_reply=statistics.median(p.seconds / replies for p in passes),
        seconds_per_batch=statistics.median(p.seconds / chunks for p in passes),
        prefill_seconds=statistics.median(p.prefill_seconds for p in passes),
    )


def best_batch(side: Side) -> Rates | None:
    """The side's batch size with the most decode tokens/s."""
    all_rates = [rates(p, b) for b, p in side.passes.items() if p]
    return max(all_rates, key=lambda r: r.decode_tokens_per_s, default=None)


def agreement(a: Sequence[Any], b: Sequence[Any]) -> tuple[int, int]:
    """How many of the paired replies are identical, and how many pairs."""
    if len(a) != len(b):
        raise ValueError(f"cannot pair {len(a)} replies with {len(b)}")
    return sum(x == y for x, y in zip(a, b, strict=True)), len(a)


@dataclass
class Measurement:
    """What `measure` hands the report."""

    sides: list[Side]
    prompt_lengths: list[int]
    example_prompt: str
    judge: dict[str, list[float]] | None
    judge_texts: int


def render_report(
    args: argparse.Namespace, command: str, info: dict[str, str], m: Measurement
) -> str:
    tokens = check_equal_work(m.sides, args.conversations, args.new_tokens)
    by_name = {s.name: s for s in m.sides}
    llama = by_name.get(LLAMA_CPP)
    baseline = by_name[f"ours {BASELINE}"]
    lengths = m.prompt_lengths
    lines = [
        *report_header("Frozen defender inference: ours beside llama.cpp", command, info),
        "## Work",
        "",
        f"{args.conversations} conversations, each a builtin train opener and one scripted "
        "adversary line, rendered in the default completion format as the env's defender reads "
        f"them (prompts of {min(lengths)} to {max(lengths)} tokens, mean "
        f"{statistics.mean(lengths):.0f}); the same token ids on every side. Greedy, no stop "
        f"token: every reply is {args.new_tokens} tokens. Batch sizes "
        f"{', '.join(map(str, args.batch_sizes))}; {args.threads} threads per side; medians over "
        f"{args.rounds} alternating rounds x {args.repeats} timed passes (after {args.warmup} "
        "warm-up) per side and batch size.",
        "",
        f"**Equal work:** every pass of every side generated {tokens} tokens "
        f"({args.conversations} replies x {args.new_tokens}), checked reply by reply.",
        "",
        "The first conversation's prompt:",
        "",
        "```",
        m.example_prompt,
        "```",
        "",
        "## Defender",
        "",
        "| side | batch | decode tokens/s | s/reply | s per batch | prefill s per pass "
        "| tokens per pass | decode vs llama.cpp |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for side in m.sides:
        for batch in sorted(side.passes):
            r = rates(side.passes[batch], batch)
            versus = ""
            if llama is not None and batch in llama.passes:
                versus = f"{r.decode_tokens_per_s / rates(llama.passes[batch], batch).decode_tokens_per_s:.2f}x"
            lines.append(
                f"| {side.name} | {batch} | {r.decode_tokens_per_s:.1f} | "
                f"{r.seconds_per_reply:.3f} | {r.seconds_per_batch:.3f} | {r.prefill_seconds:.3f} "
                f"| {r.tokens} | {versus} |"
            )
    lines.append("")
    for side in m.sides:
        for batch, why in sorted(side.errors.items()):
            lines.append(f"- {side.name} could not run batch {batch}: {why}")
    if llama is not None:
        missing = [b for b in args.batch_sizes if b not in llama.passes]
        best_llama = best_batch(llama)
        if missing:
            lines.append(
                f"- llama.cpp did not batch {', '.join(map(str, missing))} as we do: each side "
                "is compared at its best batch size below."
            )
        ours = [(s, best_batch(s)) for s in m.sides if s is not llama]
        if best_llama is not None:
            lines += [
                "",
                f"**Best of each** (goal: at least 0.8x llama.cpp at batch 8): llama.cpp "
                f"{best_llama.decode_tokens_per_s:.1f} decode tokens/s at batch "
                f"{best_llama.batch}; "
                + "; ".join(
                    f"{side.name} {r.decode_tokens_per_s:.1f} at batch {r.batch} "
                    f"({r.decode_tokens_per_s / best_llama.decode_tokens_per_s:.2f}x)"
                    for side, r in ours
                    if r is not None
                )
                + ".",
            ]
    lines += [
        "",
        "Decode tokens/s: the tokens after each reply's first, over a pass's time after its "
        "prefill calls. Ours feeds each reply's last token through the model too (the KV cache "
        "then holds the whole reply, for the next turn): one forward pass per reply more than "
        "llama.cpp's, inside ours' decode time. s per batch: the latency of one reply at that "
        "batch size.",
        "",
        "## Same replies as ours fp32 at batch 1",
        "",
        "Greedy replies identical to ours fp32's at batch 1, token for token over all "
        f"{args.new_tokens} tokens (batching alone changes rounding, so fp32 at batch "
        f"{max(args.batch_sizes)} is the noise floor):",
        "",
        "| side | batch | identical |",
        "|---|---:|---:|",
    ]
    reference = baseline.passes[min(baseline.passes)][0].tokens
    for side in m.sides:
        for batch in sorted(side.passes):
            same, n = agreement(side.passes[batch][0].tokens, reference)
            lines.append(f"| {side.name} | {batch} | {same}/{n} |")
    if args.fidelity:
        lines += [
            "",
            f"## Fidelity: greedy env replies on {args.fidelity} more conversations",
            "",
            "The env's replies (its stop rule, EOS and `defender_max_new_tokens` on), greedy, "
            "batch 8, identical to fp32's:",
            "",
            "| mode | identical | share |",
            "|---|---:|---:|",
        ]
        assert baseline.replies is not None
        for side in m.sides:
            if side.replies is not None and side is not baseline:
                same, n = agreement(side.replies, baseline.replies)
                lines.append(f"| {side.name} | {same}/{n} | {same / n:.0%} |")
    if m.judge is not None:
        lines += [
            "",
            f"## Judge `{args.judge}`",
            "",
            f"Texts/s on the {m.judge_texts} fp32 replies (cut where the env cuts them), in calls "
            "of each batch size; median over "
            f"{len(next(iter(m.judge.values())))} repeats:",
            "",
            "| batch | texts/s |",
            "|---:|---:|",
            *(
                f"| {b} | {statistics.median(v):.1f} |"
                for b, v in sorted(m.judge.items(), key=lambda kv: int(kv[0]))
            ),
        ]
    lines += ["", "## Versions", ""]
    for side in m.sides:
        versions = ", ".join(f"{k} {v}" for k, v in side.versions.items())
        lines.append(f"- {side.name}: {versions}")
    return "\n".join(lines) + "\n"
