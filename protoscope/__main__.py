"""`python -m protoscope …` is `protoscope …` (what torchrun and the tests start)."""

import sys

from protoscope.cli import main

sys.exit(main())
