"""`python -m symsm.cli …`: the `symsm` command, for environments without the console script."""

import sys

from .main import main

sys.exit(main())
