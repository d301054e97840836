"""The frozen defender's inference, ours in each precision beside llama.cpp on the shipped GGUF.

```
python -m benchmarks.perf.frozen_inference [--modes fp32,bf16,int8] [--batch-sizes 1,8]
    [--conversations 8] [--new-tokens 64] [--rounds 2] [--repeats 2] [--warmup 1]
    [--threads N] [--fidelity 0] [--llamacpp-venv .venv-llamacpp] [--skip-llamacpp]
    [--out benchmarks/results/perf-frozen-inference.md]
```

The work, on every side: the embedded defender (SmolLM2-135M-Instruct) replies to the same
`--conversations` conversations, each a builtin train opener and one scripted adversary line
(`benchmarks.perf.vector_env.UTTERANCES`), rendered in the default world's completion format
exactly as the env's defender reads them on the first turn (the token ids are computed once
and handed to every side). Decoding is greedy and nothing stops a reply (no EOS, no stop
string), so every reply is exactly `--new-tokens` tokens on every side; the report counts the
tokens each side generated and refuses a run where they differ. At each batch size B the
conversations go in chunks of B: one prefill of the chunk, then one batched decode step per
token.

- **Ours**, one process per mode, through `redteam_gym.models.sample` (the env's sampler, its
  KV cache and left padding):
  - `fp32`: today's default on CPU, the GGUF dequantised to fp32.
  - `bf16`: the same weights in bf16, as `EnvConfig(dtype="bfloat16")` gives the defender
    (the env hands `dtype` to `make_defender`, then `ChatLM.from_pretrained` and
    `load_causal_lm`; it goes to `make_judge` too, where the `semantic` judge ignores it).
  - `int4`: the GGUF's own 4-bit weights, as `EnvConfig(defender_weights="int4")` gives the
    defender (`redteam_gym.models.int4`): every decoder linear layer packed back to its Q4_1
    grid for PyTorch's CPU int4 kernel, its products in bf16, `lm_head` (off any 4-bit grid)
    multiplied by a dense bf16 copy, everything else (norms, KV cache, attention) in fp32.
  - `int4-bf16`: the same 4-bit weights in a model cast to bf16 whole, so the norms, the KV
    cache, the attention and the logits run in bf16 too: the first int4 path, kept to compare
    its speed and its fidelity with `int4`'s (at long contexts:
    `--new-tokens 320 --batch-sizes 16 --conversations 16`).
  - `int8`: dynamic int8 quantisation of every `nn.Linear` (the decoder's and `lm_head`) with
    `torch.ao.quantization.quantize_dynamic` (fbgemm/x86 kernels: int8 weights with a scale per
    output channel, activations quantised per call); `int8-body` keeps `lm_head` in fp32.
    torch deprecates that API in favour of torchao, whose 0.18.0 release (no torch pin, torch
    >= 2.11) logs warnings at import on a CPU torch (its CUDA libraries fail to load; no
    Triton), so the deprecation warnings of `quantize_dynamic` are silenced for the call that
    quantises, and none reaches the user at inference.
- **llama.cpp**, through `llama-cpp-python` (pinned, `LLAMA_CPP_VERSION`) in a virtual
  environment this benchmark creates on first use (`--llamacpp-venv`; it compiles llama.cpp
  for this CPU), on the shipped Q4_1 GGUF itself, with the worker
  `benchmarks/perf/llamacpp_worker.py`: each chunk's B sequences decoded together, one
  `llama_decode` per step (llama.cpp's `batched` example). Where a batch size fails there,
  the report says so and compares each side at its best batch size.

Each side runs in its own process, `--warmup` untimed passes then `--repeats` timed passes over
all conversations per batch size; the sides alternate for `--rounds` rounds, so a drift in the
machine's speed hits all of them. Per side and batch size the report gives medians of: decode
tokens/s (the tokens after each reply's first, over the time after the prefill), seconds per
reply (a pass's time over its replies) and per batch (the latency of one reply at that batch
size), and the prefill's seconds. Ours feeds each reply's last token through the model too
(the KV cache then holds the whole reply, for the next turn), so its decode time holds one
forward pass more per reply than llama.cpp's.

Also in the run: the `semantic` judge's texts/s on the fp32 replies (cut where the env cuts a
reply) at each batch size, and which sides' greedy replies are identical to ours in fp32 at
batch 1, token for token. `--fidelity N` adds the figure for lower precision: on N more
conversations, the share of greedy env replies (EOS and the thread's stop rule on,
`defender_max_new_tokens` of the env) that each mode makes identical to fp32's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.perf import ensure_venv, run_benchmark, run_child
from benchmarks.perf.frozen_report import (
    BASELINE,
    LLAMA_CPP,
    Measurement,
    Pass,
    Rates,
    Side,
    agreement,
    best_batch,
    check_equal_work,
    rates,
    render_report,
)

__all__ = [
    "BASELINE",
    "LLAMA_CPP",
    "MODES",
    "Pass",
    "Rates",
    "Side",
    "agreement",
    "best_batch",
    "check_equal_work",
    "conversations",
    "defender_prompts",
    "forced_passes",
    "greedy_replies",
    "load_defender",
    "main",
    "parse_args",
    "rates",
    "render_report",
]

MODULE = "benchmarks.perf.frozen_inference"
LLAMA_CPP_VERSION = "0.3.36"
WORKER = Path(__file__).with_name("llamacpp_worker.py")
MODES = ("fp32", "bf16", "int4", "int4-bf16", "int8", "int8-body")
"""Our modes: fp32 (dense, the GGUF dequantised), bf16 weights, the GGUF's own 4-bit weights
(`EnvConfig(defender_weights="int4")`), the same 4-bit weights in a model cast to bf16 whole
(the first int4 path: norms, KV cache and attention in bf16 too), int8 dynamic quantisation of
every linear layer, and of the decoder's alone (`lm_head` in fp32)."""


# ----- the llama.cpp environment -------------------------------------------------------------


def llamacpp_requirements() -> list[str]:
    """llama-cpp-python pinned (an sdist: pip compiles llama.cpp for this CPU)."""
    return [f"llama-cpp-python=={LLAMA_CPP_VERSION}"]


def ensure_llamacpp_venv(path: Path) -> Path:
    """The llama.cpp virtual environment's python, created and installed on first use."""
    return ensure_venv(path, llamacpp_requirements(), note=": compiles llama.cpp, minutes")


# ----- the shared work -----------------------------------------------------------------------


def conversations(n: int, split: str = "train", start: int = 0) -> list[list[dict[str, str]]]:
    """`n` first-turn transcripts: builtin openers `start`, `start + 1`, ... (cycling), each
    with scripted adversary line `i mod 8` (`vector_env.UTTERANCES`)."""
    from benchmarks.perf.vector_env import UTTERANCES
    from redteam_gym.prompts import load_openers
    from redteam_gym.transcript import ADVERSARY, OPENER

    if n < 1:
        raise ValueError(f"conversations must be >= 1, got {n}")
    openers = load_openers("builtin", split=split)
    return [
        [
            {"role": OPENER, "content": openers[(start + i) % len(openers)].text},
            {"role": ADVERSARY, "content": UTTERANCES[i % len(UTTERANCES)]},
        ]
        for i in range(n)
    ]


def defender_prompts(
    tokenizer: Any, transcripts: Sequence[Sequence[dict[str, str]]], config: Any = None
) -> list[list[int]]:
    """The prompt ids the env's defender reads for each transcript (as `ChatLM.encode` makes
    them with the env's defaults: its completion format, header and system prompt)."""
    from redteam_gym.envs import EnvConfig
    from redteam_gym.transcript import thread_view

    config = config or EnvConfig()
    thread = config.thread_format()
    if thread is None:
        raise ValueError("defender_prompts needs the completion format")
    rows = []
    for transcript in transcripts:
        messages = thread_view(transcript)
        if config.defender_system_prompt:
            messages = [{"role": "system", "content": config.defender_system_prompt}, *messages]
        rows.append(thread.encode(tokenizer, messages, prompt=True)[0][-MAX_CONTEXT_TOKENS:])
    return rows


MAX_CONTEXT_TOKENS = 2048
"""`ChatLM`'s default `max_context_tokens`: a longer prompt keeps its last tokens."""


# ----- our side ------------------------------------------------------------------------------


def quantize_int8(model: Any, *, lm_head: bool = True) -> Any:
    """`model` with its linear layers dynamically quantised to int8, in place (int8 weights
    with a scale per output channel, activations quantised per call; fbgemm/x86 kernels). With
    `lm_head=False` the output layer stays in fp32. Silences the deprecation warnings of the
    quantising call alone."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    # per output channel, one weight scale each (the GGUF's Q4_1 has one per 32 weights)
    qconfig = per_channel_dynamic_qconfig
    spec: Any = {torch.nn.Linear: qconfig} if lm_head else {"model.layers": qconfig}
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated for torchao (see the module doc for why not it)
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quant")
        quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    return model


def load_defender(mode: str, name: str | None = None) -> tuple[Any, Any]:
    """The defender model (a private, frozen copy: quantising never touches the shared one) and
    its tokenizer, in `mode` (one of `MODES`)."""
    from redteam_gym.models import SMOLLM2, load_causal_lm

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "int4":  # the env's own path (a shared frozen copy; nothing else in the process)
        return load_causal_lm(name or SMOLLM2, device="cpu", weights="int4")
    if mode == "int4-bf16":
        import copy

        import torch

        model, tokenizer = load_causal_lm(name or SMOLLM2, device="cpu", weights="int4")
        # floating tensors only: the 4-bit codes stay as they are
        whole_bf16: Any = copy.deepcopy(model)
        return whole_bf16.to(torch.bfloat16), tokenizer
    dtype = "bfloat16" if mode == "bf16" else "float32"
    model, tokenizer = load_causal_lm(name or SMOLLM2, device="cpu", dtype=dtype, frozen=False)
    model.eval().requires_grad_(False)
    if mode.startswith("int8"):
        quantize_int8(model, lm_head=mode == "int8")
    return model, tokenizer


def generate_forced(
    model: Any, prompts: Sequence[Sequence[int]], new_tokens: int, *, pad_token_id: int
) -> tuple[float, float, list[list[int]]]:
    """Greedy replies of exactly `new_tokens` ids to `prompts`, in one batch through
    `redteam_gym.models.sample` with no stop token: the seconds, the prefill's seconds (the
    first forward pass) and the replies."""
    from redteam_gym.models import SamplingConfig, sample

    calls: list[float] = []

    def before(*_: Any) -> None:
        calls.append(-time.perf_counter())

    def after(*_: Any) -> None:
        calls[-1] += time.perf_counter()

    hooks = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
    try:
        start = time.perf_counter()
        samples = sample(
            model,
            prompts,
            SamplingConfig(max_new_tokens=new_tokens, temperature=0.0),
            eos_token_ids=[],
            pad_token_id=pad_token_id,
        )
        seconds = time.perf_counter() - start
    finally:
        for hook in hooks:
            hook.remove()
    return seconds, calls[0], samples.tokens


def forced_passes(
    model: Any,
    prompts: Sequence[Sequence[int]],
    new_tokens: int,
    batch_sizes: Sequence[int],
    *,
    pad_token_id: int,
    repeats: int = 1,
    warmup: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Per batch size, `repeats` timed passes (after `warmup` untimed ones) over `prompts` in
    chunks of that size, in the worker's JSON form (`batches` of a result line)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for size in batch_sizes:
        runs = []
        for r in range(warmup + repeats):
            seconds = prefill = 0.0
            tokens: list[list[int]] = []
            for c in range(0, len(prompts), size):
                s, p, replies = generate_forced(
                    model, prompts[c : c + size], new_tokens, pad_token_id=pad_token_id
                )
                seconds, prefill, tokens = seconds + s, prefill + p, tokens + replies
            if r >= warmup:
                runs.append({"seconds": seconds, "prefill_seconds": prefill, "tokens": tokens})
        out[str(size)] = runs
    return out


def greedy_replies(
    model: Any,
    tokenizer: Any,
    transcripts: Sequence[Sequence[dict[str, str]]],
    *,
    batch_size: int = 8,
    config: Any = None,
) -> list[str]:
    """The env's greedy defender replies to `transcripts` (its completion format, stop rule,
    `defender_min_new_tokens` and `defender_max_new_tokens`), in batches of `batch_size`."""
    from redteam_gym.envs import EnvConfig
    from redteam_gym.models import ChatLM, SamplingConfig
    from redteam_gym.transcript import thread_view

    c = config or EnvConfig()
    sampling = SamplingConfig(
        max_new_tokens=c.defender_max_new_tokens,
        temperature=0.0,
        min_new_tokens=min(c.defender_min_new_tokens, c.defender_max_new_tokens - 1),
    )
    chat = ChatLM(
        model,
        tokenizer,
        sampling=sampling,
        system_prompt=c.defender_system_prompt,
        thread=c.thread_format(),
        reuse_cache=False,
    )
    replies: list[str] = []
    for start in range(0, len(transcripts), batch_size):
        replies += chat.respond([thread_view(t) for t in transcripts[start : start + batch_size]])
    return replies


def judge_passes(
    judge: Any, chats: Sequence[Sequence[dict[str, str]]], batch_sizes: Sequence[int], repeats: int
) -> dict[str, list[float]]:
    """Per batch size, the judge's texts/s over `chats` in calls of that many, per repeat
    (after one untimed call)."""
    judge.score(chats[:1])
    out: dict[str, list[float]] = {}
    for size in batch_sizes:
        out[str(size)] = []
        for _ in range(repeats):
            start = time.perf_counter()
            for c in range(0, len(chats), size):
                judge.score(chats[c : c + size])
            out[str(size)].append(len(chats) / (time.perf_counter() - start))
    return out


# ----- the parent ----------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    p.add_argument(
        "--modes",
        default="fp32,bf16,int8",
        help=f"our modes, comma-separated, fp32 among them (known: {', '.join(MODES)})",
    )
    p.add_argument("--batch-sizes", type=_int_list, default=[1, 8], help="(default 1,8)")
    p.add_argument("--conversations", type=int, default=8, help="timed conversations (default 8)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens per reply (default 64)")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the sides (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="timed passes per process (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per side")
    p.add_argument(
        "--fidelity",
        type=int,
        default=0,
        metavar="N",
        help="also compare each mode's greedy env replies with fp32's on N more conversations",
    )
    p.add_argument("--judge", default="semantic", help="judge timed on the replies (semantic)")
    p.add_argument("--llamacpp-venv", type=Path, default=Path(".venv-llamacpp"), help="its venv")
    p.add_argument("--skip-llamacpp", action="store_true", help="time our modes only")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/perf-frozen-inference.md"),
        help="report",
    )
    p.add_argument("--child", choices=["ours", "judge"], help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--with-fidelity", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        p.error(f"--modes: unknown {unknown}; known: {', '.join(MODES)}")
    if BASELINE not in args.modes:
        p.error(f"--modes must include {BASELINE} (the baseline of every comparison)")
    if len(set(args.modes)) != len(args.modes):
        p.error(f"--modes names a mode twice: {args.modes}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error(f"--batch-sizes must be integers >= 1, got {args.batch_sizes}")
    if args.new_tokens < 2:
        p.error(
            f"--new-tokens must be >= 2 (a prefill token and a decoded one), got {args.new_tokens}"
        )
    if min(args.conversations, args.rounds, args.repeats, args.threads) < 1:
        p.error("--conversations, --rounds, --repeats and --threads must be >= 1")
    uneven = [b for b in args.batch_sizes if args.conversations % b]
    if uneven:
        p.error(
            f"--conversations {args.conversations} must be a multiple of every batch size, so "
            f"that every batch is full (not of {uneven})"
        )
    if args.warmup < 0 or args.fidelity < 0:
        p.error("--warmup and --fidelity must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(
        MODULE,
        argv,
        args,
        lambda _: measure(args),
        lambda command, info, result: render_report(args, command, info, result),
        child=(lambda: _child(args)) if args.child else None,
    )


def _child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    job = json.loads(Path(args.job).read_text(encoding="utf-8"))
    torch.set_num_threads(job["threads"])
    if args.child == "judge":
        from redteam_gym.judges import make_judge

        judge = make_judge(job["judge"], device="cpu")
        return {
            "texts_per_s": judge_passes(judge, job["chats"], job["batch_sizes"], job["repeats"])
        }
    import transformers

    model, tokenizer = load_defender(args.mode)
    result: dict[str, Any] = {
        "batches": forced_passes(
            model,
            job["prompts"],
            job["new_tokens"],
            job["batch_sizes"],
            pad_token_id=tokenizer.pad_token_id,
            repeats=job["repeats"],
            warmup=job["warmup"],
        ),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    if args.with_fidelity and job["fidelity"]:
        result["replies"] = greedy_replies(model, tokenizer, job["fidelity"])
    return result


def measure(args: argparse.Namespace) -> Measurement:
    """Alternating rounds of our modes and llama.cpp, then the judge, each in a subprocess."""
    from redteam_gym.envs import EnvConfig
    from redteam_gym.models import SMOLLM2, embedded_gguf_path, load_tokenizer
    from redteam_gym.transcript import DEFENDER, judge_view

    tokenizer = load_tokenizer(SMOLLM2)
    transcripts = conversations(args.conversations)
    prompts = defender_prompts(tokenizer, transcripts)
    job = {
        "gguf": str(embedded_gguf_path()),
        "prompts": prompts,
        "new_tokens": args.new_tokens,
        "batch_sizes": args.batch_sizes,
        "threads": args.threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        # the fidelity conversations follow the timed ones among the openers
        "fidelity": conversations(args.fidelity, start=args.conversations) if args.fidelity else [],
    }
    llama_python = None if args.skip_llamacpp else ensure_llamacpp_venv(args.llamacpp_venv)
    sides = {m: Side(f"ours {m}") for m in args.modes}
    if llama_python is not None:
        sides[LLAMA_CPP] = Side(LLAMA_CPP)
    judge = None
    with tempfile.TemporaryDirectory() as tmp:
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        me = [sys.executable, "-m", MODULE, "--job", str(job_path)]
        for r in range(args.rounds):
            for name, side in sides.items():
                print(f"round {r + 1}: {side.name} ...", flush=True)
                if name == LLAMA_CPP:
                    result = run_child([str(llama_python), str(WORKER), str(job_path)], LLAMA_CPP)
                    if result.get("n_vocab", len(tokenizer)) != len(tokenizer):
                        raise RuntimeError(
                            f"the GGUF's vocabulary ({result['n_vocab']} ids) is not our "
                            f"tokenizer's ({len(tokenizer)}): the prompts' ids would differ"
                        )
                else:
                    extra = ["--with-fidelity"] if r == 0 and args.fidelity else []
                    result = run_child([*me, "--child", "ours", "--mode", name, *extra], side.name)
                side.add(result)
                for batch in sorted(side.passes):
                    speed = rates(side.passes[batch], batch).decode_tokens_per_s
                    print(f"    batch {batch}: {speed:.1f} decode tokens/s", flush=True)
        check_equal_work(list(sides.values()), args.conversations, args.new_tokens)
        # the judge reads the fp32 replies as the env would hand them to it
        thread = EnvConfig().thread_format()
        assert thread is not None
        baseline = sides[BASELINE].passes[min(args.batch_sizes)][0].tokens
        texts = [thread.cut(t) for t in tokenizer.batch_decode(baseline, skip_special_tokens=True)]
        chats = [
            judge_view([*t, {"role": DEFENDER, "content": reply}])
            for t, reply in zip(transcripts, texts, strict=True)
        ]
        judge_job = Path(tmp) / "judge.json"
        judge_job.write_text(
            json.dumps(
                {
                    "judge": args.judge,
                    "chats": chats,
                    "batch_sizes": args.batch_sizes,
                    "repeats": args.rounds * args.repeats,
                    "threads": args.threads,
                }
            ),
            encoding="utf-8",
        )
        print(f"judge {args.judge} ...", flush=True)
        judge = run_child(
            [sys.executable, "-m", MODULE, "--job", str(judge_job), "--child", "judge"], "judge"
        )["texts_per_s"]
    return Measurement(
        sides=list(sides.values()),
        prompt_lengths=[len(p) for p in prompts],
        example_prompt=str(tokenizer.decode(prompts[0])),
        judge=judge,
        judge_texts=len(chats),
    )


if __name__ == "__main__":
    raise SystemExit(main())
