"""The ``fetch_dataset`` component: an object-store URI or a local folder -> ``Dataset``."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import RFDETR_IMAGE


@dsl.component(base_image=RFDETR_IMAGE, install_kfp_package=False)
def fetch_dataset(dataset_uri: str, dataset: Output[Dataset]):
    """Pin a COCO or YOLO dataset for the run: a reference, not a copy.

    Object-store sources are not copied: the prefix's listing must match its ``manifest.json``
    (required; keys escaping the prefix are refused), and the output holds the URI and the
    manifest's sha256; validate, train and evaluate download the files themselves, in
    parallel, each checked against that manifest. A local folder is copied. Credentials come
    from the environment (the ``mlpipeline-minio-artifact`` secret on Kubeflow).

    Args:
        dataset_uri: ``s3://bucket/prefix``, ``minio://bucket/prefix`` or a local folder.
        dataset: output; ``dataset-reference.json``, or the copied folder.
    """
    from pipelines.steps.common import step_errors
    from pipelines.steps.dataset import fetch_dataset as fetch

    with step_errors("fetch_dataset"):
        result = fetch(dataset_uri, dataset.path)
    dataset.metadata.update(result.metadata())
