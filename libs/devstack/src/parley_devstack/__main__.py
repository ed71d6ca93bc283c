"""`python -m parley_devstack run` is `parley run`."""

from __future__ import annotations

import sys

from parley_devstack.cli import main

if __name__ == "__main__":
    sys.exit(main())
