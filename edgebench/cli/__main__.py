"""`python -m edgebench.cli ...`, as the `edgebench` script."""

import sys

from edgebench.cli import main

sys.exit(main())
