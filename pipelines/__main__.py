"""``python -m pipelines``: the same as the ``rfdetr-pipeline`` console script."""

import sys

from pipelines.cli import main

sys.exit(main())
