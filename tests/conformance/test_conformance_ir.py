"""The compiled YAML against the protos of the minimum supported KFP backend, and its parsers.

Minimum supported backend: **KFP 2.15.0** (``pipelines._platform.MINIMUM_KFP_BACKEND``). From
2.14.0 task display names no longer break producer lookup (kubeflow/pipelines#11938, #12061;
shared/reference/kfp-backend-contract.md §1.8); 2.15.0 is the first release whose
``SecretAsEnv`` has ``optional``, which kfp-kubernetes 2.17 always writes (§1.9). The schemas are
vendored under ``vendor/`` (see vendor/SOURCE.md for the source of each file).

"Strict": ``json_format.ParseDict`` without ``ignore_unknown_fields``, so a field the backend's
proto lacks is an error. The pipeline spec and the platform spec parse strictly against 2.15.0.

Each step's Kubernetes config carries one field 2.15.0 lacks, on purpose: ``securityContext``
(``KubernetesExecutorConfig.security_context``, first in the 2.17 protos; the default compile
runs every step as the images' UID 1000). Where each backend meets it (kubeflow/pipelines):

- API server: ``backend/src/apiserver/template/v2_template.go`` ``NewV2SpecTemplate`` parses
  the platform spec with ``protojson.Unmarshal``, strictly, but ``PlatformDeploymentConfig.
  executors`` is a ``map<string, google.protobuf.Struct>`` (``api/v2alpha1/pipeline_spec.proto``;
  vendored 2.15.0 schema, ``ExecutorsEntry.value``): any JSON object is valid there.
- Argo compiler: ``backend/src/v2/compiler/argocompiler`` ``saveKubernetesSpec(name, spec
  *structpb.Struct)`` stores that Struct as is; the driver gets it as ``--kubernetes_config``.
- Driver: ``backend/src/v2/cmd/driver/main.go`` ``parseExecConfigJSON`` ->
  ``util.UnmarshalString`` (``backend/src/common/util/json.go`` l.72-77:
  ``protojson.UnmarshalOptions{DiscardUnknown: true}``, l.74; ``jsonpb`` with
  ``AllowUnknownFields: true`` from 2.5.0): a 2.15/2.16 driver drops the field, the rest applies.
- 2.17 driver: ``backend/src/v2/driver/k8s.go`` ``extendPodSpecPatch`` applies
  ``GetSecurityContext()``'s ``RunAsUser``/``RunAsGroup`` (unless an administrator set them) and
  drops all capabilities.

So the Kubernetes configs are held to the driver's parse: strictly against the 2.17 protos (the
installed kfp-kubernetes), and against 2.15.0 through :func:`_driver_parse`, a re-creation of
``DiscardUnknown``, which must drop exactly :data:`NEW_IN_2_17` and nothing else. 2.4.0 rejects
the whole Kubernetes config on any unknown field (``jsonpb``, 2.4.0
backend/src/v2/cmd/driver/main.go l.32, l.138); it is below the minimum.
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

from pipelines._platform import IMAGE_UID, MINIMUM_KFP_BACKEND

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


NEW_IN_2_17 = frozenset({"securityContext"})
"""Kubernetes-config fields the IR carries that 2.15.0's proto lacks (a 2.15 driver drops them)."""


def _driver_parse(
    pool: descriptor_pool.DescriptorPool, config: dict[str, Any]
) -> tuple[dict[str, Any], set[str]]:
    """The driver's ``util.UnmarshalString`` (``DiscardUnknown: true``) re-created: what it keeps
    of ``config`` (as JSON again) and the top-level fields it dropped."""
    type_ = pool.FindMessageTypeByName("kfp_kubernetes.KubernetesExecutorConfig")
    message = message_factory.GetMessageClass(type_)()
    json_format.ParseDict(config, message, ignore_unknown_fields=True)
    known = {field.json_name for field in type_.fields}
    return json_format.MessageToDict(message), {key for key in config if key not in known}


def _parse_all(pool: descriptor_pool.DescriptorPool, ir: tuple) -> None:
    """The pipeline spec, its deployment config (a Struct inside it) and the platform spec
    strictly; each executor's Kubernetes config (what the driver gets as ``--kubernetes_config``)
    as the driver parses it: only :data:`NEW_IN_2_17` is dropped, the rest parses strictly."""
    spec, platform = ir
    _parse(pool, "ml_pipelines.PipelineSpec", spec)
    _parse(pool, "ml_pipelines.PipelineDeploymentConfig", spec["deploymentSpec"])
    _parse(pool, "ml_pipelines.PlatformSpec", platform)
    for name, config in _executor_configs(platform).items():
        kept, dropped = _driver_parse(pool, config)
        assert dropped == NEW_IN_2_17 & set(config), (name, dropped)
        assert set(kept) == set(config) - dropped, (name, set(kept) ^ set(config))
        _parse(pool, "kfp_kubernetes.KubernetesExecutorConfig", {
            k: v for k, v in config.items() if k not in NEW_IN_2_17
        })  # fmt: skip


def test_ir_parses_against_the_minimum_backend_protos_as_its_driver_does(ir: tuple) -> None:
    """Every field of the IR exists in KFP 2.15.0's protos (vendored), but the security context,
    which every step carries and a 2.15 driver drops."""
    _parse_all(_pool(MINIMUM_KFP_BACKEND), ir)
    configs = _executor_configs(ir[1]).values()
    uid = str(IMAGE_UID)  # int64 in proto JSON
    expected = {"runAsUser": uid, "runAsGroup": uid, "runAsNonRoot": True}
    assert all(c["securityContext"] == expected for c in configs)


def test_the_driver_parse_keeps_what_2_15_knows(ir: tuple) -> None:
    """The lenient parse has teeth too: it drops an unknown field and keeps every known one,
    with its value (a dropped known field would mean a setting silently lost)."""
    config = next(c for c in _executor_configs(ir[1]).values() if c.get("secretAsEnv"))
    kept, dropped = _driver_parse(_pool(MINIMUM_KFP_BACKEND), {**config, "madeUpField": 1})
    assert dropped == {"madeUpField", "securityContext"}
    assert kept["secretAsEnv"] == config["secretAsEnv"]
    with pytest.raises(json_format.ParseError, match="securityContext"):
        _parse(_pool(MINIMUM_KFP_BACKEND), "kfp_kubernetes.KubernetesExecutorConfig", config)


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
    for full in with_secret:
        config = {k: v for k, v in full.items() if k not in NEW_IN_2_17}
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
