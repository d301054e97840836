"""Conversation openers (prompts) for red-teaming dialogues, read from ConvoKit corpora.

``load_openers("builtin")`` gives the corpus shipped with the package; any ConvoKit
corpus directory, or the name of one already downloaded, works the same way.
"""

from redteam_gym.prompts.corpus import (
    BUILTIN,
    BUILTIN_DIR,
    EVAL_FRACTION,
    SPLITS,
    Opener,
    available_corpora,
    clear_cache,
    hash_split,
    load_openers,
    resolve_corpus,
)

__all__ = [
    "BUILTIN",
    "BUILTIN_DIR",
    "EVAL_FRACTION",
    "SPLITS",
    "Opener",
    "available_corpora",
    "clear_cache",
    "hash_split",
    "load_openers",
    "resolve_corpus",
]
