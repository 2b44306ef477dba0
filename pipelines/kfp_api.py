"""Talking to a Kubeflow Pipelines API server (v2beta1) through ``kfp.Client``.

Authentication comes only from the environment:

* ``KF_PIPELINES_TOKEN``: a bearer token (CI secret, ``kubectl create token ...``);
* ``KF_PIPELINES_COOKIE``: a session cookie for Dex / oauth2-proxy fronted installs
  (``authservice_session=...``);
* ``KF_PIPELINES_SA_TOKEN_PATH``: a projected service-account token file (in-cluster jobs;
  kfp's own variable);
* none of these: no credentials (port-forwarded or open endpoints).

``KF_PIPELINES_ENDPOINT`` (kfp's own variable) is the host when ``--host`` is not given.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.cli import EXIT_FAILURE, CommandError

if TYPE_CHECKING:
    import kfp

logger = logging.getLogger(__name__)

TOKEN_ENV = "KF_PIPELINES_TOKEN"
COOKIE_ENV = "KF_PIPELINES_COOKIE"
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
HOST_ENV = "KF_PIPELINES_ENDPOINT"
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#\-]+$")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class ParamSpec:
    """One pipeline parameter of the compiled YAML (``root.inputDefinitions.parameters``)."""

    name: str
    type: str  # STRING, NUMBER_INTEGER, NUMBER_DOUBLE, BOOLEAN, LIST, STRUCT
    required: bool


@dataclass(frozen=True)
class PipelinePackage:
    """A compiled pipeline YAML: its path, ``pipelineInfo.name`` and parameters."""

    path: Path
    name: str
    parameters: dict[str, ParamSpec]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PipelinePackage:
        import yaml

        file = Path(path)
        try:
            docs = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
        except OSError as exc:
            raise CommandError(f"{file}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise CommandError(f"{file}: not YAML: {str(exc).splitlines()[0]}") from None
        spec = next((d for d in docs if isinstance(d, dict) and "pipelineInfo" in d), None)
        if spec is None or "root" not in spec:
            raise CommandError(f"{file}: not a compiled KFP v2 pipeline (no pipelineInfo/root)")
        raw = spec["root"].get("inputDefinitions", {}).get("parameters", {}) or {}
        params = {
            name: ParamSpec(
                name,
                str(item.get("parameterType", "STRING")),
                "defaultValue" not in item and not item.get("isOptional", False),
            )
            for name, item in raw.items()
        }
        return cls(file, str(spec["pipelineInfo"]["name"]), params)


def _coerce(spec: ParamSpec, value: Any, from_text: bool) -> Any:
    """``value`` as the JSON type of ``spec``; CLI text is parsed, file values are checked."""
    kind = spec.type
    try:
        if kind == "STRING":
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
        if kind == "BOOLEAN":
            if isinstance(value, bool):
                return value
            if from_text and value.strip().lower() in _BOOLS:
                return _BOOLS[value.strip().lower()]
            raise ValueError("expected true or false")
        if from_text:
            value = json.loads(value)
        if kind == "NUMBER_INTEGER":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("expected an integer")
            return value
        if kind == "NUMBER_DOUBLE":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError("expected a number")
            return float(value)
        if (kind == "LIST" and isinstance(value, list)) or (
            kind == "STRUCT" and isinstance(value, dict)
        ):
            return value
        raise ValueError(f"expected a JSON {'list' if kind == 'LIST' else 'object'}")
    except (ValueError, TypeError, AttributeError) as exc:
        raise CommandError(f"parameter {spec.name}={value!r}: {exc}") from None


def build_params(
    package: PipelinePackage, cli_pairs: list[str], params_file: Path | None = None
) -> dict[str, Any]:
    """Pipeline arguments from ``--params-file`` (JSON/YAML mapping) then ``--param k=v``.

    Names are checked against the compiled pipeline (with a close-match hint), values coerced to
    the declared types, and required parameters without a default must be given.
    """
    values: dict[str, tuple[Any, bool]] = {}
    if params_file is not None:
        import yaml

        try:
            doc = yaml.safe_load(params_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise CommandError(f"{params_file}: cannot read parameters: {exc}") from None
        if not isinstance(doc, dict):
            raise CommandError(f"{params_file}: expected a mapping of parameter names to values")
        values.update({str(k): (v, False) for k, v in doc.items()})
    for pair in cli_pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"--param {pair!r}: expected NAME=VALUE")
        values[name.strip()] = (text, True)
    known = package.parameters
    params = {}
    for name, (value, from_text) in values.items():
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
            )
            raise CommandError(f"unknown pipeline parameter {name!r}{hint}")
        params[name] = _coerce(known[name], value, from_text)
    missing = sorted(n for n, s in known.items() if s.required and n not in params)
    if missing:
        raise CommandError(f"missing required pipeline parameter(s): {', '.join(missing)}")
    return params


def validate_cron(expression: str) -> str:
    """Return ``expression`` when it is a 6-field KFP cron (seconds first); else CommandError."""
    fields = expression.split()
    if len(fields) == 5:
        raise CommandError(
            f"cron {expression!r} has 5 fields, but KFP's cron has 6, seconds first "
            f"(a 5-field expression would fire far more often than meant); "
            f"did you mean '0 {expression.strip()}'?"
        )
    if len(fields) != 6:
        raise CommandError(
            f"cron {expression!r} has {len(fields)} field(s); KFP's cron has 6: "
            "second minute hour day-of-month month day-of-week, e.g. '0 0 3 * * 1' (Mondays 03:00)"
        )
    bad = [f for f in fields if not _CRON_FIELD.match(f)]
    if bad:
        raise CommandError(
            f"cron {expression!r}: field {bad[0]!r} has characters cron does not use"
        )
    return " ".join(fields)


@contextlib.contextmanager
def kfp_errors(host: str, action: str) -> Iterator[None]:
    """One-line CommandErrors (exit 1) for API, network and kfp client errors."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as exc:
        body = (
            (exc.body or b"").decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
        )
        detail = _api_message(body) or exc.reason
        raise CommandError(
            f"{action}: KFP API at {host} answered {exc.status}: {detail}", EXIT_FAILURE
        ) from None
    except HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise CommandError(
            f"{action}: cannot reach KFP at {host}: {reason}", EXIT_FAILURE
        ) from None
    except (TimeoutError, ValueError) as exc:
        raise CommandError(f"{action}: {exc}", EXIT_FAILURE) from None


def _api_message(body: str | None) -> str:
    if not body:
        return ""
    try:
        doc = json.loads(body)
    except ValueError:
        return body.strip().splitlines()[0][:200]
    return str(doc.get("message") or doc.get("error") or "")[:300] if isinstance(doc, dict) else ""


@contextlib.contextmanager
def _quiet_kfp() -> Iterator[None]:
    """kfp.Client prints links and warns about versions; route that to debug logging."""
    buffer = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            logger.debug("kfp: %s", line)


def resolve_host(host: str | None) -> str:
    """``host`` (or $KF_PIPELINES_ENDPOINT) checked and without a trailing slash."""
    host = (host or os.environ.get(HOST_ENV, "")).strip()
    if not re.match(r"^https?://[^/\s]+", host):
        raise CommandError(f"--host {host!r}: expected http(s)://host[:port] (or set {HOST_ENV})")
    return host.rstrip("/")


def connect(
    host: str | None, namespace: str | None = None, ca_cert: str | None = None
) -> kfp.Client:
    """A ``kfp.Client`` for ``host`` (or $KF_PIPELINES_ENDPOINT), keys from the environment."""
    from kfp import Client
    from kfp.client import ServiceAccountTokenVolumeCredentials

    host = resolve_host(host)
    token = os.environ.get(TOKEN_ENV) or None
    credentials = None
    if token is None and os.environ.get(SA_TOKEN_PATH_ENV):
        credentials = ServiceAccountTokenVolumeCredentials(os.environ[SA_TOKEN_PATH_ENV])
    with kfp_errors(host, "connecting"), _quiet_kfp():
        client = Client(
            host=host,
            namespace=namespace or "kubeflow",
            existing_token=token,
            cookies=os.environ.get(COOKIE_ENV) or None,
            credentials=credentials,
            ssl_ca_cert=ca_cert,
        )  # kfp checks /healthz here unless a namespace is set in its context file
    return client


@dataclass(frozen=True)
class UploadedVersion:
    pipeline_id: str
    version_id: str
    version_name: str
    new_pipeline: bool


def default_version_name(pipeline_name: str) -> str:
    return f"{pipeline_name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def _name_filter(name: str) -> str:
    return json.dumps(
        {"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]}
    )


def ensure_experiment(client: kfp.Client, name: str, namespace: str | None, host: str) -> str:
    """The id of experiment ``name``, created when missing."""
    with kfp_errors(host, f"experiment {name!r}"), _quiet_kfp():
        return str(client.create_experiment(name=name, namespace=namespace).experiment_id)


def upload_version(
    client: kfp.Client, package: PipelinePackage, pipeline_name: str, version_name: str, host: str
) -> UploadedVersion:
    """Upload ``package`` as a new version of ``pipeline_name``, creating the pipeline if needed.

    A new pipeline gets its first version from the upload itself (KFP names it after the
    pipeline). An existing version name is refused: KFP versions are immutable, so re-using a
    name would silently run the old spec.
    """
    with kfp_errors(host, f"uploading pipeline {pipeline_name!r}"), _quiet_kfp():
        pipeline_id = client.get_pipeline_id(pipeline_name)
        if pipeline_id is None:
            pipeline = client.upload_pipeline(str(package.path), pipeline_name=pipeline_name)
            listing = client.list_pipeline_versions(
                pipeline.pipeline_id, page_size=1, sort_by="created_at desc"
            )
            if not listing.pipeline_versions:
                raise CommandError(
                    f"KFP at {host} created pipeline {pipeline.pipeline_id} without a version",
                    EXIT_FAILURE,
                )
            first = listing.pipeline_versions[0]
            return UploadedVersion(
                pipeline.pipeline_id, first.pipeline_version_id, first.display_name, True
            )
        existing = client.list_pipeline_versions(pipeline_id, filter=_name_filter(version_name))
        if existing.pipeline_versions:
            raise CommandError(
                f"pipeline {pipeline_name!r} already has a version {version_name!r} "
                f"(id {existing.pipeline_versions[0].pipeline_version_id}); "
                "pass another --version-name"
            )
        version = client.upload_pipeline_version(
            str(package.path), pipeline_version_name=version_name, pipeline_id=pipeline_id
        )
        return UploadedVersion(pipeline_id, version.pipeline_version_id, version_name, False)


def start_run(
    client: kfp.Client,
    host: str,
    experiment_id: str,
    version: UploadedVersion,
    run_name: str,
    params: dict[str, Any],
    *,
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> str:
    """Start a run of the uploaded version; returns the run id."""
    with kfp_errors(host, f"starting run {run_name!r}"), _quiet_kfp():
        run = client.run_pipeline(
            experiment_id=experiment_id,
            job_name=run_name,
            params=params,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
    return str(run.run_id)


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
) -> tuple[str, list[str]]:
    """Create a recurring run on ``version``; returns (its id, ids of the ones it disabled).

    With ``replace``, enabled recurring runs of the same name in the experiment are disabled
    after the new one exists (so a failure never leaves no schedule at all).
    """
    with kfp_errors(host, f"scheduling {name!r}"), _quiet_kfp():
        previous = []
        if replace:
            listing = client.list_recurring_runs(
                experiment_id=experiment_id, filter=_name_filter(name), page_size=100
            )
            previous = [
                r.recurring_run_id for r in listing.recurring_runs or [] if r.mode != "DISABLE"
            ]
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name,
            cron_expression=validate_cron(cron),
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params=params,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
        for old in previous:
            client.disable_recurring_run(old)
    return str(job.recurring_run_id), previous
