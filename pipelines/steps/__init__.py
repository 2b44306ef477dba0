"""What each pipeline step does, as plain functions over local paths (no kfp).

The KFP components in :mod:`components` are thin shells: they read their input
artifacts' paths, call one function here, and copy the returned numbers into output metadata.
Everything here is testable without kfp, and each function pushes its step's Prometheus metrics
when ``PUSHGATEWAY_URL`` is set (:func:`pipelines.steps.common.step_metrics`).

- :mod:`.config`: pipeline parameters -> validated ``RunConfig`` JSON.
- :mod:`.dataset`: fetch a dataset (object store or local folder); validate it.
- :mod:`.train`: train, resuming from the output's (or the object-store mirror's) checkpoint.
- :mod:`.model`: best-of regular/EMA selection; ONNX export.
- :mod:`.evaluate`: COCO evaluation and its reports.
- :mod:`.publish`: upload the model, ONNX file, metrics and report with a manifest.
"""
