"""``rfdetr-pipeline submit`` and ``schedule``: deploy a compiled pipeline YAML (server calls:
:mod:`pipelines.kfp_api`); inputs are checked before the server is contacted."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from pipelines.cli import Option, Subparsers, add_options, duration_s
from rfdetr.errors import EXIT_FAILED, UserError

DEFAULT_EXPERIMENT = "rfdetr"


def _duration(text: str) -> float:
    seconds = duration_s(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 600s, 90m or 3h")
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive duration")
    return seconds


# Each command's options (E501 is off for this file: one option a line).
# fmt: off
_COMMON: tuple[Option, ...] = (
    ("package", "compiled pipeline", {"metavar": "PIPELINE_YAML", "type": Path}),
    ("--host", "KFP API endpoint, http(s)://host[:port] (default: $KF_PIPELINES_ENDPOINT)", {}),
    ("--namespace", "Kubernetes namespace (multi-user installs)", {}),
    ("--ca-cert", "CA bundle to verify the endpoint's TLS certificate", {}),
    ("--experiment", f"default: {DEFAULT_EXPERIMENT}", {"default": DEFAULT_EXPERIMENT}),
    ("--pipeline-name", "default: the YAML's pipelineInfo.name", {}),
    ("--version-name", "new version's name, e.g. a git SHA (default: '<pipeline>-<UTC time>')", {}),
    ("--reuse-version", "use a version that already holds this same YAML (sha256): the one named --version-name, else any, instead of uploading it again (one version per release for submit + schedule, safe re-runs and rollbacks); a different YAML under that name is still refused", {"action": "store_true"}),
    ("--param", "pipeline argument (repeatable); numbers, lists and dicts as JSON", {"action": "append", "default": [], "metavar": "NAME=VALUE"}),
    ("--params-file", "JSON or YAML mapping of arguments", {"type": Path}),
    ("--pipeline-root", "artifact root for the run, e.g. s3://bucket/prefix", {}),
    ("--service-account", "Kubernetes service account for the run", {}),
)
_SUBMIT: tuple[Option, ...] = (
    ("--run-name", "run display name (default: '<pipeline> <UTC time>')", {}),
    ("--wait", "follow the run to its end; exit 0 only when it SUCCEEDED (1 otherwise)", {"action": "store_true"}),
    ("--timeout", "with --wait: give up after this long, e.g. 90m, 3h, 600s (default 3h; exit 1)", {"type": _duration, "default": _duration("3h"), "metavar": "DURATION"}),
    ("--terminate-on-abort", "with --wait: terminate the run when the wait ends first (timeout, Ctrl-C, SIGTERM of a cancelled CI job)", {"action": "store_true"}),
    ("--poll", argparse.SUPPRESS, {"type": _duration, "default": 15.0, "metavar": "DURATION"}),
)
_SCHEDULE: tuple[Option, ...] = (
    ("--cron", "6-field cron, seconds first", {"required": True}),
    ("--name", "recurring run name (default: '<pipeline> schedule')", {}),
    ("--max-concurrency", "runs allowed at once (default 1)", {"type": int, "default": 1}),
    ("--catchup", "backfill missed intervals (default: no catch-up)", {"action": "store_true"}),
    ("--replace", "disable enabled recurring runs of the same name in the experiment once created", {"action": "store_true"}),
    ("--delete-old", "with --replace: delete the other recurring runs of that name (enabled or disabled) instead of disabling them", {"action": "store_true"}),
)
# kfp_api.create_schedule's keywords: the options of the same names
_KEYWORDS = ("max_concurrency", "catchup", "pipeline_root", "service_account", "replace", "delete_old")
# fmt: on


def add_parser(subparsers: Subparsers) -> None:
    submit = subparsers.add_parser(
        "submit",
        help="upload a compiled pipeline (new version) and start a run on Kubeflow",
        description=(
            "Upload PIPELINE_YAML as a new version of the pipeline (created on first use), in an "
            "experiment created or reused by name, and start a run with the given parameters. "
            "Credentials: KF_PIPELINES_TOKEN (bearer), KF_PIPELINES_COOKIE or "
            "KF_PIPELINES_SA_TOKEN_PATH from the environment."
        ),
    )
    add_options(submit, _COMMON + _SUBMIT)
    submit.set_defaults(handler=_run_submit)
    schedule = subparsers.add_parser(
        "schedule",
        help="upload a compiled pipeline (new version) and create a recurring run on it",
        description=(
            "Like submit, but creates a recurring run on the uploaded version. KFP's cron has 6 "
            "fields, seconds first: '0 0 3 * * 1' is Mondays at 03:00; 5-field expressions are "
            "rejected."
        ),
    )
    add_options(schedule, _COMMON + _SCHEDULE)
    schedule.set_defaults(handler=_run_schedule)


def _prepare(args: argparse.Namespace) -> tuple:
    """Checks that need no server, then connects, ensures the experiment and uploads."""
    from pipelines import kfp_api
    from pipelines.kfp_package import PipelinePackage, build_params

    host = kfp_api.resolve_host(args.host)
    package = PipelinePackage.load(args.package)
    params = build_params(package, args.param, args.params_file)
    name = args.pipeline_name or package.name
    version_name = args.version_name or f"{name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    client = kfp_api.connect(host, args.namespace, args.ca_cert)
    with kfp_api.kfp_errors(host, f"experiment {args.experiment!r}"):  # created when missing
        experiment = client.create_experiment(name=args.experiment, namespace=args.namespace)
    experiment_id = str(experiment.experiment_id)
    version = kfp_api.upload_version(
        client,
        package,
        name,
        version_name,
        host,
        reuse=args.reuse_version,
        namespace=args.namespace,
    )
    created = " (new pipeline; its first version takes the pipeline's name)"
    print(f"pipeline:   {name} ({version.pipeline_id}){created if version.new_pipeline else ''}")
    reused = " (existing, same YAML)" if version.reused else ""
    print(f"version:    {version.version_name} ({version.version_id}){reused}")
    print(f"experiment: {args.experiment} ({experiment_id})")
    return client, host, experiment_id, version, params, name


def _run_submit(args: argparse.Namespace) -> int:
    from pipelines import kfp_api

    client, host, experiment_id, version, params, name = _prepare(args)
    run_name = args.run_name or f"{name} {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}"
    with kfp_api.kfp_errors(host, f"starting run {run_name!r}"):
        run = client.run_pipeline(
            experiment_id=experiment_id,
            job_name=run_name,
            params=params,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            pipeline_root=args.pipeline_root,
            service_account=args.service_account,
        )
    run_id = str(run.run_id)
    print(f"run:        {run_id}  {host}/#/runs/details/{run_id}", flush=True)
    if not args.wait:
        return 0
    state = kfp_api.wait_for_run(
        client, host, run_id, args.timeout, args.poll, terminate_on_abort=args.terminate_on_abort
    )
    print(f"state:      {state}")
    return 0 if state == "SUCCEEDED" else EXIT_FAILED


def _run_schedule(args: argparse.Namespace) -> int:
    from pipelines import kfp_api
    from pipelines.kfp_package import validate_cron

    cron = validate_cron(args.cron)  # before any upload
    if args.max_concurrency < 1:
        raise UserError(f"--max-concurrency {args.max_concurrency}: expected 1 or more")
    if args.delete_old and not args.replace:
        raise UserError("--delete-old needs --replace")
    client, host, experiment_id, version, params, name = _prepare(args)
    job_id, disabled = kfp_api.create_schedule(
        client,
        host,
        experiment_id,
        version,
        args.name or f"{name} schedule",
        cron,
        params,
        **{k: getattr(args, k) for k in _KEYWORDS},
    )
    print(f"recurring:  {job_id} cron '{cron}'  {host}/#/recurringrun/details/{job_id}")
    if disabled:
        label = "deleted:" if args.delete_old else "disabled:"
        print(f"{label:<12}{', '.join(disabled)}")
    return 0
