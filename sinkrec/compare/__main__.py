"""`python -m sinkrec.compare SPEC.json`: one run of a comparison (see worker.py)."""

import sys

from .worker import main

sys.exit(main())
