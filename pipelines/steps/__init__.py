"""What each pipeline step does, as plain functions over local paths (no kfp).

The KFP components in :mod:`components` are thin shells: they read their input artifacts'
paths, call one function here, and copy the returned numbers into output metadata. Everything
here is testable without kfp; each step pushes its Prometheus metrics when ``PUSHGATEWAY_URL``
is set (:func:`pipelines.steps.common.step_metrics`).
"""
