"""The container image every component runs on, tagged with the installed package version.

``$RFDETR_PIPELINE_IMAGE`` or ``compile --image`` replace it; ``containers/build.sh`` builds a
``-cpu`` image beside it for the steps without GPUs (:func:`cpu_image_of`).
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
    """The CPU image built beside ``image`` (``<repo>:<tag>-cpu``); ``image`` itself when it
    is already ``-cpu``, pinned by digest or untagged."""
    name, sep, tag = image.rpartition(":")
    if "@" in image or not sep or "/" in tag or tag.endswith(CPU_SUFFIX):
        return image
    return f"{name}:{tag}{CPU_SUFFIX}"
