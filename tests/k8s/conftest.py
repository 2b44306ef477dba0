"""Fixtures of the job-control tests: the stand-in Kubernetes API and a client for it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kube_standin import KubeStandIn, serve

NAMESPACE = "team-a"


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeStandIn]:
    """The stand-in API server; ``$KUBECONFIG`` points the real ``kubernetes`` client at it."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = tmp_path / "kubeconfig"
    with serve(config) as state:
        monkeypatch.setenv("KUBECONFIG", str(config))
        yield state


@pytest.fixture
def api(kube: KubeStandIn):
    """:class:`pipelines.k8s_resources.Resources` of namespace team-a, through the kubeconfig."""
    from pipelines.k8s_resources import Resources

    return Resources(NAMESPACE)
