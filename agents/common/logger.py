"""Metrics to TensorBoard (always), a JSON-lines file, and optionally Weights & Biases."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def trim_metrics(path: Path, last_update: int) -> None:
    """Keep the lines of `metrics.jsonl` up to update `last_update`, the one a run resumes
    from: later ones were logged after its checkpoint and are logged again when the resumed
    run redoes them. A torn last line (a kill mid-write) is dropped too, with a notice."""
    if not path.is_file():
        return
    data = path.read_bytes()
    kept, dropped, torn = [], 0, False
    lines = data.split(b"\n")
    for k, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            if k == len(lines) - 1:  # no newline after it: cut short
                raise ValueError("unterminated")
            update = json.loads(raw)["update"]
        except (ValueError, KeyError, TypeError) as exc:
            if any(line.strip() for line in lines[k + 1 :]):
                raise ValueError(f"{path}: line {k + 1} is not a metrics record ({exc})") from exc
            torn = True
            break
        if update <= last_update:
            kept.append(raw + b"\n")
        else:
            dropped += 1
    if not torn and not dropped:
        return
    from redteam_gym.files import atomic_write

    atomic_write(path, b"".join(kept))
    if torn:
        logger.warning("%s: dropped a torn last line (cut short by an interrupted write)", path)
    if dropped:
        logger.warning(
            "%s: dropped %d line(s) logged after update %d, the checkpoint's; they are redone",
            path,
            dropped,
            last_update,
        )


class Logger:
    """Writes each update's metrics under `run_dir`: `tb/` for TensorBoard and
    `metrics.jsonl` (append-only, flushed per line, so nothing logged is lost on a crash).

    `metrics.jsonl` is first cut back to the updates up to `resume_step` (`trim_metrics`), so
    a resumed run's file holds each update once.
    """

    def __init__(self, run_dir: Path, config: Any, *, resume_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step or None)
        trim_metrics(run_dir / "metrics.jsonl", resume_step)
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
