"""The container image every component runs on, tagged with the installed package version.

Read from the package metadata (``importlib.metadata``), so compiling a pipeline never imports
torch. A CI build that pushes its own tag sets ``RFDETR_PIPELINE_IMAGE`` (the full reference)
before compiling, or passes ``rfdetr-pipeline compile --image REF``, which overrides it per task.
``containers/build.sh`` builds ``<repo>:<tag>`` (GPU) and ``<repo>:<tag>-cpu`` beside it; on a
cluster the steps that need no GPU run on the CPU one (:func:`cpu_image_of`).
"""

from __future__ import annotations

import os

IMAGE_ENV = "RFDETR_PIPELINE_IMAGE"
IMAGE_REPOSITORY = "ghcr.io/rfdetr-pipelines/rfdetr"
CPU_SUFFIX = "-cpu"


def default_image() -> str:
    """``$RFDETR_PIPELINE_IMAGE``, else ``<IMAGE_REPOSITORY>:<package version>``."""
    from rfdetr import __version__  # light: the package imports its modules lazily

    return os.environ.get(IMAGE_ENV, "").strip() or f"{IMAGE_REPOSITORY}:{__version__}"


RFDETR_IMAGE: str = default_image()


def cpu_image_of(image: str) -> str:
    """The CPU image built beside ``image`` (``<repo>:<tag>`` -> ``<repo>:<tag>-cpu``).

    An image already tagged ``...-cpu``, pinned by digest or without a tag has no known CPU
    sibling and is returned unchanged.
    """
    name, sep, tag = image.rpartition(":")
    if "@" in image or not sep or "/" in tag or tag.endswith(CPU_SUFFIX):
        return image
    return f"{name}:{tag}{CPU_SUFFIX}"
