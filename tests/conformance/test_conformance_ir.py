"""The compiled YAML against the protos of the minimum supported KFP backend, strictly.

Minimum supported backend: **KFP 2.15.0** (``pipelines._platform.MINIMUM_KFP_BACKEND``). From
2.14.0 task display names no longer break producer lookup (kubeflow/pipelines#11938, #12061;
shared/reference/kfp-backend-contract.md §1.8); 2.15.0 is the first release whose
``SecretAsEnv`` has ``optional``, which kfp-kubernetes 2.17 always writes (§1.9). The schemas are
vendored under ``vendor/`` (see vendor/SOURCE.md for the source of each file).

"Strict": ``json_format.ParseDict`` without ``ignore_unknown_fields``, so a field the backend's
proto lacks is an error. The 2.14 and 2.17 drivers would instead drop it silently
(``DiscardUnknown: true``, kubeflow/pipelines@2.17.0 backend/src/common/util/json.go l.74) and
2.4.0 rejects the whole Kubernetes config (``jsonpb``, 2.4.0 backend/src/v2/cmd/driver/main.go
l.32, l.138), so an unknown field is either a silently ignored setting or a failed run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    json_format,
    message_factory,
    struct_pb2,
    text_format,
)
from google.rpc import status_pb2
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines._platform import MINIMUM_KFP_BACKEND

VENDOR = Path(__file__).parent / "vendor"


def _pool(k8s_release: str) -> descriptor_pool.DescriptorPool:
    """A descriptor pool of the vendored 2.15.0 ``pipeline_spec.proto`` and the given release's
    ``kubernetes_executor_config.proto`` (plus the well-known protos they import)."""
    pool = descriptor_pool.DescriptorPool()
    for module in (any_pb2, struct_pb2, duration_pb2, status_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    for path in (
        VENDOR / f"kfp-{MINIMUM_KFP_BACKEND}" / "pipeline_spec.textproto",
        VENDOR / f"kfp-{k8s_release}" / "kubernetes_executor_config.textproto",
    ):
        pool.Add(text_format.Parse(path.read_text(), descriptor_pb2.FileDescriptorProto()))
    return pool


def _parse(pool: descriptor_pool.DescriptorPool, type_name: str, doc: dict[str, Any]) -> None:
    message = message_factory.GetMessageClass(pool.FindMessageTypeByName(type_name))()
    json_format.ParseDict(doc, message)


def _executor_configs(platform: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _parse_all(pool: descriptor_pool.DescriptorPool, ir: tuple) -> None:
    """The pipeline spec, its deployment config (a Struct inside it) and each executor's
    Kubernetes config (what the driver gets as ``--kubernetes_config``), all strictly."""
    spec, platform = ir
    _parse(pool, "ml_pipelines.PipelineSpec", spec)
    _parse(pool, "ml_pipelines.PipelineDeploymentConfig", spec["deploymentSpec"])
    _parse(pool, "ml_pipelines.PlatformSpec", platform)
    for config in _executor_configs(platform).values():
        _parse(pool, "kfp_kubernetes.KubernetesExecutorConfig", config)


def test_ir_parses_strictly_against_the_minimum_backend_protos(ir: tuple) -> None:
    """Every field of the IR exists in KFP 2.15.0's protos (vendored)."""
    _parse_all(_pool(MINIMUM_KFP_BACKEND), ir)


def test_ir_parses_strictly_against_the_sdk_protos(ir: tuple) -> None:
    """And in the installed SDK's (kfp-pipeline-spec 2.17.x, kfp-kubernetes 2.17.0), which the
    2.17 backend shares."""
    spec, platform = ir
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    json_format.ParseDict(spec["deploymentSpec"], pipeline_spec_pb2.PipelineDeploymentConfig())
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    for config in _executor_configs(platform).values():
        json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig())


def test_the_strict_parse_rejects_a_field_the_backend_lacks(ir: tuple) -> None:
    """The check has teeth: 2.14.0's ``SecretAsEnv`` has no ``optional``, which the IR's secret
    config carries (a 2.14 driver drops it; its value ``false`` is Kubernetes' default anyway).
    Without that one field the IR parses against 2.14.0 as well."""
    _, platform = ir
    pool = _pool("2.14.0")
    with_secret = [c for c in _executor_configs(platform).values() if c.get("secretAsEnv")]
    assert with_secret, "the IR mounts the object-store secret somewhere"
    for config in with_secret:
        with pytest.raises(json_format.ParseError, match="optional"):
            _parse(pool, "kfp_kubernetes.KubernetesExecutorConfig", config)
        assert all(s["optional"] is False for s in config["secretAsEnv"])
        stripped = {
            **config,
            "secretAsEnv": [
                {k: v for k, v in s.items() if k != "optional"} for s in config["secretAsEnv"]
            ],
        }
        _parse(pool, "kfp_kubernetes.KubernetesExecutorConfig", stripped)
