"""`python -m redteam_cli`: the `redteam-gym` command."""

import sys

from redteam_cli import main

sys.exit(main())
