"""What each pipeline step does, as plain functions over local paths, testable without kfp:
the components (:mod:`components`) are thin shells over them. Each step pushes its Prometheus
metrics when ``PUSHGATEWAY_URL`` is set (:func:`pipelines.steps.common.step_metrics`).
"""
