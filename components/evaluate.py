"""The ``evaluate`` component: COCO metrics, confusion matrix and reports."""

from kfp import dsl
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from components._image import RFDETR_IMAGE


@dsl.component(base_image=RFDETR_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    dataset: Input[Dataset],
    run_config: Input[Artifact],
    eval_metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    html_report: Output[HTML],
    markdown_report: Output[Markdown],
    report: Output[Artifact],
) -> float:
    """Evaluate the selected model on the test split (the validation split when there is none).

    Args:
        model: the selected checkpoint folder.
        dataset: the fetched dataset (folder, or reference downloaded here).
        run_config: the run config (evaluation batch size, DataLoader workers).
        eval_metrics: output; mAP50:95, mAP50, mAP75, size-wise mAP and AR (masks for Seg models),
            precision/recall/F1 at the F1-optimal confidence, and AP50:95 per class.
        confusion: output; the confusion matrix at that confidence (IoU 0.5), with a
            ``background`` row and column for misses and false detections.
        html_report: output; the self-contained HTML report (plots, sample images).
        markdown_report: output; the Markdown report.
        report: output; the report folder: metrics.json, report.md, report.html, plots/.

    Returns:
        mAP50:95 on the evaluated split.
    """
    import shutil

    from pipelines.steps.common import step_errors
    from pipelines.steps.evaluate import evaluate_checkpoint

    with step_errors("evaluate"):
        outcome = evaluate_checkpoint(model.path, dataset.path, report.path, run_config.path)
    for name, value in outcome.metrics.items():
        eval_metrics.log_metric(name, value)
    confusion.log_confusion_matrix(outcome.confusion_labels, outcome.confusion_matrix)
    shutil.copyfile(outcome.report_dir / "report.html", html_report.path)
    shutil.copyfile(outcome.report_dir / "report.md", markdown_report.path)
    report.metadata["split"] = outcome.split
    eval_metrics.metadata["split"] = outcome.split
    return outcome.map_50_95
