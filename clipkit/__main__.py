"""`python -m clipkit` is the `clipkit` console script."""

import sys

from clipkit.cli import main

sys.exit(main())
