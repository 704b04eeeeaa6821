"""`python -m symsm …`: the `symsm` command, for environments without the console script."""

import sys

from .cli.main import main

sys.exit(main())
