"""Is bf16 autocast worth it for training on this CPU? Speed and accuracy of one epoch.

```
python -m benchmarks.perf.bf16_autocast [--batch-size 8] [--length 180] [--repeats 5]
    [--out benchmarks/results/perf-bf16-autocast.md]
```

Times one PPO-style epoch of the adversary (the top layers from the shared bottom's
boundary states, the output head, the critic, backward) on the embedded SmolLM2 in fp32 and
under `torch.autocast("cpu", bfloat16)`, alternating, and compares the logprobs of the last
24 positions. The learners compare training logprobs with the sampler's fp32 ones (PPO's
ratio starts at 1), so autocast is worth it only if it is faster *and* leaves them equal.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.perf import (
    report_header,
    run_benchmark,
)

MODULE = "benchmarks.perf.bf16_autocast"


def measure(batch_size: int, length: int, repeats: int) -> dict[str, float]:
    import torch

    from agents.common.policy import ActorCritic, states_before, token_logits
    from agents.common.shared_bottom import boundary_states, top_layers
    from redteam_gym.models import SMOLLM2, load_causal_lm

    torch.manual_seed(0)
    actor, tokenizer = load_causal_lm(SMOLLM2, frozen=False)
    reference, _ = load_causal_lm(SMOLLM2)
    policy = ActorCritic(actor, tokenizer)
    start = policy.num_frozen_layers
    ids = torch.randint(100, tokenizer.vocab_size, (batch_size, length))
    mask = torch.ones_like(ids)
    position_ids = torch.arange(length).expand(batch_size, -1)
    positions = torch.arange(length - 24, length).expand(batch_size, -1)
    _, boundary = boundary_states(reference, start, ids, mask, position_ids)

    def logprobs(bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = top_layers(actor, boundary, mask, position_ids, start)
            states = states_before(hidden, positions)
            out = token_logits(actor, states).log_softmax(-1)
            return out, policy.value(states).float()

    def epoch(bf16: bool) -> float:
        t0 = time.perf_counter()
        out, values = logprobs(bf16)
        (-out[..., 5].mean() + values.mean()).backward()
        policy.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in (False, True):
        epoch(bf16)  # warm-up
    for _ in range(repeats):
        for bf16 in (False, True):
            times[bf16].append(epoch(bf16))
    with torch.no_grad():
        diff = (logprobs(False)[0] - logprobs(True)[0].float()).abs()
    return {
        "fp32_s": statistics.median(times[False]),
        "bf16_s": statistics.median(times[True]),
        "mean_abs_diff": diff.mean().item(),
        "max_abs_diff": diff.max().item(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=8, help="dialogues (default 8)")
    p.add_argument("--length", type=int, default=180, help="tokens per dialogue (default 180)")
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per side (default 5)")
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/perf-bf16-autocast.md"), help="report"
    )
    args = p.parse_args(argv)
    if min(args.batch_size, args.length - 24, args.repeats) < 1:
        p.error("--batch-size and --repeats must be >= 1, --length > 24")
    return run_benchmark(
        MODULE,
        argv,
        args,
        lambda _: measure(args.batch_size, args.length, args.repeats),
        lambda command, info, r: render_report(args, command, info, r),
    )


def render_report(
    args: argparse.Namespace, command: str, info: dict[str, str], r: dict[str, float]
) -> str:
    lines = [
        *report_header("bf16 autocast on the CPU: one training epoch", command, info),
        f"Batch {args.batch_size} x {args.length} tokens, top layers from the boundary states, "
        f"median of {args.repeats} alternating epochs per side.",
        "",
        "| | s/epoch |",
        "|---|---:|",
        f"| fp32 | {r['fp32_s']:.3f} |",
        f"| bf16 autocast | {r['bf16_s']:.3f} |",
        "",
        f"**fp32 / bf16: {r['fp32_s'] / r['bf16_s']:.2f}x.** Logprobs of the last 24 positions "
        f"under autocast differ from fp32 by {r['mean_abs_diff']:.4f} nats on average and "
        f"{r['max_abs_diff']:.3f} at most.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
