"""TRL's side of `benchmarks.perf.ppo_vs_trl`: PPO updates of `trl.experimental.ppo.PPOTrainer`.

Runs in the benchmark's own virtual environment (TRL 1.12.0), so it imports nothing of this
project. Reads a JSON job (model directory, prompt token ids, settings), trains
`warmup + updates` PPO updates and prints one line `RESULT {json}` with the seconds of each
update, measured from one `on_step_end` to the next.
"""

from __future__ import annotations

import itertools
import json
import resource
import sys
import tempfile
import time


def main(job_path: str) -> int:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    model_dir, batch = job["model_dir"], job["batch_size"]
    total = job["warmup"] + job["updates"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def causal():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    def scalar():
        # TRL's value and reward models: the same network with a one-output score head
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=1, dtype=torch.float32
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        return model

    prompts = job["prompts"][: batch * total]
    dataset = Dataset.from_dict({"input_ids": prompts})
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        config = PPOConfig(
            output_dir=out,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            local_rollout_forward_batch_size=batch,
            num_mini_batches=job["num_minibatches"],
            num_ppo_epochs=job["ppo_epochs"],
            total_episodes=batch * total,
            response_length=job["response_length"],
            stop_token="eos",
            temperature=1.0,
            learning_rate=job["learning_rate"],
            kl_coef=job["kl_coef"],
            num_sample_generations=0,
            report_to="none",
            save_strategy="no",
            logging_steps=10**6,
            use_cpu=True,
            bf16=False,
            seed=job["seed"],
            dataloader_num_workers=0,
        )
        trainer = PPOTrainer(
            args=config,
            processing_class=tokenizer,
            model=causal(),
            ref_model=causal(),
            reward_model=scalar(),
            value_model=scalar(),
            train_dataset=dataset,
            callbacks=[Stamp()],
        )
        trainer.train()
    seconds = [b - a for a, b in itertools.pairwise(stamps)]
    result = {
        "seconds": seconds[job["warmup"] :],
        "warmup_seconds": seconds[: job["warmup"]],
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": {
            "trl": __import__("trl").__version__,
            "transformers": __import__("transformers").__version__,
            "torch": torch.__version__,
        },
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
