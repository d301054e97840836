"""`python -m redteam_gym.judges.retrain`: retrain the semantic judge from the corpus.

A module of its own, which the package does not import, so that running it as `__main__`
does not re-execute a module the package has already loaded.
"""

from __future__ import annotations

import sys

from redteam_gym.judges.semantic import main

if __name__ == "__main__":
    sys.exit(main())
