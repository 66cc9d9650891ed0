"""``python -m lightning_asyncfl.compare``."""

import sys

from lightning_asyncfl.compare.cli import main

sys.exit(main())
