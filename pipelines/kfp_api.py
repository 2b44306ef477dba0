"""Talking to a Kubeflow Pipelines API server (v2beta1) through ``kfp.Client``.

Credentials come only from the environment: ``KF_PIPELINES_TOKEN`` (bearer token),
``KF_PIPELINES_COOKIE`` (Dex / oauth2-proxy session, ``authservice_session=...``),
``KF_PIPELINES_SA_TOKEN_PATH`` (a projected service-account token file), else none.
``KF_PIPELINES_ENDPOINT`` is the host when ``--host`` is not given.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.cli import HTTP_URL
from rfdetr.errors import EXIT_FAILED, UserError

if TYPE_CHECKING:
    import kfp

    from pipelines.kfp_package import PipelinePackage

logger = logging.getLogger(__name__)

HOST_ENV = "KF_PIPELINES_ENDPOINT"


@contextlib.contextmanager
def kfp_errors(host: str, action: str) -> Iterator[None]:
    """One-line UserErrors (exit 1) for API, network and kfp errors; kfp's prints to debug logs."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    buffer = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
            warnings.simplefilter("ignore", FutureWarning)
            yield
    except ApiException as exc:
        detail = api_message(exc.body) or exc.reason
        raise UserError(
            f"{action}: KFP API at {host} answered {exc.status}: {detail}", EXIT_FAILED
        ) from None
    except HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(f"{action}: cannot reach KFP at {host}: {reason}", EXIT_FAILED) from None
    except (TimeoutError, ValueError) as exc:
        raise UserError(f"{action}: {exc}", EXIT_FAILED) from None
    finally:
        for line in buffer.getvalue().splitlines():
            logger.debug("kfp: %s", line)


def api_message(body: str | bytes | None) -> str:
    """The ``message`` (or ``error``) of a JSON error body, else its first line (a proxy's page)."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text or "{}")
    except ValueError:
        return (str(text).strip().splitlines() or [""])[0][:200]
    return str(doc.get("message") or doc.get("error") or "")[:300] if isinstance(doc, dict) else ""


def resolve_host(host: str | None) -> str:
    """``host`` (or $KF_PIPELINES_ENDPOINT) checked and without a trailing slash."""
    host = (host or os.environ.get(HOST_ENV, "")).strip()
    if not HTTP_URL.match(host):
        raise UserError(f"--host {host!r}: expected http(s)://host[:port] (or set {HOST_ENV})")
    return host.rstrip("/")


def connect(host: str, namespace: str | None = None, ca_cert: str | None = None) -> kfp.Client:
    """A ``kfp.Client`` for ``host`` (from :func:`resolve_host`), keys from the environment."""
    from kfp import Client
    from kfp.client import ServiceAccountTokenVolumeCredentials

    if not logger.isEnabledFor(logging.DEBUG):
        # urllib3 logs each retry of a dead host as a WARNING; our one-line error says it all
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    token = os.environ.get("KF_PIPELINES_TOKEN") or None
    sa_token_path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH")
    credentials = None
    if token is None and sa_token_path:
        credentials = ServiceAccountTokenVolumeCredentials(sa_token_path)
    with kfp_errors(host, "connecting"):
        return Client(
            host=host,
            namespace=namespace or "kubeflow",
            existing_token=token,
            cookies=os.environ.get("KF_PIPELINES_COOKIE") or None,
            credentials=credentials,
            ssl_ca_cert=ca_cert,
        )  # kfp checks /healthz here unless a namespace is set in its context file


@dataclass(frozen=True)
class UploadedVersion:
    """The pipeline version a run or schedule uses; ``reused``: it held this YAML already."""

    pipeline_id: str
    version_id: str
    version_name: str
    new_pipeline: bool
    reused: bool = False

    @classmethod
    def of(
        cls, pipeline_id: str, version: Any, new_pipeline: bool = False, reused: bool = False
    ) -> UploadedVersion:
        name = version.display_name
        return cls(pipeline_id, version.pipeline_version_id, name, new_pipeline, reused)


CONTENT_MARK = "content sha256:"
_CONTENT_HASH = re.compile(re.escape(CONTENT_MARK) + r"([0-9a-f]{64})")


def _content_hash(version: Any) -> str | None:
    match = _CONTENT_HASH.search(version.description or "")
    return match.group(1) if match else None


def content_description(package: PipelinePackage) -> str:
    """Every upload's description (the UI shows it): usage and the YAML's sha256."""
    mark = f"rfdetr-pipeline upload of {package.path.name}; {CONTENT_MARK}{package.sha256}"
    return f"{package.usage()} {mark}"


def _name_filter(name: str) -> str:
    return json.dumps(
        {"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]}
    )


def upload_version(
    client: kfp.Client,
    package: PipelinePackage,
    pipeline_name: str,
    version_name: str,
    host: str,
    *,
    reuse: bool = False,
    namespace: str | None = None,
) -> UploadedVersion:
    """Upload ``package`` as version ``version_name`` of ``pipeline_name`` (created if needed).

    A new pipeline's first version is the upload itself (named after the pipeline). Versions are
    immutable: an existing name is refused unless ``reuse`` is set and it holds this YAML (sha256
    in its description); with ``reuse`` any version holding this YAML is used (submit + schedule
    of a release, re-runs, rollbacks). With ``namespace``, a private pipeline there: multi-user
    KFP authorizes a shared one in its own namespace (``canUploadVersionedPipeline``).
    """
    description = content_description(package)
    with kfp_errors(host, f"uploading pipeline {pipeline_name!r}"):
        found = client.list_pipelines(
            filter=_name_filter(pipeline_name), page_size=2, namespace=namespace
        ).pipelines
        if found and len(found) > 1:
            raise ValueError(
                f"more than one pipeline is named {pipeline_name!r}; pass --pipeline-name"
            )
        if not found:
            pipeline_id = client.upload_pipeline(
                str(package.path), pipeline_name, description, namespace=namespace
            ).pipeline_id
            first = client.list_pipeline_versions(
                pipeline_id, page_size=1, sort_by="created_at desc"
            )
            if not first.pipeline_versions:
                raise UserError(
                    f"KFP at {host} created pipeline {pipeline_id} without a version", EXIT_FAILED
                )
            return UploadedVersion.of(pipeline_id, first.pipeline_versions[0], new_pipeline=True)
        pipeline_id = found[0].pipeline_id
        named = client.list_pipeline_versions(pipeline_id, filter=_name_filter(version_name))
        if named.pipeline_versions:
            _check_reusable(named.pipeline_versions[0], package, pipeline_name, version_name, reuse)
            return UploadedVersion.of(pipeline_id, named.pipeline_versions[0], reused=True)
        same = _version_holding(client, pipeline_id, package.sha256) if reuse else None
        if same is not None:
            return UploadedVersion.of(pipeline_id, same, reused=True)
        version = client.upload_pipeline_version(
            str(package.path),
            pipeline_version_name=version_name,
            pipeline_id=pipeline_id,
            description=description,
        )
        return UploadedVersion(pipeline_id, version.pipeline_version_id, version_name, False)


def _version_holding(client: kfp.Client, pipeline_id: str, sha256: str) -> Any | None:
    token = ""
    while True:
        page = client.list_pipeline_versions(
            pipeline_id, page_token=token, page_size=100, sort_by="created_at desc"
        )
        for version in page.pipeline_versions or []:
            if _content_hash(version) == sha256:
                return version
        token = page.next_page_token or ""
        if not token:
            return None


def _check_reusable(
    found: Any, package: PipelinePackage, pipeline_name: str, version_name: str, reuse: bool
) -> None:
    where = f"pipeline {pipeline_name!r} already has a version {version_name!r}"
    where += f" (id {found.pipeline_version_id})"
    recorded = _content_hash(found)
    if not reuse:
        raise UserError(
            f"{where}; pass another --version-name, or --reuse-version to use it when it holds "
            "this same YAML"
        )
    if recorded is None:
        raise UserError(
            f"{where} that was not uploaded by rfdetr-pipeline (no content hash in its "
            "description), so it cannot be known to hold this YAML; pass another --version-name"
        )
    if recorded != package.sha256:
        raise UserError(
            f"{where} holding a different YAML (sha256 {recorded[:12]}..., this file "
            f"{package.sha256[:12]}...); pass another --version-name"
        )


TERMINAL_RUN_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")


def wait_for_run(
    client: kfp.Client,
    host: str,
    run_id: str,
    timeout_s: float,
    poll_s: float = 15.0,
    *,
    terminate_on_abort: bool = False,
) -> str:
    """Poll run ``run_id`` until it ends (CANCELED too, unlike kfp's
    ``wait_for_run_completion``); returns its state, one of TERMINAL_RUN_STATES.

    Raises UserError (exit 1) after ``timeout_s``. With ``terminate_on_abort``, a wait ending
    first (timeout, Ctrl-C, SIGTERM of a cancelled CI job) terminates the run.
    """
    import signal

    # SIGTERM (a cancelled CI job) raises KeyboardInterrupt, as Ctrl-C does
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with kfp_errors(host, f"waiting for run {run_id}"):
                last = str(client.get_run(run_id).state or "PENDING").upper()
            if last in TERMINAL_RUN_STATES:
                return last
            if time.monotonic() + poll_s > deadline:
                raise UserError(
                    f"run {run_id} still {last} after {timeout_s:.0f} s: "
                    f"{host}/#/runs/details/{run_id}",
                    EXIT_FAILED,
                )
            logger.info("run %s: %s", run_id, last)
            time.sleep(poll_s)
    except (UserError, KeyboardInterrupt):
        if terminate_on_abort:
            with kfp_errors(host, f"terminating run {run_id}"):
                client.terminate_run(run_id)
            logger.warning("terminated run %s (the wait for it ended first)", run_id)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def create_schedule(
    client: kfp.Client,
    host: str,
    experiment_id: str,
    version: UploadedVersion,
    name: str,
    cron: str,
    params: dict[str, Any],
    *,
    max_concurrency: int = 1,
    catchup: bool = False,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    replace: bool = False,
    delete_old: bool = False,
) -> tuple[str, list[str]]:
    """Create a recurring run on ``version``; returns (its id, ids of the ones it replaced).
    ``replace``: enabled ones of that name in the experiment are disabled once the new one exists;
    ``delete_old``: all of them (any state) are deleted instead."""
    with kfp_errors(host, f"scheduling {name!r}"):
        previous = []
        if replace:
            listing = client.list_recurring_runs(
                experiment_id=experiment_id, filter=_name_filter(name), page_size=100
            )
            runs = listing.recurring_runs or []
            previous = [r.recurring_run_id for r in runs if delete_old or r.mode != "DISABLE"]
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params=params,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
        retire = client.delete_recurring_run if delete_old else client.disable_recurring_run
        for old in previous:
            retire(old)
    return str(job.recurring_run_id), previous
