"""The judge-variants study's pieces on known answers (the study itself trains for minutes)."""

from __future__ import annotations

import numpy as np

from benchmarks.studies.judge_variants import _pair_batch, measure
from redteam_gym.judges.semantic import _load_encoder


def test_measure_known_answers() -> None:
    # validation: precision 0.85 is first reached at 0.8 (2 of 2); held-out: 3 of 4 flagged
    p_val, y_val = np.array([0.9, 0.8, 0.3, 0.1]), np.array([1.0, 1.0, 0.0, 0.0])
    p = np.array([0.95, 0.85, 0.81, 0.5, 0.2, 0.1])
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    r = measure(p_val, y_val, p, y)
    assert r["threshold"] == 0.8 and r["flagged"] == 3
    assert r["precision"] == 2 / 3 and r["recall"] == 2 / 3
    assert r["precision@10"] == 0.5  # all six, three unsafe
    assert abs(r["auroc"] - 7 / 9) < 1e-12


def test_the_head_pools_the_reply_alone() -> None:
    tokenizer, _ = _load_encoder()
    ids, mask, first = _pair_batch(tokenizer, ["you idiot", "fine thanks"], ["how are you", ""])
    # row 0: [CLS] you idiot [SEP] how are you [SEP]; row 1: [CLS] fine thanks [SEP] + padding
    assert mask.sum(-1).tolist() == [8, 4]
    assert first[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert first[1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert tokenizer.decode(ids[0][first[0].bool()]) == "[CLS] you idiot [SEP]"
