"""Run the whole training pipeline the way Kubeflow runs it: every step in its own container.

    sudo .venv/bin/python containers/verify_pipeline_in_image.py [--image REF]... [--epochs 2]

For each ``--image`` (default: the CPU image ``containers/build.sh --print`` names), on this
machine, with podman (see ``containers/verify_local.sh``, which writes the ``containers.conf``
this needs and calls this script):

1. starts podman's Docker-compatible API on a private socket and a SeaweedFS S3 store on
   127.0.0.1 (``pipelines.seaweedfs``) with a key pair generated in memory for this run (never
   written to a file);
2. makes a small synthetic "shapes" dataset (``rfdetr.data.synthetic``) and uploads it to
   ``s3://datasets/shapes`` with its manifest;
3. compiles the pipeline *inside the image* with ``rfdetr-pipeline compile`` (the cluster's
   settings, except: the image under test, no GPUs, no train retries, the store endpoint
   127.0.0.1:<port>), so the YAML is the one Kubeflow would get from that image's code;
4. stands in for Kubernetes where ``kfp.local`` cannot: the object-store secret the YAML
   references (``platforms.kubernetes`` ``secretAsEnv``) is resolved into the environment of
   exactly the steps that reference it, and ``/dev/shm`` gets the YAML's ``dshm`` size;
5. runs the YAML with ``kfp.local.DockerRunner`` through podman's socket: each step is a fresh
   container of the image running KFP's generated command (``sh -ec ... python3 -m
   kfp.dsl.executor_main``) as the image's user (UID 1000), host network, artifacts passed
   between containers through the bind-mounted pipeline root (owned by that UID);
6. verifies the results independently of what kfp.local reports (kfp 2.17's DockerRunner
   reports a failed container as SUCCESS, kubeflow/pipelines#13332): every step's container
   exit code (podman's events), file ownership, the fetched dataset against the uploaded one,
   metrics.json against the pipeline's mAP output, the ONNX file (onnx checker and an
   onnxruntime inference on the host), every published object against its sha256 manifest
   (read back with a separate S3 client), latest.json and model.json, and that the checkpoint
   mirror was cleaned up;
7. prints a summary, stops what it started, and exits 1 when any check failed (2: cannot run).

Needs root (rootful podman with runc is what works on this VM), podman, and a Python with
this project, kfp and the ``docker`` package (``pip install docker``).

Modules, one job each: ``common`` (settings, errors, small helpers), ``engine`` (podman's
Docker API and what kfp needs of it), ``watcher`` (each step container's exit code and
output), ``store`` (SeaweedFS, the dataset, S3 reads), ``run`` (compile in the image, run the
pipeline), ``checks`` (the independent checks), ``report`` (PASS/FAIL lines and summaries),
``cli`` (arguments and main). The entry point is ``containers/verify_pipeline_in_image.py``.
"""
