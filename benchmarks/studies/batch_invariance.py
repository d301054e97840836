"""Does a greedy defender's reply depend on how it was batched? One defender per weights setting.

    python -m benchmarks.studies.batch_invariance [--defender smollm2-135m-instruct]
        [--weights int4 dense] [--format chat] [--conversations 32] [--max-new-tokens 48]
        [--out FILE]

Greedy decoding makes a reply a function of its conversation, in exact arithmetic. In floating
point, a batch's size, its padding and the KV cache change the order of sums and the kernels
chosen by shape, and so the rounding; a reply changes where its argmax is a near-tie. Per
weights setting (`load_causal_lm`'s `weights`), each check asks `--conversations` openers of
the builtin corpus's eval split, greedy, `--max-new-tokens` tokens, and counts the replies that
come out identical, character for character:

- **twice**: the whole batch, twice, each time prefilled afresh (a run is reproducible);
- **one by one**: the whole batch against each conversation alone (the number of envs);
- **cache**: a second turn (the reply, then the next opener as the user's message) continued
  from the first turn's KV cache against prefilled afresh (a restarted replica or process).

The report shows, per setting and check, one pair of replies that differ, for reading.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.perf import command_line, machine_info, report_header, write_report

Chat = list[dict[str, str]]

CHECKS = ("twice", "one by one", "cache")


def _fresh(defender: Any, chats: Sequence[Chat]) -> list[str]:
    defender.clear_cache()
    return list(defender.respond(list(chats)))


def checks(defender: Any, first: Sequence[str], second: Sequence[str]) -> dict[str, Any]:
    """The three checks on `defender` (with `respond` and `clear_cache`): per check, the
    pairs of replies compared, `first[i]` opening conversation i and `second[i]` its second
    user message."""
    if len(first) != len(second) or not first:
        raise ValueError(
            f"need as many second messages as openers, and at least one: got {len(first)} "
            f"openers, {len(second)} second messages"
        )
    chats = [[{"role": "user", "content": text}] for text in first]
    batch = _fresh(defender, chats)
    again = _fresh(defender, chats)
    alone = [_fresh(defender, [chat])[0] for chat in chats]
    turn2 = [
        [*chat, {"role": "assistant", "content": reply}, {"role": "user", "content": text}]
        for chat, reply, text in zip(chats, batch, second, strict=True)
    ]
    _fresh(defender, chats)  # leaves the first turn's KV cache, as an env's step does
    continued = list(defender.respond(turn2))
    afresh = _fresh(defender, turn2)
    return {
        "twice": list(zip(batch, again, strict=True)),
        "one by one": list(zip(batch, alone, strict=True)),
        "cache": list(zip(continued, afresh, strict=True)),
    }


def identical(pairs: Sequence[tuple[str, str]]) -> int:
    return sum(a == b for a, b in pairs)


def render(
    command: str,
    info: dict[str, str],
    args: argparse.Namespace,
    results: dict[str, dict[str, Any]],
    seconds: dict[str, float],
) -> str:
    n = args.conversations
    lines = [
        *report_header(
            "Batch invariance: greedy replies under batching and caching", command, info
        ),
        "## Work",
        "",
        f"- defender `{args.defender}`, format `{args.format}`, greedy, up to "
        f"{args.max_new_tokens} new tokens; {n} openers of the builtin corpus's eval split, "
        "the next "
        f"{n} as second user messages",
        f"- checks (replies identical, character for character): **twice**, the batch of {n} "
        f"twice, each prefilled afresh; **one by one**, the batch of {n} against each alone; "
        "**cache**, a second turn continued from the first's KV cache against prefilled afresh",
        "",
        "## Results",
        "",
        "| weights | " + " | ".join(CHECKS) + " | s |",
        "|---|" + "---:|" * (len(CHECKS) + 1),
    ]
    for weights, result in results.items():
        counts = " | ".join(f"{identical(result[c])}/{n}" for c in CHECKS)
        lines.append(f"| {weights} | {counts} | {seconds[weights]:.0f} |")
    lines += ["", "## Replies that differ (the first pair of each check)", ""]
    for weights, result in results.items():
        for check in CHECKS:
            pair = next(((a, b) for a, b in result[check] if a != b), None)
            if pair is not None:
                lines.append(f"- {weights}, {check}:")
                lines += [f"  - `{_line(pair[0])}`", f"  - `{_line(pair[1])}`"]
    return "\n".join(lines) + "\n"


def _line(text: str) -> str:
    return text.replace("\n", " / ").replace("`", "'")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.studies.batch_invariance",
        description="Greedy replies under batching and caching, per defender weights setting.",
    )
    p.add_argument("--defender", default="smollm2-135m-instruct", help="a model name or path")
    p.add_argument("--weights", nargs="+", default=["int4", "dense"], help="(default: int4 dense)")
    p.add_argument(
        "--format",
        choices=["chat", "completion"],
        default="chat",
        help="how the defender reads the conversation (the env's defender_format; default chat)",
    )
    p.add_argument("--conversations", type=int, default=32, help="(default 32)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="(default 48)")
    p.add_argument("--out", type=Path, help="also write the markdown report here")
    args = p.parse_args(argv)
    if args.conversations < 1 or args.max_new_tokens < 1:
        p.error("--conversations and --max-new-tokens must be >= 1")
    return args


def main(
    argv: Sequence[str] | None = None, make: Callable[..., Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Run the checks for every `--weights`; `make(weights)` builds the defender (default:
    `make_defender` with the arguments' model, format and greedy sampling)."""
    from redteam_gym.envs.config import EnvConfig
    from redteam_gym.prompts.corpus import load_openers

    args = parse_args(argv)
    info = machine_info()
    if make is None:
        from redteam_gym.defenders import make_defender
        from redteam_gym.models import SamplingConfig

        sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.0)
        thread = EnvConfig(defender_format=args.format).thread_format()

        def make(weights: str) -> Any:
            return make_defender(args.defender, sampling=sampling, thread=thread, weights=weights)

    openers = [o.text for o in load_openers("builtin", split="eval")]
    n = args.conversations
    if len(openers) < 2 * n:
        raise SystemExit(
            f"--conversations {n} needs {2 * n} openers; the eval split has {len(openers)}"
        )
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for weights in args.weights:
        start = time.perf_counter()
        results[weights] = checks(make(weights), openers[:n], openers[n : 2 * n])
        seconds[weights] = time.perf_counter() - start
        print(
            f"{weights}: " + ", ".join(f"{c} {identical(results[weights][c])}/{n}" for c in CHECKS),
            flush=True,
        )
    report = render(command_line(), info, args, results, seconds)
    if args.out is not None:
        write_report(args.out, report)
    else:
        print(report)
    return results


if __name__ == "__main__":
    main()
