"""The ``fetch_dataset`` component: an object-store URI or a local folder -> ``Dataset``."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import RFDETR_IMAGE


@dsl.component(base_image=RFDETR_IMAGE, install_kfp_package=False)
def fetch_dataset(dataset_uri: str, dataset: Output[Dataset]):
    """Copy a COCO or YOLO dataset into the pipeline, verifying every file.

    Object-store sources: each object's size, ETag and sha256 metadata are checked, and the
    whole prefix against its ``manifest.json`` when it has one; keys that would escape the
    prefix (``..``, absolute) are refused before anything is written. Credentials come from the
    environment (the ``mlpipeline-minio-artifact`` secret on Kubeflow).

    Args:
        dataset_uri: ``s3://bucket/prefix``, ``minio://bucket/prefix`` or a local folder.
        dataset: output; the dataset folder (train/, valid/, optional test/).
    """
    from pipelines.steps.common import step_errors
    from pipelines.steps.dataset import fetch_dataset as fetch

    with step_errors("fetch_dataset"):
        result = fetch(dataset_uri, dataset.path)
    dataset.metadata.update(result.metadata())
