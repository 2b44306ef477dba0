"""``rfdetr-pipeline compile``: write the pipeline YAML that Kubeflow runs.

Two YAML documents: the KFP ``PipelineSpec`` and ``platforms.kubernetes``, from the options
(:class:`pipelines._platform.Platform`). With ``--kubernetes-manifest``: ``Pipeline`` and
``PipelineVersion`` resources (``pipelines.kubeflow.org/v2beta1``) to ``kubectl apply`` instead,
for KFP's Kubernetes-native API mode.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.cli import HTTP_URL, Option, Subparsers, add_options, duration_s
from pipelines.steps.common import PIPELINE_NAME
from rfdetr.errors import UserError

if TYPE_CHECKING:
    from kfp.compiler import KubernetesManifestOptions as ManifestOptions

    from pipelines._platform import Platform, Toleration

DEFAULT_OUTPUT = "pipeline.yaml"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A Kubernetes resource.Quantity, unsigned (k8s.io/apimachinery pkg/api/resource/quantity.go:
# number, then a binary-SI, decimal-SI or exponent suffix). KFP's driver reads the /dev/shm size
# with resource.MustParse (backend/src/v2/driver/k8s.go, EmptyDirMounts), which panics on "16GB".
_QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[mkMGTPE]|[eE][+-]?\d+)?$")
# An image reference (github.com/distribution/reference v0.6.0 regexp.go: [domain[:port]/]path
# components, then :tag and/or @digest); an extended resource name, DOMAIN/NAME
# (k8s.io/apimachinery pkg/util/validation/validation.go IsQualifiedName, with a prefix); a CPU
# amount as kfp 2.17 accepts it (kfp/dsl/pipeline_task.py _validate_cpu_request_limit).
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::\d+)?/)?{_PATH}(?:/{_PATH})*"
    r"(?::\w[\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# fmt: off
_FORMATS: dict[str, tuple[str, re.Pattern[str], str]] = {  # dest: (flag, pattern, expected)
    "shm_size": ("--shm-size", _QUANTITY, "not a Kubernetes quantity, e.g. 16Gi or 8G"),
    "image": ("--image", _IMAGE, "not an image reference, e.g. registry.io/rfdetr:1.0"),
    "cpu_image": ("--cpu-image", _IMAGE, "not an image reference, e.g. registry.io/rfdetr:1.0-cpu"),
    "accelerator_type": ("--accelerator", _RESOURCE, "expected an extended resource DOMAIN/NAME, e.g. nvidia.com/gpu"),
    "train_cpu": ("--train-cpu", re.compile(r"^([0-9]*[.])?[0-9]+m?$"), "expected a CPU amount, e.g. 8, 2.5 or 500m"),
    "pushgateway_url": ("--pushgateway-url", HTTP_URL, "expected an http(s)://host[:port] URL"),
}
# fmt: on


def _duration(text: str) -> int:
    seconds = duration_s(text)
    if seconds is None or not seconds.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 3600, 90m, 36h or 7d")
    return int(seconds)


NO_UID = "none"  # --run-as-user none: no securityContext


def _uid(text: str) -> int | str:
    if text.strip().lower() == NO_UID:
        return NO_UID
    if not text.strip().isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a non-root UID (1+) or '{NO_UID}': {text!r}")
    return int(text)


# An option named like a Platform field sets it when given (platform_from_args): flags default None
_FLAG: dict[str, Any] = {"action": "store_true", "default": None}
_LIST: dict[str, Any] = {"action": "append"}
_TIME: dict[str, Any] = {"type": _duration, "metavar": "DURATION"}
_INT: dict[str, Any] = {"type": int}
# fmt: off
_OPTIONS: tuple[tuple[str, tuple[Option, ...]], ...] = (
    ("", (
        ("--output -o", f"file to write (default {DEFAULT_OUTPUT})", {"type": Path, "default": Path(DEFAULT_OUTPUT)}),
        ("--image", "container image of the GPU steps (e.g. a CI-built tag)", {}),
        ("--cpu-image", "image of the steps without GPUs (default: the --image tag + '-cpu', as containers/build.sh names it)", {}),
        ("--image-pull-secret", "Kubernetes secret the step pods pull images with (repeatable; e.g. regcred)", {**_LIST, "metavar": "SECRET", "dest": "image_pull_secrets"}),
        ("--run-as-user", "every step's non-root UID/GID (default 1000, the images' user; 'none': no securityContext); KFP 2.17+ applies it, 2.15/2.16 drop it", {"type": _uid, "metavar": "UID"}),
    )),
    ("Kubernetes-native pipeline resources", (
        ("--kubernetes-manifest", "write Pipeline + PipelineVersion resources to kubectl apply instead of a YAML to upload (KFP's Kubernetes-native API mode)", {"action": "store_true"}),
        ("--version-name", "PipelineVersion name, e.g. rfdetr-training-<git sha> (default: rfdetr-training-<package version>); lowercase letters, digits, '-' and '.'", {}),
        ("--namespace", "namespace of the resources (default: kubectl's)", {}),
    )),
    ("GPUs", (
        ("--accelerator", "GPU resource (default nvidia.com/gpu)", {"dest": "accelerator_type", "metavar": "ACCELERATOR"}),
        ("--train-gpus", "GPUs of train (default 1)", _INT),
        ("--eval-gpus", "GPUs of evaluate (default 1; 0: CPU)", _INT),
        ("--node-selector", "node label GPU steps require (repeatable; default none: the GPU limit and the toleration place them)", {**_LIST, "metavar": "LABEL=VALUE", "dest": "gpu_node_selector"}),
        ("--toleration", "taint GPU steps tolerate (repeatable; replaces the default nvidia.com/gpu:NoSchedule)", {**_LIST, "metavar": "KEY[=VALUE]:EFFECT", "dest": "gpu_tolerations"}),
        ("--shm-size", "memory /dev/shm size (default 16Gi)", {}),
    )),
    ("multi-node training (docs/deploy.md)", (
        ("--train-engine", "pod: train in the step's pod (default); trainjob: a Kubeflow Trainer v2 TrainJob; pytorchjob: a Training Operator v1 PyTorchJob, created and followed by the step", {"choices": ("pod", "trainjob", "pytorchjob")}),
        ("--train-nodes", "default of train_nodes", _INT),
        ("--gpus-per-node", "default of gpus_per_node (1)", _INT),
        ("--train-runtime", "TrainJob's runtime: TrainingRuntime/NAME, or a ClusterTrainingRuntime's NAME (default TrainingRuntime/rfdetr-torch-distributed, manifests/pipeline-runner)", {}),
        ("--keep-train-job", "keep a succeeded job", _FLAG),
    )),
    ("serving (docs/deploy.md)", (
        ("--deploy", "add the deploy step: a KServe InferenceService of each published version", _FLAG),
        ("--serve-replicas", "predictor pods of the InferenceService (default 1:1; MIN 0 scales to zero)", {"metavar": "MIN:MAX"}),
    )),
    ("resources, retries and deadlines", (
        ("--train-cpu", "CPU request of train (default 8)", {}),
        ("--train-memory", "memory request of train (32Gi)", {}),
        ("--train-retries", "retries of train, each resuming (default 2)", _INT),
        ("--retry-backoff", "first retry delay (default 120s)", {}),
        ("--retry-window", "Argo's retry window, counted from the first train attempt's start and the deadline of every retry; keep it above the longest training (default 7d)", {**_TIME, "dest": "retry_backoff_max"}),
        ("--train-timeout", "deadline of each train attempt, e.g. 36h, 7d or seconds (default 7d; 0: none)", {**_TIME, "dest": "train_timeout_s"}),
        ("--eval-timeout", "deadline of the evaluate step (default 7d; 0: none)", {**_TIME, "dest": "eval_timeout_s"}),
        ("--no-display-names", "no task display names (for KFP backends before 2.14, which lose producer tasks that have one; 2.15+ is the supported minimum)", {"action": "store_const", "const": False, "dest": "display_names"}),
    )),
    ("object store and metrics", (
        ("--secret", "secret with accesskey/secretkey (default mlpipeline-minio-artifact)", {"dest": "secret_name", "metavar": "SECRET"}),
        ("--store-host", "object-store host (default minio-service.kubeflow)", {}),
        ("--store-port", "default 9000", _INT),
        ("--store-secure", "use TLS to the store", _FLAG),
        ("--pushgateway-url", "Prometheus Pushgateway every step pushes to (default none)", {}),
    )),
)
# fmt: on


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "compile",
        help="compile the training pipeline to a Kubeflow Pipelines YAML",
        description=(
            "Write the RF-DETR training pipeline (KFP v2) for a cluster. Steps run on the image "
            "tagged with this package's version ($RFDETR_PIPELINE_IMAGE or --image to change "
            "it); train and evaluate request GPUs; object-store keys come from a Kubernetes "
            "secret."
        ),
    )
    for title, options in _OPTIONS:
        add_options(parser.add_argument_group(title) if title else parser, options)
    parser.set_defaults(handler=_run)


def _toleration(text: str) -> Toleration:
    from pipelines._platform import Toleration

    spec, sep, effect = text.rpartition(":")
    if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise UserError(
            f"--toleration {text!r}: expected KEY[=VALUE]:EFFECT with EFFECT one of "
            "NoSchedule, PreferNoSchedule, NoExecute"
        )
    key, has_value, value = spec.partition("=")
    if not key:
        raise UserError(f"--toleration {text!r}: the key is empty")
    return Toleration(key, "Equal", value, effect) if has_value else Toleration(key, effect=effect)


def _check_formats(args: argparse.Namespace) -> None:
    from kfp.dsl.structures import convert_duration_to_seconds

    for dest, (flag, pattern, expected) in _FORMATS.items():
        value = getattr(args, dest)  # empty: the default (a blank ConfigMap value), but /dev/shm
        if value is not None and (value or dest == "shm_size") and not pattern.match(value):
            raise UserError(f"{flag} {value!r}: {expected}")
    try:
        if args.retry_backoff is not None and convert_duration_to_seconds(args.retry_backoff) < 0:
            raise ValueError
    except ValueError:
        raise UserError(
            f"--retry-backoff {args.retry_backoff!r}: expected a duration of 0 or more "
            "with a unit, e.g. 120s, 5m or 1h"
        ) from None


def platform_from_args(args: argparse.Namespace) -> Platform:
    """A :class:`~pipelines._platform.Platform` from the options (defaults where not given)."""
    from pipelines._platform import Platform, Resources

    base = Platform()
    fields = {field.name for field in dataclasses.fields(Platform)}
    changes = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    for option in ("train_gpus", "eval_gpus", "train_retries", "gpus_per_node"):
        if (getattr(args, option) or 0) < 0:
            raise UserError(f"--{option.replace('_', '-')}: expected 0 or more")
    _check_formats(args)
    if args.store_port is not None and not 0 < args.store_port < 65536:
        raise UserError(f"--store-port {args.store_port}: expected a TCP port (1-65535)")
    if args.train_nodes is not None and args.train_nodes < 1:
        raise UserError(f"--train-nodes {args.train_nodes}: expected 1 or more")
    if (args.train_nodes or 1) > 1 and args.train_engine in (None, "pod"):
        raise UserError("--train-nodes above 1 needs --train-engine trainjob or pytorchjob")
    if args.serve_replicas is not None:
        low, sep, high = args.serve_replicas.partition(":")
        if not (sep and low.isdigit() and high.isdigit()) or int(high) < max(1, int(low)):
            raise UserError(
                f"--serve-replicas {args.serve_replicas!r}: expected MIN:MAX with 0 <= MIN <= MAX, MAX >= 1"
            )
        changes["serve_replicas"] = (int(low), int(high))
    if args.run_as_user == NO_UID:
        changes["run_as_user"] = None
    if args.retry_backoff_max is not None:
        if args.retry_backoff_max <= 0:
            raise UserError("--retry-window: expected a duration above 0")
        changes["retry_backoff_max"] = f"{args.retry_backoff_max}s"
    if args.image_pull_secrets:
        changes["image_pull_secrets"] = tuple(args.image_pull_secrets)
    if args.gpu_node_selector is not None:
        for item in args.gpu_node_selector:
            if "=" not in item or item.startswith("="):
                raise UserError(f"--node-selector {item!r}: expected LABEL=VALUE")
        changes["gpu_node_selector"] = dict(i.partition("=")[::2] for i in args.gpu_node_selector)
    if args.gpu_tolerations is not None:
        changes["gpu_tolerations"] = tuple(_toleration(t) for t in args.gpu_tolerations)
    if args.train_cpu or args.train_memory:
        changes["train"] = Resources(
            args.train_cpu or base.train.cpu,
            args.train_memory or base.train.memory,
            None if args.train_memory else base.train.memory_limit,
        )
    return dataclasses.replace(base, **changes)


def compile_pipeline(
    output: str | Path, platform: Platform | None = None, manifest: ManifestOptions | None = None
) -> Path:
    """Compile the pipeline with ``platform`` (default: the cluster's) to ``output``; with
    ``manifest``, as ``Pipeline`` / ``PipelineVersion`` resources."""
    from kfp import compiler

    from pipelines.training_pipeline import build_pipeline

    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        build_pipeline(platform),
        str(path),
        kubernetes_manifest_options=manifest,
        kubernetes_manifest_format=manifest is not None,
    )
    return path


def manifest_options(args: argparse.Namespace) -> ManifestOptions | None:
    """From ``--kubernetes-manifest``, ``--version-name``, ``--namespace``; names checked."""
    if not args.kubernetes_manifest:
        if args.version_name or args.namespace:
            raise UserError("--version-name and --namespace need --kubernetes-manifest")
        return None
    from kfp.compiler import KubernetesManifestOptions

    from rfdetr import __version__

    name = args.version_name or f"{PIPELINE_NAME}-{__version__}"
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise UserError(
            f"--version-name {name!r}: a Kubernetes name needs lowercase letters, digits, "
            "'-' and '.', starting and ending with a letter or digit (at most 253)"
        )
    if args.namespace is not None and not _DNS_LABEL.match(args.namespace):
        raise UserError(f"--namespace {args.namespace!r}: not a Kubernetes namespace name")
    return KubernetesManifestOptions(
        pipeline_version_name=name, namespace=args.namespace, include_pipeline_manifest=True
    )


def _run(args: argparse.Namespace) -> int:
    platform = platform_from_args(args)
    manifest = manifest_options(args)
    try:
        path = compile_pipeline(args.output, platform, manifest)
    except (ValueError, TypeError) as exc:  # kfp rejects a setting (e.g. a resource string)
        raise UserError(f"cannot compile: {exc}") from None
    from components import RFDETR_IMAGE

    print(f"wrote {path}")
    print(f"image:     {platform.image or RFDETR_IMAGE}")
    print(
        f"train:     {platform.train_gpus} x {platform.accelerator_type}, "
        f"{platform.train_retries} retries within {platform.retry_backoff_max}, "
        f"cpu {platform.train.cpu}, memory {platform.train.memory}"
    )
    if platform.train_engine != "pod":
        print(
            f"train job: {platform.train_engine}, {platform.train_nodes} node(s) x "
            f"{platform.gpus_per_node} GPU(s) (parameters train_nodes, gpus_per_node)"
        )
    print(f"secret:    {platform.secret_name} -> {platform.store_host}:{platform.store_port}")
    if manifest is not None:
        print(
            f"resources: Pipeline {PIPELINE_NAME}, PipelineVersion {manifest.pipeline_version_name}"
        )
        print(f"next:      kubectl apply -f {path}")
    else:
        print(f"next:      rfdetr-pipeline submit {path} --host URL --param dataset_uri=s3://...")
    return 0
