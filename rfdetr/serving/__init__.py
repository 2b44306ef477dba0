"""Serving exported models over the Open Inference Protocol v2 (KServe's ``ModelServer``).

``rfdetr serve --model SOURCE`` (:mod:`rfdetr.serving.cli`). Modules: :mod:`.codec` (request
and response tensors, limits), :mod:`.batcher` (dynamic batching), :mod:`.model` (the
``kserve.Model`` and where its ONNX file comes from), :mod:`.server` (the server). Needs the
``serve`` extra; importing this package imports none of it.
"""
