"""astra-rl's side of `benchmarks.perf.astra_rl`: multi-turn rollouts with `ASTEvaluator`.

Runs in the benchmark's own virtual environment (astra-rl from its source), so it imports
nothing of this project. Reads a JSON job (the model directory, the openers, the turns, each
role's sampling, threads, warm-up and repeats) and prints one line `RESULT {json}`.

The rollouts go the way astra-rl's evaluation quick start runs them: `HFASTSystem` (the HF
adaptor) with the same model as tester (adversary) and target (defender) and no separate
baseline, `ASTSampler(system, openers, tree_width=1, tree_depth=turns)`, and
`ASTEvaluator(sampler, seeds=openers).evaluate()`, which rolls out one conversation per opener,
one after the other. Two of astra-rl's own extension points are used, as a user would:

- the scorer: a `Scorer` subclass that scores every text 0 (astra-rl's default,
  `DetoxifyScorer`, downloads its weights, which cannot be fetched here);
- the system: `HFASTSystem`'s rollout hard-codes 32 new tokens at top-k 50, top-p 0.9 and
  T 1 for both roles, so a subclass overrides the two public rollout methods of `System`
  with one `generate` call each, at the job's length and sampling per role. The job asks for
  every reply at full length (`min_new_tokens = max_new_tokens`: the EOS is never sampled),
  so both sides of the benchmark generate the same number of tokens.

Result: `passes` (per timed pass: seconds, dialogues and the token counts), `versions`,
`batching` (what astra-rl batches) and the texts of the last pass's first conversation.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

JOB_KEYS = ("model_dir", "openers", "turns", "adversary", "defender", "threads", "repeats")
"""What a job must hold (`warmup` and `seed` are optional: 1 and 0)."""
SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k")
COUNTS = (
    "adversary_tokens",
    "defender_tokens",
    "adversary_calls",
    "defender_calls",
    "adversary_context_tokens",
    "defender_context_tokens",
    "adversary_prefilled_tokens",
    "defender_prefilled_tokens",
    "reward_forward_tokens",
)
"""What each pass counts (the parent's `Pass` fields of the same names)."""


def read_job(path: str) -> dict[str, Any]:
    """The job at `path`, checked: a missing or ill-typed entry raises `ValueError` naming it."""
    with open(path, encoding="utf-8") as f:
        job = json.load(f)
    if not isinstance(job, dict):
        raise ValueError(f"job {path} must be a JSON object, got {type(job).__name__}")
    missing = [k for k in JOB_KEYS if k not in job]
    if missing:
        raise ValueError(f"job {path} is missing {missing}")
    openers = job["openers"]
    if (
        not isinstance(openers, list)
        or not openers
        or not all(isinstance(o, str) and o.strip() for o in openers)
    ):
        raise ValueError("job 'openers' must be a non-empty list of non-empty strings")
    for key in ("turns", "threads", "repeats"):
        if isinstance(job[key], bool) or not isinstance(job[key], int) or job[key] < 1:
            raise ValueError(f"job {key!r} must be an int >= 1, got {job[key]!r}")
    job.setdefault("warmup", 1)
    job.setdefault("seed", 0)
    if not isinstance(job["warmup"], int) or job["warmup"] < 0:
        raise ValueError(f"job 'warmup' must be an int >= 0, got {job['warmup']!r}")
    for role in ("adversary", "defender"):
        sampling = job[role]
        if not isinstance(sampling, dict) or sorted(sampling) != sorted(SAMPLING_KEYS):
            raise ValueError(f"job {role!r} must hold exactly {list(SAMPLING_KEYS)}")
        if not isinstance(sampling["max_new_tokens"], int) or sampling["max_new_tokens"] < 1:
            raise ValueError(f"job {role!r} max_new_tokens must be an int >= 1")
    return job


def build(job: dict[str, Any], counts: dict[str, int]) -> Any:
    """astra-rl's evaluator over the job's openers, its system counting into `counts`."""
    from astra_rl import ASTEvaluator, ASTSampler, Scorer
    from astra_rl.ext.transformers.hf_ast_system import HFASTSystem

    class ConstantScorer(Scorer[str, str]):
        """Every text scores 0: the scorer costs nothing on this side (ours: `profanity`)."""

        def score(self, x):
            return [0.0] * len(x)

    class SizedHFASTSystem(HFASTSystem):
        """`HFASTSystem` with the job's reply length and sampling per role."""

        def rollout_prompt_with_tester(self, x):
            return self._generate(self.tester, self.tester_tokenizer, x, "adversary")

        def rollout_prompt_with_target(self, x):
            return self._generate(self.target, self.target_tokenizer, x, "defender")

        def get_target_logprobs(self, context, continuation):
            # `ASTSystem.reward` calls this once per turn (its likelihood term): one forward
            # of the target over context + probe; the result has one column per id but one
            logprobs = super().get_target_logprobs(context, continuation)
            counts["reward_forward_tokens"] += logprobs.shape[0] * (logprobs.shape[1] + 1)
            return logprobs

        def _generate(self, model, tokenizer, prompts, role):
            # left padded, as astra-rl's own rollout tokenizes its prompts
            batch = tokenizer(prompts, padding=True, return_tensors="pt", padding_side="left")
            batch = batch.to(self.device)
            s = job[role]
            output = model.generate(  # under no_grad, as `generate` always runs
                **batch,
                pad_token_id=tokenizer.eos_token_id,
                max_new_tokens=s["max_new_tokens"],
                min_new_tokens=s["max_new_tokens"],  # full length: equal work
                do_sample=True,
                temperature=s["temperature"],
                top_p=s["top_p"],
                top_k=s["top_k"],
            )
            new = output[:, batch["input_ids"].shape[1] :]
            counts[f"{role}_tokens"] += new.numel()
            counts[f"{role}_calls"] += 1
            context = int(batch["attention_mask"].sum())
            counts[f"{role}_context_tokens"] += context
            counts[f"{role}_prefilled_tokens"] += context  # no KV cache across calls
            return tokenizer.batch_decode(new, skip_special_tokens=True)

    system = SizedHFASTSystem(
        tester_model_id=job["model_dir"],
        target_model_id=job["model_dir"],
        baseline_model_id=None,
        scorer=ConstantScorer(),
        device="cpu",
    )
    openers = list(job["openers"])
    sampler = ASTSampler(system, openers, tree_width=1, tree_depth=job["turns"])
    return ASTEvaluator(sampler, seeds=openers)


def run(job: dict[str, Any]) -> dict[str, Any]:
    import importlib.metadata
    import platform

    counts = dict.fromkeys(COUNTS, 0)
    evaluator = build(job, counts)  # astra-rl first: the threads are set before any compute
    import torch
    import transformers

    torch.set_num_threads(job["threads"])
    n = len(job["openers"])
    passes: list[dict[str, Any]] = []
    metrics: Any = None
    for r in range(job["warmup"] + job["repeats"]):
        torch.manual_seed(job["seed"] + r)
        counts.update(dict.fromkeys(COUNTS, 0))
        start = time.perf_counter()
        metrics = evaluator.evaluate(n_rollouts=n, progress=False)
        seconds = time.perf_counter() - start
        if r >= job["warmup"]:
            passes.append({"seconds": seconds, "dialogues": n, **counts})
    first = metrics["details"][0]["per_turn"] if metrics else []
    return {
        "passes": {"1": passes},
        "batching": (
            "one conversation at a time: ASTEvaluator.evaluate rolls out each seed in turn, "
            "and each generate call holds one prompt (tree_width=1)"
        ),
        "versions": {
            "astra-rl": importlib.metadata.version("astra-rl"),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "example": [{"adversary": t["probe"], "defender": t["response"]} for t in first],
    }


def main(job_path: str) -> int:
    result = run(read_job(job_path))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    # Python puts this script's folder first on the path, and there `astra_rl.py` (the
    # benchmark) would shadow the `astra_rl` package
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    raise SystemExit(main(sys.argv[1]))
