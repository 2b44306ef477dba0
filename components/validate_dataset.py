"""The ``validate_dataset`` component: format detection and a validation report."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from components._image import RFDETR_IMAGE


@dsl.component(base_image=RFDETR_IMAGE, install_kfp_package=False)
def validate_dataset(
    dataset: Input[Dataset], report: Output[Markdown], counts: Output[Metrics]
) -> str:
    """Check every annotation, label and image header; fail the run when the dataset has errors.

    The failure message is the validation report (the one ``rfdetr validate`` prints), so the
    run shows what to fix before any GPU is requested.

    Args:
        dataset: the fetched dataset (folder, or reference downloaded here).
        report: output; the validation report (splits, classes, problems) in Markdown.
        counts: output; images and annotations per split, classes, errors and warnings.

    Returns:
        The detected format: ``coco`` or ``yolo``.
    """
    from pipelines.steps.common import step_errors
    from pipelines.steps.dataset import validate_fetched

    with step_errors("validate_dataset"):
        outcome = validate_fetched(dataset.path, dataset.metadata.get("source", ""), report.path)
    for name, value in outcome.counts.items():
        counts.log_metric(name, value)
    return str(outcome.report.format)
