"""Imported at interpreter start in a conformance "pod" (this folder is first on PYTHONPATH).

On a cluster the KFP SDK reads artifacts at ``/minio/...``, ``/s3/...``, ``/gcs/...`` (emptyDirs
the launcher fills; ``kfp/dsl/types/artifact_types.py`` in kfp 2.17.0, ``_*_LOCAL_MOUNT_PREFIX``).
Here the pod's ``/`` is the folder ``$CONFORMANCE_POD_ROOT``, so the same mount points move
under it; nothing else changes.
"""

import os

_root = os.environ.get("CONFORMANCE_POD_ROOT")
if _root:
    from kfp.dsl.types import artifact_types

    for _attr, _mount in (
        ("_GCS_LOCAL_MOUNT_PREFIX", "/gcs/"),
        ("_MINIO_LOCAL_MOUNT_PREFIX", "/minio/"),
        ("_S3_LOCAL_MOUNT_PREFIX", "/s3/"),
    ):
        setattr(artifact_types, _attr, _root.rstrip("/") + _mount)
