"""Settings of the run, its two errors, and small helpers every module uses."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
STATE_ENV = "RFDETR_VERIFY_STATE"
DEFAULT_STATE = Path("/var/tmp/rfdetr-verify")
SECRET_NAME = "mlpipeline-minio-artifact"  # the secret a cluster has; see run.resolve_secrets
DATASET_BUCKET, MODEL_BUCKET, KFP_BUCKET = "datasets", "models", "mlpipeline"
MIRROR_ROOT = f"s3://{KFP_BUCKET}/rfdetr/checkpoint-mirror"  # the pipeline's default
SPLITS = {"train": 32, "valid": 8, "test": 8}
# As pipelines/demo.py for the tiny preset on generated shapes: from scratch, higher LR.
TINY_PARAMS = {"lr": 1e-3, "batch_size": 8, "grad_accum_steps": 1}
TINY_OVERRIDES = {"lr_encoder": 1.5e-3, "multi_scale": False}
STEPS = (
    "resolve_config",
    "fetch_dataset",
    "validate_dataset",
    "train",
    "select_checkpoint",
    "evaluate",
    "export_onnx",
    "publish",
)
# podman on this VM: runc cannot raise these limits (no CAP_SYS_RESOURCE); host network only.
ULIMITS = {"nofile": 1024, "nproc": 1000}
STORE_VARS = ("OBJECTSTORECONFIG_", "AWS_", "MINIO_SERVICE_")  # object-store variable prefixes


class SetupError(RuntimeError):
    """The check cannot run (missing tool, image, service that does not start)."""


class CheckFailed(AssertionError):
    """A verification failed; the message says what differs."""


def say(message: str = "") -> None:
    """Print ``message`` at once (the output interleaves with podman's and the steps')."""
    print(message, flush=True)


def expect(condition: bool, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition``."""
    if not condition:
        raise CheckFailed(message)


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
