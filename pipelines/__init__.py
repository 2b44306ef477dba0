"""The Kubeflow side of rfdetr: pipeline wiring and the ``rfdetr-pipeline`` command.

It may import kfp, minio and kubernetes (``pipeline`` extra), only inside command handlers.
"""
