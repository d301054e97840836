"""Metrics to TensorBoard (always), a JSON-lines file, and optionally Weights & Biases."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class Logger:
    """Writes each update's metrics under `run_dir`: `tb/` for TensorBoard and
    `metrics.jsonl` (append-only, flushed per line, so nothing logged is lost on a crash)."""

    def __init__(self, run_dir: Path, config: Any, *, resume_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step or None)
        self.jsonl = (run_dir / "metrics.jsonl").open("a", encoding="utf-8")
        self.wandb = None
        if getattr(config, "wandb", False):
            try:
                import wandb
            except ImportError as exc:
                raise RuntimeError("wandb=True needs `pip install wandb`") from exc
            self.wandb = wandb.init(
                project="redteam-gym", config=config.to_dict(), dir=str(run_dir), resume="allow"
            )

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.jsonl.write(json.dumps({"update": step, **metrics}) + "\n")
        self.jsonl.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        self.writer.close()
        self.jsonl.close()
        if self.wandb is not None:
            self.wandb.finish()
