# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""`python -m ddpm_hf.cli ...`, the same as the `ddpm-hf` console script."""

import sys

from . import main

sys.exit(main())
