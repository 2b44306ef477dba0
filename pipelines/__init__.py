"""The Kubeflow side of rfdetr: pipeline wiring and its tools (``rfdetr-pipeline`` command).

Sub-commands live in their own modules, registered in :data:`pipelines.cli.COMMAND_MODULES`.
Unlike the ``rfdetr`` library, this package may import kfp, minio and kubernetes (the
``pipeline`` extra), but only inside command handlers, so ``rfdetr-pipeline --help`` stays fast.
"""
