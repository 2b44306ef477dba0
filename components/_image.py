"""The container image every component runs on, tagged with the installed package version.

Read from the package metadata (``importlib.metadata``), so compiling a pipeline never imports
torch. A CI build that pushes its own tag sets ``RFDETR_PIPELINE_IMAGE`` (the full reference)
before compiling, or passes ``rfdetr-pipeline compile --image REF``, which overrides it per task.
"""

from __future__ import annotations

import os

IMAGE_ENV = "RFDETR_PIPELINE_IMAGE"
IMAGE_REPOSITORY = "ghcr.io/rfdetr-pipelines/rfdetr"


def package_version() -> str:
    """The installed ``rfdetr`` version (``rfdetr.__version__`` reads the package metadata)."""
    from rfdetr import __version__  # light: the package imports its modules lazily

    return __version__


def default_image() -> str:
    """``$RFDETR_PIPELINE_IMAGE``, else ``<IMAGE_REPOSITORY>:<package version>``."""
    return os.environ.get(IMAGE_ENV, "").strip() or f"{IMAGE_REPOSITORY}:{package_version()}"


RFDETR_IMAGE: str = default_image()
