"""``python -m rfdetr``: the same command line as the ``rfdetr`` script."""

from rfdetr.cli import main

raise SystemExit(main())
