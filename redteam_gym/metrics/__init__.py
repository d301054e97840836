"""Evaluation metrics for red teaming: pure functions of judge scores, texts and returns.

========================  ==========================================================
``attack``                ASR (+ Wilson interval), ASR by turn, turns to first unsafe,
                          implicit toxicity, mean toxicity (seed paper, section 5.1)
``diversity``             Dist-n, SelfBLEU, sentence-embedding diversity
``risk``                  CVaR / VaR of returns, reward by prompt-score quantile (RA-RLHF)
``perplexity``            log perplexity of utterances given their context under a causal LM
``types``                 the per-conversation score record and input conventions
========================  ==========================================================

Conventions: unsafe iff ``p_unsafe >= threshold`` (0.5); undefined ratios (empty
denominators) are ``nan``; bad arguments raise ``ValueError``. See ``metrics.types``.
"""

from redteam_gym.metrics.attack import (
    AsrByTurn,
    asr_by_turn,
    attack_success_rate,
    implicit_toxicity,
    mean_toxicity,
    mean_turns_to_first_unsafe,
    newcombe_interval,
    success_mask,
    turns_to_first_unsafe,
    wilson_interval,
)
from redteam_gym.metrics.diversity import (
    distinct_n,
    embedding_diversity,
    load_minilm,
    mean_pairwise_cosine_distance,
    self_bleu,
    self_bleu_n,
    sentence_bleu,
    word_tokenize,
)
from redteam_gym.metrics.perplexity import log_perplexity, span_log_perplexity
from redteam_gym.metrics.risk import (
    QuantileCurve,
    cvar,
    reward_by_quantile,
    tail_count,
    upper_cvar,
    value_at_risk,
)
from redteam_gym.metrics.types import (
    DEFAULT_THRESHOLD,
    ConversationScores,
    RaggedFloats,
    split_scores,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "AsrByTurn",
    "ConversationScores",
    "QuantileCurve",
    "RaggedFloats",
    "asr_by_turn",
    "attack_success_rate",
    "cvar",
    "distinct_n",
    "embedding_diversity",
    "implicit_toxicity",
    "load_minilm",
    "log_perplexity",
    "mean_pairwise_cosine_distance",
    "mean_toxicity",
    "mean_turns_to_first_unsafe",
    "newcombe_interval",
    "reward_by_quantile",
    "self_bleu",
    "self_bleu_n",
    "sentence_bleu",
    "span_log_perplexity",
    "split_scores",
    "success_mask",
    "tail_count",
    "turns_to_first_unsafe",
    "upper_cvar",
    "value_at_risk",
    "wilson_interval",
    "word_tokenize",
]
