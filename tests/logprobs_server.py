"""A minimal OpenAI-compatible `/v1/completions` server WITH logprobs, for the served judge's
tests: `transformers serve` 5.24 ignores `logprobs`, and vLLM does not run on this CPU.

It runs a real model (one forward pass per request) and answers in the OpenAI legacy
completions shape: `choices[0].logprobs.top_logprobs[0]` maps the first token's `logprobs`
most likely continuations (decoded token text) to their log-probabilities; with
`max_tokens > 1` it decodes greedily. Not a product: it serves one model, one prompt a request.

    python tests/logprobs_server.py MODEL_DIR PORT
"""

from __future__ import annotations

import sys
import time

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from transformers import AutoModelForCausalLM, AutoTokenizer


def build_app(model_dir: str) -> FastAPI:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/completions")
    def completions(body: dict) -> dict:
        if body.get("model") != model_dir:
            raise HTTPException(404, f"model {body.get('model')!r} not found")
        ids = tokenizer(body["prompt"], return_tensors="pt").input_ids
        top_k = int(body.get("logprobs") or 0)
        out_ids: list[int] = []
        top: list[dict[str, float]] = []
        with torch.inference_mode():
            for _ in range(int(body.get("max_tokens", 16))):
                logprobs = model(ids).logits[0, -1].float().log_softmax(-1)
                if top_k and not top:
                    values, indices = logprobs.topk(min(top_k, logprobs.numel()))
                    first: dict[str, float] = {}
                    for v, i in zip(values.tolist(), indices.tolist(), strict=True):
                        first.setdefault(
                            tokenizer.decode([i]), v
                        )  # two ids, one text: the likelier
                    top.append(first)
                nxt = int(logprobs.argmax())
                if nxt == tokenizer.eos_token_id:
                    break
                out_ids.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        choice: dict = {"index": 0, "text": tokenizer.decode(out_ids), "finish_reason": "length"}
        if top_k:
            choice["logprobs"] = {"tokens": [], "token_logprobs": [], "top_logprobs": top}
        return {
            "id": "cmpl-test",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model_dir,
            "choices": [choice],
        }

    return app


if __name__ == "__main__":
    torch.set_num_threads(1)
    uvicorn.run(
        build_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning"
    )
