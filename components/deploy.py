"""The ``deploy`` component: serve the published model with a KServe InferenceService."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output

from components._image import RFDETR_IMAGE


@dsl.component(base_image=RFDETR_IMAGE, install_kfp_package=False)
def deploy(
    published_uri: str,
    endpoint: Output[Artifact],
    deploy_name: str = "",
    canary_traffic_percent: int = 0,
    min_replicas: int = 1,
    max_replicas: int = 1,
    serving: dict = {},  # noqa: B006 (a KFP constant input, never mutated)
) -> NamedTuple("DeployOutputs", [("url", str)]):
    """Apply an InferenceService running ``rfdetr serve`` on the published version, wait until
    it is Ready, send it one test image and record the endpoint.

    Args:
        published_uri: the published version's prefix (publish's ``uri``).
        endpoint: output; its metadata: name, namespace, url, model URI, generation, canary.
        deploy_name: the InferenceService's name; empty: the model's folder name.
        canary_traffic_percent: share of traffic for the new version beside the old; 0: all.
        min_replicas: fewest predictor pods (0: scale to zero when idle).
        max_replicas: most predictor pods.
        serving: the predictor's image, resources, secret and timeout (compile settings).

    Returns:
        url: the endpoint's URL (Open Inference Protocol v2 at /v2/models/rfdetr).
    """
    from collections import namedtuple

    from pipelines.steps.common import step_errors
    from pipelines.steps.deploy import deploy_model

    with step_errors("deploy"):
        result = deploy_model(
            published_uri,
            name=deploy_name,
            settings=serving,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            canary_percent=canary_traffic_percent,
        )
    endpoint.metadata.update(result.metadata())
    endpoint.uri = result.url  # what the UI links: the endpoint itself
    return namedtuple("DeployOutputs", ["url"])(result.url)
