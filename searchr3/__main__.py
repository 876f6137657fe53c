"""``python -m searchr3``: the same command line as the ``searchr3`` script (``bin/searchr3`` runs it this way)."""
import sys

from searchr3.cli import main

sys.exit(main())
