#!/usr/bin/env bash
# Build both images on this machine with podman and smoke-test them, where the real base images
# cannot be pulled (no Docker Hub) and PyTorch's wheel index cannot be reached.
#
#   sudo containers/verify_local.sh [--only gpu|cpu] [--skip-build] [--rebuild-bases] [--keep-cache]
#                                   [--pipeline-only | --skip-pipeline] [--keep-work]
#     --only           build and check only the GPU or only the CPU image
#     --skip-build     check the images already built (no base or image builds)
#     --rebuild-bases  rebuild the stand-in base images even when they exist
#     --keep-cache     keep the images it rebuilds until the new ones are built, and podman's
#                      dangling build-cache images (default: removed first and pruned, to save disk)
#     --pipeline-only  only the pipeline check (5.) on the images already built: no builds and
#                      no smoke checks
#     --skip-pipeline  no pipeline check
#     --keep-work      keep the pipeline check's work folder (its step and container logs) under
#                      $RFDETR_VERIFY_STATE even when every check passes (default: kept on failure)
#
# What it does (root only; every step is idempotent):
#   1. installs podman, runc, debootstrap, uidmap and fuse-overlayfs from Debian when missing and
#      writes a containers.conf that works on this VM (runc, lower ulimits, host network; crun
#      fails here) under $RFDETR_VERIFY_STATE (default /var/tmp/rfdetr-verify);
#   2. builds stand-in base images with debootstrap (the real ones come from Docker Hub):
#        localhost/rfdetr-standin/python:3.11-bookworm      for python:3.11.11-slim-bookworm
#          (bookworm minbase + python3, python3-venv, ca-certificates, passwd; `python` symlink;
#          an empty /etc/pip.conf as the mount point of the build-time pip settings)
#        localhost/rfdetr-standin/pytorch:<torch>-cpuonly   for pytorch/pytorch:<torch>-cuda...
#          (the same + torch/torchvision from PyPI installed system-wide, like the real base)
#   3. builds containers/Dockerfile.gpu and Dockerfile.cpu through containers/build.sh, with the
#      stand-ins as BASE_IMAGE / PYTHON_IMAGE, torch for the CPU image from PyPI instead of
#      PyTorch's CPU index (TORCH_INDEX_URL), host networking, the host's CA bundle (TLS to PyPI
#      goes through an intercepting proxy here) and, when present, the local wheel folder
#      /opt/pypi-more/files (mounted on /mnt) as pip find-links (the same files as on PyPI; saves
#      the downloads). These are build-time mounts over paths the stand-ins already have, because
#      podman 4.3 leaves the mount points it has to create in the image; none of it ends up in the
#      images (checked);
#   4. runs the smoke checks in each image as its default user and prints PASS/FAIL per check,
#      image sizes and build times;
#   5. runs the whole training pipeline the way Kubeflow runs it, each step in its own container
#      of each image (containers/verify_pipeline_in_image.py: kfp.local.DockerRunner through
#      podman's Docker API, a SeaweedFS store on 127.0.0.1, tiny model, 2 epochs, about 40 s per
#      image), and checks its outputs independently. It needs a Python with this project, kfp
#      and the docker package: $PYTHON, default .venv/bin/python.
#   Exit status 1 when any check failed.
# Disk: it keeps about 13 GB of images, but building the CPU image needs about 40 GB free for a
# while (PyPI's torch is ~5 GB installed: build layer, its copy in the final stage, temp tars).
# A fresh run takes about 13 min here (2 cores), 9 min when the stand-in bases exist.
# Not verifiable here: CUDA (no GPU), and the real base images (their contents may differ from
# the stand-ins: e.g. the real python:slim has Python 3.11.11 in /usr/local, the real PyTorch
# image has conda's Python in /opt/conda). The CPU image built here holds PyPI's torch, which
# carries the CUDA libraries, so it is much larger than the real one (CPU wheel) will be.
# shellcheck disable=SC2016  # the scripts run inside the images are single-quoted on purpose
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

only="" skip_build=0 rebuild_bases=0 keep_cache=0 pipeline=1 smoke_checks=1 keep_work=0
while (($#)); do
    case "$1" in
        --only)
            only="${2:?--only needs gpu or cpu}"; shift
            [[ "$only" == gpu || "$only" == cpu ]] || { echo "error: --only takes gpu or cpu" >&2; exit 2; }
            ;;
        --skip-build) skip_build=1 ;;
        --rebuild-bases) rebuild_bases=1 ;;
        --keep-cache) keep_cache=1 ;;
        --pipeline-only) skip_build=1 smoke_checks=0 ;;
        --skip-pipeline) pipeline=0 ;;
        --keep-work) keep_work=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; /shellcheck/d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
kinds=(gpu cpu)
[[ -z "$only" ]] || kinds=("$only")
if ((!smoke_checks && !pipeline)); then
    echo "error: --pipeline-only and --skip-pipeline leave nothing to do" >&2
    exit 2
fi
python="${PYTHON:-$root/.venv/bin/python}"
if ((pipeline)) && ! "$python" -c 'import docker, kfp.local, pipelines' 2>/dev/null; then
    echo "error: the pipeline check needs $python with this project, kfp and docker" >&2
    echo "  (pip install docker; or set PYTHON, or pass --skip-pipeline)" >&2
    exit 2
fi

if ((EUID != 0)); then
    echo "error: run as root (sudo $0): it installs podman from Debian when missing, runs" >&2
    echo "  debootstrap and uses rootful podman with runc, the only setup that works on this VM." >&2
    exit 2
fi

# ---------------------------------------------------------------- versions and image names
version="$(sed -n 's/^version = "\([^"]*\)"$/\1/p' "$root/pyproject.toml" | head -n 1)"
torch_version="$(sed -n 's/^ARG TORCH_VERSION=//p' "$root/containers/Dockerfile.cpu")"
torchvision_version="$(sed -n 's/^ARG TORCHVISION_VERSION=//p' "$root/containers/Dockerfile.cpu")"
GPU_IMAGE="" CPU_IMAGE=""
while IFS='=' read -r key value; do  # the references build.sh builds: GPU_IMAGE, CPU_IMAGE
    case "$key" in GPU_IMAGE) GPU_IMAGE="$value" ;; CPU_IMAGE) CPU_IMAGE="$value" ;; esac
done < <(bash "$root/containers/build.sh" --print)
repository="${GPU_IMAGE%:*}"
revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
python_base="localhost/rfdetr-standin/python:3.11-bookworm"
gpu_base="localhost/rfdetr-standin/pytorch:${torch_version}-cpuonly"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
host_ca="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
wheels="${LOCAL_WHEELS:-/opt/pypi-more/files}"
torch_index="${TORCH_INDEX_URL:-https://pypi.org/simple}"
state="${RFDETR_VERIFY_STATE:-/var/tmp/rfdetr-verify}"

work=""
remove_bridge() {  # podman may create a CNI bridge on first use; this setup only uses host networking
    if ip link show cni-podman0 >/dev/null 2>&1; then
        ip link delete cni-podman0 || true
    fi
}
cleanup() {
    if [[ -n "$work" && -d "$work" ]]; then
        rm -rf "$work"
    fi
    if command -v podman >/dev/null 2>&1 && ((!keep_cache)); then
        podman image prune --force >/dev/null 2>&1 || true
    fi
    remove_bridge
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. podman
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "== installing podman, runc, debootstrap from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        podman debootstrap uidmap fuse-overlayfs runc
fi
mkdir -p "$state"
cat >"$state/containers.conf" <<'EOF'
# Written by containers/verify_local.sh: crun fails on this VM (setrlimit, hybrid cgroups).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
netns = "host"
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$state/containers.conf"
if [[ ! -r "$host_ca" ]]; then
    echo "error: no CA bundle at $host_ca (set HOST_CA_BUNDLE)" >&2
    exit 2
fi
# pip settings for the build containers only (bind-mounted over /etc/pip.conf during RUN steps).
{
    echo "[global]"
    echo "cert = /etc/ssl/certs/ca-certificates.crt"
    if [[ -d "$wheels" ]]; then echo "find-links = /mnt"; fi
} >"$state/pip.conf"
podman info >/dev/null
remove_bridge
mounts=(--volume "$host_ca:/etc/ssl/certs/ca-certificates.crt:ro" --volume "$state/pip.conf:/etc/pip.conf:ro")
if [[ -d "$wheels" ]]; then mounts+=(--volume "$wheels:/mnt:ro"); fi
work="$(mktemp -d /var/tmp/rfdetr-verify-work.XXXXXX)"

declare -A build_seconds=()
timed() {  # timed LABEL COMMAND...: run it, remember its wall time
    local label="$1" start=$SECONDS
    shift
    "$@"
    build_seconds[$label]=$((SECONDS - start))
}

# ---------------------------------------------------------------- 2. stand-in bases
build_python_base() {
    local rootfs="$work/rootfs"
    echo "== debootstrap bookworm minbase -> $python_base"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
        bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; return 1; }
    ln -sf python3 "$rootfs/usr/bin/python"
    : >"$rootfs/etc/pip.conf"  # mount point (see the header)
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$python_base" >/dev/null
    rm -rf "$rootfs"
}
build_gpu_base() {
    echo "== $gpu_base: $python_base + torch==$torch_version torchvision==$torchvision_version"
    # Like pytorch/pytorch: torch in the interpreter's own site-packages, pip available.
    cat >"$work/Containerfile.pytorch" <<EOF
FROM $python_base
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip \\
    && rm -rf /var/lib/apt/lists/* \\
    && python -m pip install --no-cache-dir --break-system-packages \\
        torch==$torch_version torchvision==$torchvision_version
EOF
    podman build --network host "${mounts[@]}" --file "$work/Containerfile.pytorch" \
        --tag "$gpu_base" "$work"
}
free_gb() { df --output=avail -B1G /var/lib/containers | tail -n 1 | tr -d ' '; }
prune() { if ((!keep_cache)); then podman image prune --force >/dev/null; fi; }
image_of() { if [[ "$1" == gpu ]]; then echo "$GPU_IMAGE"; else echo "$CPU_IMAGE"; fi; }
base_ok() {  # exists, and made by this version of the recipe (has the mount points)
    podman image exists "$1" && podman run --rm "$1" test -f /etc/pip.conf -a -d /mnt >/dev/null 2>&1
}
if ((!skip_build)); then
    # Disk: the stand-in bases hold PyPI's CUDA build of torch (about 5 GB installed), and the CPU
    # image builds a venv with it in one layer and copies it in another; so the old images go
    # first (unless --keep-cache) and the build needs about min_free_gb.
    if ((!keep_cache)); then
        for kind in "${kinds[@]}"; do
            podman image rm --force "$(image_of "$kind")" >/dev/null 2>&1 || true
        done
        prune
    fi
    min_free_gb="${MIN_FREE_GB:-40}"
    if (($(free_gb) < min_free_gb)); then
        echo "error: $(free_gb) GB free under /var/lib/containers; building needs about" \
            "$min_free_gb GB (set MIN_FREE_GB to override). Images: podman images" >&2
        exit 2
    fi
    if ((rebuild_bases)) || ! base_ok "$python_base"; then
        timed "stand-in python base" build_python_base
        rebuild_bases=1  # the PyTorch stand-in is built on it
    fi
    if [[ " ${kinds[*]} " == *" gpu "* ]] && { ((rebuild_bases)) || ! base_ok "$gpu_base"; }; then
        timed "stand-in pytorch base" build_gpu_base
    fi
fi

# ---------------------------------------------------------------- 3. the project's images
# The commit each image is built from (build.sh labels it): HEAD may move during a run.
declare -A built_revision=()
if ((!skip_build)); then
    for kind in "${kinds[@]}"; do
        args=(--only "$kind" --engine podman --network host "${mounts[@]}")
        if [[ "$kind" == gpu ]]; then
            args+=(--build-arg "BASE_IMAGE=$gpu_base")
        else
            args+=(--build-arg "PYTHON_IMAGE=$python_base" --build-arg "TORCH_INDEX_URL=$torch_index")
        fi
        echo "== containers/build.sh ${args[*]}"
        built_revision[$kind]="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
        timed "$(image_of "$kind")" bash "$root/containers/build.sh" "${args[@]}"
        remove_bridge
        prune  # the build stage (a second copy of the venv)
    done
fi

# ---------------------------------------------------------------- 4. smoke checks
failures=0
check() {  # check NAME COMMAND...: PASS with the output's last line, or FAIL with its tail
    local name="$1" out
    shift
    if out="$("$@" 2>&1)"; then
        printf 'PASS  %-44s %s\n' "$name" "$(tail -n 1 <<<"$out" | cut -c 1-150)"
    else
        printf 'FAIL  %s\n' "$name"
        tail -n 25 <<<"$out" | sed 's/^/        /'
        failures=$((failures + 1))
    fi
}
run_in() { podman run --rm --network host "$@"; }  # default user and entrypoint of the image
label() { podman image inspect --format "{{index .Labels \"$2\"}}" "$1"; }
expect_equal() { [[ "$1" == "$2" ]] || { echo "got '$1', expected '$2'"; return 1; }; echo "$1"; }

smoke() {
    local kind="$1" image ort_want ort_not
    image="$(image_of "$kind")"
    if [[ "$kind" == gpu ]]; then ort_want=onnxruntime-gpu ort_not=onnxruntime; else ort_want=onnxruntime ort_not=onnxruntime-gpu; fi
    echo
    echo "== smoke checks: $image ($kind)"
    if ! podman image exists "$image"; then
        echo "FAIL  image $image does not exist"
        failures=$((failures + 1))
        return
    fi
    check "default user is 1000:1000" run_in "$image" sh -c \
        'test "$(id -u):$(id -g)" = 1000:1000 && test -w "$HOME" && echo "$(id) HOME=$HOME"'
    check "default command (CMD) runs" run_in "$image"
    check "rfdetr --help" run_in "$image" rfdetr --help
    check "rfdetr-pipeline --help" run_in "$image" rfdetr-pipeline --help
    check "import rfdetr, pipelines, components, onnxruntime" run_in "$image" \
        python -c 'import rfdetr, pipelines, components, onnxruntime; print("ok", rfdetr.__version__)'
    check "rfdetr.__version__ is pyproject's" run_in "$image" python -c \
        "import rfdetr; v = rfdetr.__version__; print(v); assert v == '$version', v"
    check "runtime imports (torch, cv2, kfp, onnx...)" run_in "$image" python -c '
import cv2, kfp, kfp.kubernetes, matplotlib, minio, onnx, onnxslim, prometheus_client, pycocotools.coco
import scipy, supervision, torch, torchvision
print("torch", torch.__version__, "torchvision", torchvision.__version__, "cv2", cv2.__version__)'
    check "torch $torch_version / torchvision $torchvision_version" run_in "$image" python -c "
import torch, torchvision
got = (torch.__version__.split('+')[0], torchvision.__version__.split('+')[0])
print(torch.__version__, torchvision.__version__, 'cuda build:', torch.version.cuda)
assert got == ('$torch_version', '$torchvision_version'), got"
    check "torchvision C++ ops (nms) work" run_in "$image" python -c '
import torch, torchvision
keep = torchvision.ops.nms(torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10]]), torch.tensor([0.9, 0.8]), 0.5)
print("nms ->", keep.tolist())'
    check "pip list: $ort_want, not $ort_not" run_in "$image" sh -c "
pip list --disable-pip-version-check --format=freeze 2>/dev/null | grep -i '^onnxruntime' | tr '\n' ' '
pip list --disable-pip-version-check --format=freeze 2>/dev/null | grep -qi '^$ort_want==' || exit 1
! pip list --disable-pip-version-check --format=freeze 2>/dev/null | grep -qi '^$ort_not=='"
    check "pip check (dependencies consistent)" run_in "$image" pip check --disable-pip-version-check
    if [[ "$kind" == gpu ]]; then
        check "onnxruntime providers include CUDA" run_in "$image" python -c '
import onnxruntime as ort
p = ort.get_available_providers(); print(ort.__version__, p); assert "CUDAExecutionProvider" in p'
        check "torch only from the base (not in the venv)" run_in "$image" sh -c \
            'python -c "import torch; print(torch.__file__)" && ! ls -d /opt/venv/lib/python3*/site-packages/torch 2>/dev/null'
    else
        check "onnxruntime providers: CPU, no CUDA" run_in "$image" python -c '
import onnxruntime as ort
p = ort.get_available_providers(); print(ort.__version__, p)
assert "CPUExecutionProvider" in p and "CUDAExecutionProvider" not in p'
    fi
    check "compiled pipeline images are $repository:$version(-cpu)" run_in "$image" sh -c "
rfdetr-pipeline compile --output /tmp/p.yaml >/dev/null && python - <<'EOF'
import yaml
docs = [d for d in yaml.safe_load_all(open('/tmp/p.yaml')) if d]
images = {e['container']['image'] for e in docs[0]['deploymentSpec']['executors'].values()}
print(len(docs[0]['deploymentSpec']['executors']), 'executors, images', sorted(images))
assert images == {'$repository:$version', '$repository:$version-cpu'}, images
EOF"
    check "no compiler (gcc, cc, g++, clang)" run_in "$image" sh -c '
for c in gcc cc c++ g++ clang; do if command -v "$c"; then exit 1; fi; done
if ls /usr/bin/*-gcc* /usr/lib/gcc/*/*/cc1 2>/dev/null; then exit 1; fi; echo none'
    check "no pip cache, sources or build mounts left" run_in --user 0 "$image" sh -c '
found="$(find / -xdev \( -path "*/.cache/pip" -o -path /src -o -path /mnt/\* \) -print)"
if [ -s /etc/pip.conf ]; then found="$found /etc/pip.conf (not empty)"; fi
if [ -n "$found" ]; then echo "$found"; exit 1; fi; echo none'
    check "label org.opencontainers.image.version" expect_equal \
        "$(label "$image" org.opencontainers.image.version)" "$version"
    check "label org.opencontainers.image.revision" expect_equal \
        "$(label "$image" org.opencontainers.image.revision)" "${built_revision[$kind]:-$revision}"
    check "PYTHONUNBUFFERED=1 (config and runtime)" sh -c "
podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' '$image' | grep -qx PYTHONUNBUFFERED=1 &&
podman run --rm --network host '$image' printenv PYTHONUNBUFFERED RFDETR_IMAGE_VERSION | tr '\n' ' '"
    if [[ "$kind" == gpu ]]; then
        echo "SKIP  torch.cuda / onnxruntime CUDA session: no GPU on this machine"
    fi

    # A real (tiny) training run on a synthetic dataset, then eval and ONNX export of its checkpoint.
    local dir="$work/run-$kind"
    mkdir -p "$dir"
    chown 1000:1000 "$dir"
    check "synthetic shapes dataset (COCO, 64 px)" run_in --volume "$dir:/work" "$image" python -c '
from rfdetr.data.synthetic import make_shapes_dataset
print(make_shapes_dataset("/work/data", splits={"train": 8, "valid": 4, "test": 4}, image_size=64, seed=0))'
    check "rfdetr train --model tiny --epochs 1 (CPU)" run_in --volume "$dir:/work" "$image" sh -c '
rfdetr train /work/data --model tiny --epochs 1 --batch-size 2 --grad-accum-steps 1 --num-workers 1 \
  --no-multi-scale --device cpu --no-tensorboard --no-run-test --output-dir /work/out >/work/train.json &&
python -c "import json; s = json.load(open(\"/work/train.json\")); print(\"epochs\", s[\"epochs_completed\"], s[\"best_checkpoint\"]); assert s[\"epochs_completed\"] == 1"'
    check "rfdetr eval on its checkpoint" run_in --volume "$dir:/work" "$image" sh -c '
rfdetr eval --weights /work/out/checkpoint_best_total.pth --dataset-dir /work/data --split valid \
  --device cpu --num-workers 0 --output-dir /work/eval >/dev/null && ls /work/eval | tr "\n" " "'
    check "rfdetr export (ONNX, verified by onnxruntime)" run_in --volume "$dir:/work" "$image" sh -c '
rfdetr export --weights /work/out/checkpoint_best_total.pth --output-dir /work/onnx >/dev/null &&
ls -l /work/onnx/*.onnx | awk "{print \$5, \$9}"'
    # Every pipeline component, as kfp.local subprocesses of the image's Python (no object store).
    check "rfdetr-pipeline run-local (all 8 steps, tiny)" run_in --volume "$dir:/work" "$image" sh -c '
cd /work && rfdetr-pipeline run-local /work/data --model tiny --epochs 1 --batch-size 2 \
  --publish-bucket "" --param "overrides={\"num_workers\": 0, \"multi_scale\": false}" \
  --pipeline-root /work/lo >/work/run-local.txt 2>&1 || { cat /work/run-local.txt; exit 1; }
steps="$(grep -c " success " /work/run-local.txt)"; echo "$steps steps succeeded"; test "$steps" -eq 8'
}

if ((smoke_checks)); then
    for kind in "${kinds[@]}"; do
        smoke "$kind"
    done
    remove_bridge
fi

# ---------------------------------------------------------------- 5. the pipeline, step by step
if ((pipeline)); then
    echo
    echo "== the training pipeline, one container per step (kfp.local.DockerRunner)"
    images=()
    for kind in "${kinds[@]}"; do images+=(--image "$(image_of "$kind")"); done
    if ((keep_work)); then images+=(--keep); fi
    if RFDETR_VERIFY_STATE="$state" "$python" "$root/containers/verify_pipeline_in_image.py" \
        "${images[@]}"; then
        printf 'PASS  %-44s %s\n' "pipeline in containers" "${kinds[*]}"
    else
        printf 'FAIL  %s\n' "pipeline in containers (see above)"
        failures=$((failures + 1))
    fi
    remove_bridge
fi

# ---------------------------------------------------------------- summary
echo
echo "== images"
for image in "$python_base" "$gpu_base" "$GPU_IMAGE" "$CPU_IMAGE"; do
    if podman image exists "$image"; then
        printf '  %-52s %s\n' "$image" "$(podman image inspect --format '{{.Size}}' "$image" |
            awk '{printf "%.2f GB", $1 / 1e9}')"
    fi
done
if ((${#build_seconds[@]})); then
    echo "== build times (this run)"
    for label in "${!build_seconds[@]}"; do
        printf '  %-52s %dm%02ds\n' "$label" $((build_seconds[$label] / 60)) $((build_seconds[$label] % 60))
    done
fi
echo
if ((failures)); then
    echo "verify_local: $failures check(s) FAILED"
    exit 1
fi
echo "verify_local: all checks passed"
