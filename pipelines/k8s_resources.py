"""Kubernetes custom resources a pipeline step hands work to (``train``: Trainer or Training
Operator; ``deploy``: KServe): create or attach (a retried step's 409), poll until a :data:`Judge`
decides, log new conditions, delete; failures are one-line :class:`StepError` messages.

Only namespaced custom-object calls (POST, GET, PATCH, DELETE) and pods list / ``pods/log`` are
used: what manifests/pipeline-runner/rbac.yaml grants.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines._platform import SECRET_KEYS
from pipelines.kfp_api import api_message
from pipelines.steps.common import StepError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    """A custom resource type: API group, version, plural and kind."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def manifest(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """An object of this kind, labelled part of rfdetr."""
        meta = {"name": name, "labels": {"app.kubernetes.io/part-of": "rfdetr"}}
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta, "spec": spec}


@dataclass(frozen=True)
class Verdict:
    """A :data:`Judge`'s conclusion: finished, ``failed`` or not, with the object's reason."""

    failed: bool
    reason: str = ""


Judge = Callable[[dict[str, Any]], "Verdict | None"]  # None: not finished yet


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The ``status.conditions`` entry of type ``kind`` whose status is ``"True"``, or None."""
    for entry in (obj.get("status") or {}).get("conditions") or []:
        if entry.get("type") == kind and entry.get("status") == "True":
            return entry
    return None


def reason_of(entry: dict[str, Any]) -> str:
    """``reason: message`` of a condition, on one line."""
    text = ": ".join(p for p in (entry.get("reason"), entry.get("message")) if p)
    return " ".join(text.split()) or entry.get("type", "")


def object_store_env(secret: str) -> list[dict[str, Any]]:
    """Container env for the object store: this pod's endpoint variables and the keys from
    ``secret`` (``accesskey``/``secretkey``, as the pipeline's own steps get them)."""
    endpoint = (f"OBJECTSTORECONFIG_{part}" for part in ("HOST", "PORT", "SECURE"))
    env = [{"name": k, "value": os.environ[k]} for k in endpoint if k in os.environ]
    for key, var in SECRET_KEYS.items():
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return env


def requirements(cpu: str, memory: str, accelerator: str = "", count: int = 0) -> dict:
    """A container's ``resources``: the same requests and limits (and ``count`` accelerators)."""
    amounts: dict[str, str] = {"cpu": cpu, "memory": memory}
    if count > 0:
        amounts[accelerator] = str(count)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _short(exc: Any) -> str:
    return f"HTTP {exc.status} {api_message(exc.body) or exc.reason}".strip()


class Resources:
    """Custom objects of one namespace (default: the pod's own), through the ``kubernetes``
    client (``api_client`` default: in-cluster, else ``$KUBECONFIG`` / ~/.kube)."""

    def __init__(self, namespace: str = "", api_client: Any | None = None) -> None:
        from kubernetes import client, config

        try:
            if api_client is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()
            elif api_client is None:  # the client reads $KUBECONFIG once, at import: pass it on
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except config.ConfigException as exc:
            raise StepError(f"no Kubernetes API access: {' '.join(str(exc).split())}") from None
        if not namespace:
            mount = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            namespace = mount.read_text().strip() if mount.is_file() else ""
        self.namespace = namespace or "default"
        self._client = api_client or client.ApiClient()
        self.custom = client.CustomObjectsApi(self._client)
        self.core = client.CoreV1Api(self._client)
        self._logs_denied = False
        self._last_log = ""

    def _call(
        self, what: str, fn: Callable[..., Any], *args: Any, expect: int = 0, **kwargs: Any
    ) -> Any:
        """``fn(...)`` with one-line `StepError`s; an API error of status ``expect``: None."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == expect:
                return None
            raise StepError(f"{what} in namespace {self.namespace}: {_short(exc)}") from None
        except HTTPError as exc:
            raise StepError(f"{what}: Kubernetes API unreachable ({exc})") from None

    def _args(self, kind: Kind) -> tuple[str, str, str, str]:
        return kind.group, kind.version, self.namespace, kind.plural

    def get(self, kind: Kind, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none (404)."""
        read = self.custom.get_namespaced_custom_object
        return self._call(f"reading {kind.kind} {name}", read, *self._args(kind), name, expect=404)

    def create_or_attach(
        self, kind: Kind, body: dict[str, Any], *, update: bool = False
    ) -> dict[str, Any]:
        """Create ``body``, or attach to the existing one (``update``: merge-patched with its spec
        first); returns the object as the API server has it."""
        name = body["metadata"]["name"]
        create = self.custom.create_namespaced_custom_object
        created = self._call(
            f"creating {kind.kind} {name}", create, *self._args(kind), body, expect=409
        )
        if created is not None:
            logger.info("created %s %s/%s", kind.kind, self.namespace, name)
            return created
        if update:
            labels = body["metadata"].get("labels", {})
            patch = {"metadata": {"labels": labels}, "spec": body["spec"]}
            logger.info("%s %s exists: updating it", kind.kind, name)
            update_it = self.custom.patch_namespaced_custom_object
            return self._call(
                f"updating {kind.kind} {name}", update_it, *self._args(kind), name, patch
            )
        logger.info("%s %s exists (a retried step): attaching to it", kind.kind, name)
        found = self.get(kind, name)
        if found is None:  # deleted between the two calls: start over once
            return self.create_or_attach(kind, body)
        return found

    def delete(self, kind: Kind, name: str) -> bool:
        """Delete the object and its dependents (background); False when it was not there."""
        what, delete = f"deleting {kind.kind} {name}", self.custom.delete_namespaced_custom_object
        background = {"propagation_policy": "Background"}
        if self._call(what, delete, *self._args(kind), name, expect=404, **background) is None:
            return False
        logger.info("deleted %s %s/%s", kind.kind, self.namespace, name)
        return True

    def wait(
        self,
        kind: Kind,
        name: str,
        judge: Judge,
        *,
        timeout_s: float,
        poll_s: float = 10.0,
        log_selector: str = "",
    ) -> dict[str, Any]:
        """Poll the object until ``judge`` decides; returns it when it succeeded. Logs each new
        condition once and, with ``log_selector``, the first matching pod's new log lines.

        Raises:
            StepError: it failed (with its reason), vanished, or ``timeout_s`` passed.
        """
        deadline = time.monotonic() + timeout_s
        seen: set[tuple[str, str, str]] = set()
        last = ""
        while True:
            obj = self.get(kind, name)
            if obj is None:
                raise StepError(f"{kind.kind} {name} was deleted while the step waited for it")
            for entry in (obj.get("status") or {}).get("conditions") or []:
                key = (entry.get("type", ""), entry.get("status", ""), entry.get("reason", ""))
                if key not in seen:
                    seen.add(key)
                    last = f"{key[0]}={key[1]} {reason_of(entry)}".strip()
                    logger.info("%s %s: %s", kind.kind, name, last)
            if log_selector:
                self._copy_log(log_selector)
            verdict = judge(obj)
            if verdict is not None:
                if verdict.failed:
                    raise StepError(f"{kind.kind} {name} failed: {verdict.reason}")
                return obj
            if time.monotonic() >= deadline:
                raise StepError(
                    f"{kind.kind} {name}: not finished after {timeout_s:g}s (last condition: "
                    f"{last or 'none'}); it is left running for inspection"
                )
            time.sleep(poll_s)

    def apply_and_wait(
        self,
        kind: Kind,
        body: dict[str, Any],
        judge: Judge,
        settings: dict[str, Any],
        *,
        update: bool = False,
        log_selector: str = "",
    ) -> dict[str, Any]:
        """:meth:`create_or_attach` ``body``, then :meth:`wait` for it (``settings``' ``timeout_s``
        and ``poll_s``); returns the finished object."""
        self.create_or_attach(kind, body, update=update)
        timing = {"timeout_s": float(settings["timeout_s"]), "poll_s": float(settings["poll_s"])}
        return self.wait(kind, body["metadata"]["name"], judge, log_selector=log_selector, **timing)

    def _copy_log(self, selector: str) -> None:
        from kubernetes.client.exceptions import ApiException

        if self._logs_denied:
            return
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
            if not pods:
                return
            pod = pods[0].metadata.name
            text = self.core.read_namespaced_pod_log(
                pod, self.namespace, timestamps=True, tail_lines=200
            )
        except ApiException as exc:
            if exc.status in (401, 403):
                self._logs_denied = True
                logger.info("no access to worker logs (%s); following conditions only", _short(exc))
            return  # a pod not started yet (400) or gone: try again at the next poll
        for line in (text or "").splitlines():
            if line > self._last_log:  # RFC 3339 timestamps sort as text
                logger.info("%s | %s", pod, line)
                self._last_log = line
