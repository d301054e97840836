"""Our PPO update against TRL's on the same work, and against the floor of its compute.

```
python -m benchmarks.perf.ppo_vs_trl [--rounds 2] [--updates 3] [--warmup 1]
    [--trl-venv .venv-trl] [--out benchmarks/results/perf-ppo-vs-trl.md]
```

The work, on both sides: SmolLM2-135M-Instruct, the adversary's view of the builtin train
openers as prompts, batch 8, responses of 24 tokens sampled at T 1, 1 turn, 4 PPO epochs of 1
minibatch. TRL's sampler does not stop at EOS (its `stop_token` only truncates the response
afterwards), so our sampler is run with no stop token here either: both sides sample, score
and train on all 24 tokens of every response.

- **TRL** 1.12.0 (`trl.experimental.ppo.PPOTrainer`, the last TRL with a PPO trainer) runs in a
  virtual environment this benchmark creates (`--trl-venv`), with the project's torch and
  transformers pinned; TRL is never a dependency of the project. TRL's design: four full
  models (policy, reference, value model, reward model). Its reward is a
  sequence-classification model, one forward over prompt and response.
- **Ours**: `agents.PPO` on `RedTeamDialogue-v0`, whose reward costs about the same: the
  defender reads the conversation and writes one token (one forward of the same model),
  and the `profanity` judge costs microseconds. Our design: one model whose bottom half is
  frozen, an MLP critic, and the frozen reference.
- **Floor**: the compute no PPO update of that batch can avoid, timed alone: one sampling
  pass with a KV cache, one reference forward, and per epoch one forward and backward of
  the trainable top half (from the boundary states the reference's frozen bottom computed),
  with nothing else: no env, no critic, no loss bookkeeping.

Each side runs in its own process, `--warmup` updates then `--updates` timed updates; the
sides alternate for `--rounds` rounds, so a drift in the machine's speed hits both. The
report gives the median seconds per update of each, TRL / ours, and ours / floor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.perf import (
    ensure_venv,
    report_header,
    run_benchmark,
    run_child,
)

MODULE = "benchmarks.perf.ppo_vs_trl"
TRL_VERSION = "1.12.0"
WORKER = Path(__file__).with_name("trl_worker.py")


# ----- the TRL environment -------------------------------------------------------------------


def trl_requirements() -> list[str]:
    """TRL pinned, with this project's torch and transformers (the same kernels on both sides)."""
    import torch
    import transformers

    torch_version = torch.__version__.split("+")[0]
    return [
        f"trl=={TRL_VERSION}",
        f"transformers=={transformers.__version__}",
        f"torch=={torch_version}",
    ]


def ensure_trl_venv(path: Path) -> Path:
    """The TRL virtual environment's python, created and installed on first use (torch first
    and alone: pip then takes the local CPU build, not a CUDA one from the index)."""
    requirements = trl_requirements()
    return ensure_venv(path, requirements, first=requirements[-1:])


# ----- the shared job ------------------------------------------------------------------------


def prompt_ids(n: int) -> list[list[int]]:
    """The adversary's first-turn prompts for `n` builtin train openers, as token ids."""
    from redteam_gym.adversary import adversary_view
    from redteam_gym.models import SMOLLM2, encode_chat, load_tokenizer
    from redteam_gym.prompts import load_openers
    from redteam_gym.transcript import OPENER

    tokenizer = load_tokenizer(SMOLLM2)
    openers = load_openers("builtin", split="train")
    chats = [adversary_view([{"role": OPENER, "content": o.text}]) for o in openers]
    rows = [encode_chat(tokenizer, chat, add_generation_prompt=True) for chat in chats]
    return [rows[i % len(rows)] for i in range(n)]


def _job(args: argparse.Namespace) -> dict[str, Any]:
    from redteam_gym.models import SMOLLM2
    from redteam_gym.models.loading import resolve_model

    return {
        "model_dir": resolve_model(SMOLLM2),
        "prompts": prompt_ids(args.batch_size * (args.warmup + args.updates)),
        "batch_size": args.batch_size,
        "response_length": args.response_length,
        "ppo_epochs": args.ppo_epochs,
        "num_minibatches": 1,
        "warmup": args.warmup,
        "updates": args.updates,
        "learning_rate": 1e-5,
        "kl_coef": 0.05,
        "threads": args.threads,
        "seed": 0,
    }


# ----- our side and the floor (children in this environment) ---------------------------------


def _ours(job: dict[str, Any]) -> dict[str, Any]:
    import resource

    from agents import PPO, PPOConfig
    from redteam_gym.envs import EnvConfig

    config = PPOConfig(
        env=EnvConfig(max_turns=1, defender_max_new_tokens=1, judge="profanity"),
        batch_size=job["batch_size"],
        max_new_tokens=job["response_length"],
        ppo_epochs=job["ppo_epochs"],
        num_minibatches=job["num_minibatches"],
        actor_lr=job["learning_rate"],
        seed=job["seed"],
    )
    learner = PPO(config)
    learner.policy.eos_token_ids = []  # every response runs its full length, as TRL's do
    _ = learner.env
    env_seconds = [0.0]
    step = learner.env.step

    def timed_step(actions):
        t0 = time.perf_counter()
        try:
            return step(actions)
        finally:
            env_seconds[0] += time.perf_counter() - t0

    learner.env.step = timed_step
    learner.total_updates = job["warmup"] + job["updates"]
    rows = []
    for _ in range(learner.total_updates):
        env_seconds[0] = 0.0
        t0 = time.perf_counter()
        rollout = learner.collect_rollout()
        t1 = time.perf_counter()
        learner.train(rollout)
        learner.update_idx += 1
        t2 = time.perf_counter()
        tokens = sum(len(s.tokens) for s in rollout.segments) / len(rollout.segments)
        rows.append(
            {
                "seconds": t2 - t0,
                "rollout_s": t1 - t0,
                "env_s": env_seconds[0],
                "train_s": t2 - t1,
                "tokens": tokens,
            }
        )
    return {
        "seconds": [r["seconds"] for r in rows[job["warmup"] :]],
        "parts": rows[job["warmup"] :],
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _floor(job: dict[str, Any], repeats: int = 3) -> dict[str, Any]:
    import torch

    from agents.common.batch import Segment, TokenBatch
    from agents.common.policy import ActorCritic, states_before, token_logits
    from agents.common.shared_bottom import boundary_states, top_layers
    from redteam_gym.models import SMOLLM2, SamplingConfig, load_causal_lm

    actor, tokenizer = load_causal_lm(SMOLLM2, frozen=False)
    reference, _ = load_causal_lm(SMOLLM2)
    policy = ActorCritic(actor, tokenizer)
    policy.eos_token_ids = []  # every response runs its full length, as TRL's do
    start = policy.num_frozen_layers
    prompts = job["prompts"][: job["batch_size"]]
    sampling = SamplingConfig(max_new_tokens=job["response_length"], temperature=1.0)
    times: dict[str, list[float]] = {"sample_s": [], "reference_s": [], "epoch_s": []}
    for r in range(repeats):
        generator = torch.Generator().manual_seed(r)
        t0 = time.perf_counter()
        samples = policy.generate(prompts, sampling, generator)
        t1 = time.perf_counter()
        segments = [
            Segment(i, 0, len(p), t, lp, lp, None, 0.0, 0.0, 0.0)
            for i, (p, t, lp) in enumerate(
                zip(prompts, samples.tokens, samples.logprobs, strict=True)
            )
        ]
        sequences = [list(p) + list(t) for p, t in zip(prompts, samples.tokens, strict=True)]
        batch = TokenBatch.build(
            sequences, segments, list(range(len(prompts))), pad_token_id=tokenizer.pad_token_id
        )
        t2 = time.perf_counter()
        # the reference forward, which also leaves the boundary states of the shared bottom
        args = (batch.input_ids, batch.attention_mask, batch.position_ids)
        hidden, boundary = boundary_states(reference, start, *args)
        token_logits(reference, states_before(hidden, batch.positions)).log_softmax(-1)
        t3 = time.perf_counter()
        times["sample_s"].append(t1 - t0)
        times["reference_s"].append(t3 - t2)
        for _ in range(job["ppo_epochs"]):
            t4 = time.perf_counter()
            top = top_layers(actor, boundary, *args[1:], start)
            logits = token_logits(actor, states_before(top, batch.positions))
            logprobs = logits.log_softmax(-1).gather(-1, batch.tokens[..., None])
            (-logprobs.squeeze(-1)[batch.mask].mean()).backward()
            actor.zero_grad(set_to_none=True)
            times["epoch_s"].append(time.perf_counter() - t4)
    medians = {k: statistics.median(v) for k, v in times.items()}
    medians["floor_s"] = (
        medians["sample_s"] + medians["reference_s"] + job["ppo_epochs"] * medians["epoch_s"]
    )
    return medians


# ----- the parent --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="TRL/ours alternations (default 2)")
    p.add_argument("--updates", type=int, default=3, help="timed updates per process (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed updates first (default 1)")
    p.add_argument("--batch-size", type=int, default=8, help="(default 8)")
    p.add_argument("--response-length", type=int, default=24, help="(default 24)")
    p.add_argument("--ppo-epochs", type=int, default=4, help="(default 4)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--trl-venv", type=Path, default=Path(".venv-trl"), help="(default .venv-trl)")
    p.add_argument("--skip-trl", action="store_true", help="time ours and the floor only")
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/perf-ppo-vs-trl.md"), help="report"
    )
    p.add_argument("--child", choices=["ours", "floor"], help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.rounds, args.updates, args.batch_size, args.response_length, args.ppo_epochs) < 1:
        p.error(
            "--rounds, --updates, --batch-size, --response-length and --ppo-epochs must be >= 1"
        )
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(
        MODULE,
        argv,
        args,
        lambda _: measure(args),
        lambda command, info, result: render_report(args, command, info, *result),
        child=(lambda: _child(args)) if args.child else None,
    )


def _child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    job = json.loads(Path(args.job).read_text(encoding="utf-8"))
    torch.set_num_threads(job["threads"])
    return _ours(job) if args.child == "ours" else _floor(job)


def measure(
    args: argparse.Namespace,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, float]]:
    """Alternating rounds of TRL's update and ours, then the floor, each in a subprocess."""
    trl_python = None if args.skip_trl else ensure_trl_venv(args.trl_venv)
    results: dict[str, list[dict[str, Any]]] = {"trl": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(_job(args)), encoding="utf-8")
        me = [sys.executable, "-m", MODULE, "--job", str(job_path)]
        for r in range(args.rounds):
            if trl_python is not None:
                print(f"round {r + 1}: TRL ...", flush=True)
                results["trl"].append(
                    run_child([str(trl_python), str(WORKER), str(job_path)], "TRL")
                )
                print(f"    {statistics.median(results['trl'][-1]['seconds']):.1f} s/update")
            print(f"round {r + 1}: ours ...", flush=True)
            results["ours"].append(run_child([*me, "--child", "ours"], "ours"))
            print(f"    {statistics.median(results['ours'][-1]['seconds']):.1f} s/update")
        print("floor ...", flush=True)
        floor = run_child([*me, "--child", "floor"], "floor")
    return results, floor


def render_report(
    args: argparse.Namespace,
    command: str,
    info: dict[str, str],
    results: dict[str, list[dict[str, Any]]],
    floor: dict[str, float],
) -> str:
    ours = statistics.median(s for r in results["ours"] for s in r["seconds"])
    parts = [p for r in results["ours"] for p in r["parts"]]
    lines = [
        *report_header("PPO: ours against TRL, and against the floor", command, info),
        f"Work per update: batch {args.batch_size}, responses of {args.response_length} "
        f"tokens (T 1, no stop token on either side), 1 turn, {args.ppo_epochs} epochs x 1 minibatch, "
        "SmolLM2-135M-Instruct in fp32. Medians over "
        f"{args.rounds} alternating rounds x {args.updates} timed updates (after {args.warmup} "
        "warm-up) per side.",
        "",
        "| | s/update | peak RSS |",
        "|---|---:|---:|",
    ]
    if results["trl"]:
        trl = statistics.median(s for r in results["trl"] for s in r["seconds"])
        versions = results["trl"][0]["versions"]
        rss = max(r["max_rss_mib"] for r in results["trl"])
        lines.append(
            f"| TRL {versions['trl']} `PPOTrainer` (4 full models) | {trl:.2f} | "
            f"{rss / 1024:.2f} GiB |"
        )
    rss = max(r["max_rss_mib"] for r in results["ours"])
    lines += [
        f"| ours, `agents.PPO` (top half trained, MLP critic) | {ours:.2f} | {rss / 1024:.2f} GiB |",
        f"| floor: sample + reference forward + {args.ppo_epochs} x top-half forward/backward | "
        f"{floor['floor_s']:.2f} | |",
        "",
    ]
    if results["trl"]:
        lines.append(f"**TRL / ours: {trl / ours:.2f}x** (goal: at least 3x).")
    lines += [
        f"**Ours / floor: {ours / floor['floor_s']:.2f}x** (goal: at most 1.3x).",
        "",
        "Our update, median parts: "
        f"rollout {statistics.median(p['rollout_s'] for p in parts):.2f} s "
        f"(of which env step {statistics.median(p['env_s'] for p in parts):.2f} s), "
        f"train {statistics.median(p['train_s'] for p in parts):.2f} s; "
        f"{statistics.median(p['tokens'] for p in parts):.1f} tokens per utterance. "
        f"Floor parts: sample {floor['sample_s']:.2f} s, reference {floor['reference_s']:.2f} s, "
        f"top-half forward/backward {floor['epoch_s']:.2f} s per epoch.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
