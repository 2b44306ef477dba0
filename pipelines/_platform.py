"""Where the pipeline's steps run on Kubernetes: one :class:`Platform` value (``compile``'s
options) applied to the tasks; Kubernetes-only settings go through ``kfp-kubernetes``.

``Platform.for_local()`` (``run-local``) sets no resources or GPUs (kfp.local warns about them),
no object-store endpoint (the local run's environment has it) and a one-second retry backoff.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kfp.dsl import PipelineTask

SECRET_KEYS: dict[str, str] = {
    "accesskey": "AWS_ACCESS_KEY_ID",
    "secretkey": "AWS_SECRET_ACCESS_KEY",
}
MINIMUM_KFP_BACKEND = "2.15.0"  # display names (2.14+) and SecretAsEnv.optional (2.15+)
STEP_TIMEOUT_S = 7 * 24 * 3600  # a week: above any training run this pipeline is sized for
IMAGE_UID = 1000  # the images' user and group (containers/Dockerfile.*: USER 1000:1000)


@dataclass(frozen=True)
class Toleration:
    """A Kubernetes toleration (``operator="Exists"`` tolerates any value of ``key``)."""

    key: str
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = "NoSchedule"


@dataclass(frozen=True)
class Resources:
    """CPU and memory requests (and an optional memory limit) of one kind of step."""

    cpu: str
    memory: str
    memory_limit: str | None = None


@dataclass(frozen=True)
class Platform:
    """Cluster settings of every step; the ``compile`` option of each field says what it is.

    Attributes not spelled out there:
        image: None keeps :data:`components.RFDETR_IMAGE`; cpu_image: see :func:`step_image`.
        train, evaluate, export, light: resources of train, evaluate, fetch and export, and the
            other (seconds-long) steps; serve: the predictor's.
        retry_backoff_factor: an integer (KFP 2.5+ and Argo truncate it).
        local: settings for ``kfp.local`` (see the module docstring).
        run_as_user: a 2.15/2.16 driver drops it (tests/conformance/test_conformance_ir.py).
    """

    image: str | None = None
    accelerator_type: str = "nvidia.com/gpu"
    train_gpus: int = 1
    eval_gpus: int = 1
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    gpu_tolerations: tuple[Toleration, ...] = (Toleration("nvidia.com/gpu"),)
    shm_size: str = "16Gi"
    train: Resources = Resources("8", "32Gi", memory_limit="64Gi")
    evaluate: Resources = Resources("4", "16Gi", memory_limit="32Gi")
    export: Resources = Resources("2", "8Gi", memory_limit="16Gi")
    light: Resources = Resources("500m", "1Gi", memory_limit="4Gi")
    secret_name: str = "mlpipeline-minio-artifact"  # KFP's own object-store credentials
    store_host: str = "minio-service.kubeflow"  # KFP's store (SeaweedFS or MinIO), any namespace
    store_port: int = 9000
    store_secure: bool = False
    pushgateway_url: str | None = None
    train_retries: int = 2
    retry_backoff: str = "120s"
    retry_backoff_factor: int = 2
    retry_backoff_max: str = "7d"  # Argo's retry window, from the first attempt: STEP_TIMEOUT_S
    train_timeout_s: int | None = STEP_TIMEOUT_S
    eval_timeout_s: int | None = STEP_TIMEOUT_S
    display_names: bool = True
    local: bool = False
    cpu_image: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    run_as_user: int | None = IMAGE_UID
    train_engine: str = "pod"
    train_nodes: int = 1
    gpus_per_node: int = 1
    train_runtime: str = "TrainingRuntime/rfdetr-torch-distributed"  # manifests/pipeline-runner
    keep_train_job: bool = False
    deploy: bool = False
    serve_replicas: tuple[int, int] = (1, 1)
    serve: Resources = Resources("2", "4Gi")

    @classmethod
    def for_local(cls) -> Platform:
        """Settings for ``kfp.local.SubprocessRunner`` runs."""
        return cls(local=True, retry_backoff="1s", display_names=False)


def common(task: PipelineTask, platform: Platform, resources: Resources) -> None:
    """What every step gets: the CPU image (:func:`use_gpus` sets the GPU one), pull secrets, a
    non-root security context (the only fields kfp-kubernetes 2.17 sets; docs/deploy.md,
    "Security"), resources, unbuffered logs, the Pushgateway URL."""
    from kfp import kubernetes

    if platform.image:
        task.set_container_image(platform.image)
    task.set_env_variable("PYTHONUNBUFFERED", "1")
    if platform.local:
        return
    task.set_container_image(step_image(platform, gpu=False))
    if platform.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(platform.image_pull_secrets))
    if platform.run_as_user is not None:
        uid = platform.run_as_user
        kubernetes.set_security_context(
            task, run_as_user=uid, run_as_group=uid, run_as_non_root=True
        )
    task.set_cpu_request(resources.cpu).set_memory_request(resources.memory)
    if resources.memory_limit:
        task.set_memory_limit(resources.memory_limit)
    if platform.pushgateway_url:
        task.set_env_variable("PUSHGATEWAY_URL", platform.pushgateway_url)


def use_object_store(task: PipelineTask, platform: Platform) -> None:
    """Object-store credentials from the secret as env vars, and the endpoint."""
    from kfp import kubernetes

    kubernetes.use_secret_as_env(
        task, secret_name=platform.secret_name, secret_key_to_env=dict(SECRET_KEYS)
    )
    if not platform.local:
        task.set_env_variable("OBJECTSTORECONFIG_HOST", platform.store_host)
        task.set_env_variable("OBJECTSTORECONFIG_PORT", str(platform.store_port))
        task.set_env_variable("OBJECTSTORECONFIG_SECURE", str(platform.store_secure).lower())


def use_gpus(task: PipelineTask, platform: Platform, count: int) -> None:
    """``count`` GPUs (none: CPU) on GPU nodes; a memory ``/dev/shm`` for DataLoader workers."""
    from kfp import kubernetes

    kubernetes.empty_dir_mount(task, "dshm", "/dev/shm", "Memory", size_limit=platform.shm_size)
    if count <= 0:
        return
    if not platform.local:
        task.set_accelerator_type(platform.accelerator_type).set_accelerator_limit(str(count))
        task.set_container_image(step_image(platform, gpu=True))
    for key, value in platform.gpu_node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in platform.gpu_tolerations:  # its fields are add_toleration's keywords
        kubernetes.add_toleration(task, **dataclasses.asdict(toleration))


def train_job_settings(platform: Platform, image: bool = True) -> dict[str, object]:
    """The ``cluster_job`` input of ``train``: what its TrainJob / PyTorchJob nodes get;
    ``image=False`` (the steps' own defaults) leaves out the image, which imports ``components``."""
    settings: dict[str, object] = {
        "runtime": platform.train_runtime,
        "cpu": platform.train.cpu,
        "memory": platform.train.memory_limit or platform.train.memory,
        "accelerator": platform.accelerator_type,
        "secret": platform.secret_name,
        "timeout_s": platform.train_timeout_s or STEP_TIMEOUT_S,
        "delete": not platform.keep_train_job,
    }
    return {"image": step_image(platform, gpu=True), **settings} if image else settings


def serving_settings(platform: Platform, image: bool = True) -> dict[str, object]:
    """The ``serving`` input of ``deploy`` (``image``: as in :func:`train_job_settings`)."""
    serve = platform.serve
    settings = {"cpu": serve.cpu, "memory": serve.memory, "secret": platform.secret_name}
    return {"image": step_image(platform, gpu=False), **settings} if image else settings


def step_image(platform: Platform, gpu: bool) -> str:
    """The image of a step: the GPU image, or for a step without GPUs the CPU image."""
    from components import RFDETR_IMAGE
    from components._image import cpu_image_of

    image = platform.image or RFDETR_IMAGE
    return image if gpu else platform.cpu_image or cpu_image_of(image)
