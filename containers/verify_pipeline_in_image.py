#!/usr/bin/env python3
"""Run the whole training pipeline the way Kubeflow runs it: every step in its own container.

    sudo .venv/bin/python containers/verify_pipeline_in_image.py [--image REF]... [--epochs 2]

The entry point of ``containers/verify_pipeline/`` (what it does: ``--help``, or that package's
docstring). ``containers/`` is not an installed package, so this puts its own folder on
``sys.path`` to import it. Exit status: 0 all checks passed, 1 a check failed, 2 cannot run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from verify_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
