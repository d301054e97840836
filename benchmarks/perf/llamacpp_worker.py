"""llama.cpp's side of `benchmarks.perf.frozen_inference`: greedy replies of fixed length.

Runs in the benchmark's own virtual environment (`llama-cpp-python`, pinned), so it imports
nothing of this project. Reads a JSON job (the GGUF's path, the prompts as token ids, the
reply length, the batch sizes, threads, repeats), and prints one line `RESULT {json}`.

The work is the one our side does: for each batch size B, the conversations in chunks of B,
each chunk one prefill (`llama_decode` of all B prompts, each its own sequence) and then one
`llama_decode` of B tokens per step, the way llama.cpp's `batched` example decodes parallel
sequences. Decoding is greedy (argmax of the logits) and nothing stops a reply: every reply
is exactly `new_tokens` tokens long. The prompts are our tokenizer's ids; the GGUF's vocabulary
is the one our tokenizer was converted from, so both sides read the same ids.

Result: per batch size, one entry per timed repeat with `seconds` (the whole pass over the
conversations), `prefill_seconds` (its prefill calls) and `tokens` (per conversation, the
generated ids), after `warmup` untimed passes; `versions`, `n_vocab` and `errors` (a batch size
that failed, with llama.cpp's return code: the benchmark then reports that size as missing).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

JOB_KEYS = ("gguf", "prompts", "new_tokens", "batch_sizes", "threads", "repeats", "warmup")
"""What a job must hold."""


def read_job(path: str) -> dict[str, Any]:
    """The job at `path`, checked: a missing or ill-typed entry raises `ValueError` naming it."""
    with open(path, encoding="utf-8") as f:
        job = json.load(f)
    if not isinstance(job, dict):
        raise ValueError(f"job {path} must be a JSON object, got {type(job).__name__}")
    missing = [k for k in JOB_KEYS if k not in job]
    if missing:
        raise ValueError(f"job {path} is missing {missing}")
    prompts = job["prompts"]
    if (
        not isinstance(prompts, list)
        or not prompts
        or not all(
            isinstance(p, list) and p and all(isinstance(i, int) for i in p) for p in prompts
        )
    ):
        raise ValueError("job 'prompts' must be a non-empty list of non-empty lists of token ids")
    for key in ("new_tokens", "threads", "repeats"):
        if not isinstance(job[key], int) or job[key] < 1:
            raise ValueError(f"job {key!r} must be an int >= 1, got {job[key]!r}")
    if not isinstance(job["warmup"], int) or job["warmup"] < 0:
        raise ValueError(f"job 'warmup' must be an int >= 0, got {job['warmup']!r}")
    sizes = job["batch_sizes"]
    if not isinstance(sizes, list) or not sizes or not all(isinstance(b, int) for b in sizes):
        raise ValueError(f"job 'batch_sizes' must be a non-empty list of ints, got {sizes!r}")
    for b in sizes:
        if b < 1 or len(prompts) % b:
            raise ValueError(
                f"job batch size {b} must be >= 1 and divide the {len(prompts)} prompts"
            )
    return job


class Engine:
    """A llama.cpp context for `batch` parallel sequences on one loaded model."""

    def __init__(self, llama_cpp: Any, model: Any, batch: int, context: int, threads: int):
        self.lib = llama_cpp
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = batch
        params.n_ctx = batch * context
        params.n_batch = max(512, batch * context)
        params.n_threads = threads
        params.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            raise RuntimeError(f"llama_init_from_model failed for {batch} sequences")
        self.batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)

    def _decode(self, items: Sequence[tuple[int, int, int, bool]]) -> None:
        """One `llama_decode` of `(token, position, sequence, wants_logits)` items."""
        b = self.batch
        for k, (token, pos, seq, logits) in enumerate(items):
            b.token[k] = token
            b.pos[k] = pos
            b.n_seq_id[k] = 1
            b.seq_id[k][0] = seq
            b.logits[k] = 1 if logits else 0
        b.n_tokens = len(items)
        code = self.lib.llama_decode(self.ctx, b)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")

    def _argmax(self, index: int) -> int:
        import numpy as np

        logits = self.lib.llama_get_logits_ith(self.ctx, index)
        return int(np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).argmax())

    def generate(self, prompts: Sequence[Sequence[int]], new_tokens: int) -> tuple[float, list]:
        """Greedy replies of exactly `new_tokens` ids to `prompts` (one sequence each):
        the prefill's seconds and the replies."""
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        items, outputs = [], []
        for s, prompt in enumerate(prompts):
            for p, token in enumerate(prompt):
                last = p == len(prompt) - 1
                items.append((token, p, s, last))
                if last:
                    outputs.append(len(items) - 1)
        start = time.perf_counter()
        self._decode(items)
        prefill = time.perf_counter() - start
        replies: list[list[int]] = [[self._argmax(i)] for i in outputs]
        for step in range(1, new_tokens):
            self._decode(
                [
                    (r[-1], len(p) + step - 1, s, True)
                    for s, (p, r) in enumerate(zip(prompts, replies, strict=True))
                ]
            )
            for s, r in enumerate(replies):
                r.append(self._argmax(s))
        return prefill, replies


def run(job: dict[str, Any]) -> dict[str, Any]:
    import logging

    import llama_cpp

    # what `Llama(verbose=False)` does: llama.cpp's log lines (its debug lines at every graph
    # build among them) reach llama-cpp-python's logger, which drops them below ERROR
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(
        job["gguf"].encode(), llama_cpp.llama_model_default_params()
    )
    if not model:
        raise RuntimeError(f"llama.cpp could not load {job['gguf']}")
    prompts, new_tokens = job["prompts"], job["new_tokens"]
    # each sequence's share of the context, in llama.cpp's own granularity (256), so that the
    # context of B sequences divides evenly among them
    context = -(-(max(len(p) for p in prompts) + new_tokens + 1) // 256) * 256
    result: dict[str, Any] = {"batches": {}, "errors": {}}
    for size in job["batch_sizes"]:
        engine = None
        runs = []
        try:
            engine = Engine(llama_cpp, model, size, context, job["threads"])
            result["n_vocab"] = engine.n_vocab
            for r in range(job["warmup"] + job["repeats"]):
                seconds = prefill = 0.0
                tokens: list[list[int]] = []
                for c in range(0, len(prompts), size):
                    start = time.perf_counter()
                    p, replies = engine.generate(prompts[c : c + size], new_tokens)
                    seconds += time.perf_counter() - start
                    prefill += p
                    tokens += replies
                if r >= job["warmup"]:
                    runs.append({"seconds": seconds, "prefill_seconds": prefill, "tokens": tokens})
        except RuntimeError as exc:
            result["errors"][str(size)] = str(exc)
        finally:
            if engine is not None:
                engine.close()
        if runs:
            result["batches"][str(size)] = runs
    llama_cpp.llama_model_free(model)
    result["versions"] = {"llama-cpp-python": llama_cpp.__version__}
    return result


def main(job_path: str) -> int:
    result = run(read_job(job_path))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
