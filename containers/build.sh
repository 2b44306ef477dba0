#!/usr/bin/env bash
# Build (and optionally push) the rfdetr images. The tag comes from one place: the package version in
# pyproject.toml; the repository from $IMAGE_REPOSITORY, else components/_image.py (IMAGE_REPOSITORY),
# so the images built here are the ones compiled pipelines reference (<repo>:<tag>, CPU image
# <repo>:<tag>-cpu; `rfdetr-pipeline compile --image <repo>:<tag>` derives the same CPU reference).
#
#   containers/build.sh [--print] [--push] [--tag TAG] [--also-tag TAG]... [--only gpu|cpu]
#                       [--engine docker|podman] [--build-arg KEY=VALUE]... [--volume SRC:DST[:OPTS]]...
#                       [--network MODE]
#     --print      print the image references and exit (no engine needed)
#     --push       push after building (every tag)
#     --tag        tag instead of the package version (CI: the git SHA)
#     --also-tag   one more tag of both images (CI on a release tag: the package version, which the
#                  kustomize manifests reference)
#     --only       build only the GPU or only the CPU image
#     --engine     use this engine instead of the first working one of docker, podman
#     --build-arg  passed to every build (e.g. BASE_IMAGE=..., PYTHON_IMAGE=..., TORCH_INDEX_URL=...)
#     --volume     bind mount for the build's RUN steps (podman/buildah only; docker has none)
#     --network    network mode of the build's RUN steps (e.g. host)
# containers/verify_local.sh uses the pass-through options to build both images with podman and
# stand-in base images, then smoke-tests them.
# Without docker or podman it explains and exits 0, so `make images` never fails for that reason.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

version="$(sed -n 's/^version = "\([^"]*\)"$/\1/p' "$root/pyproject.toml" | head -n 1)"
repository="${IMAGE_REPOSITORY:-$(sed -n 's/^IMAGE_REPOSITORY = "\([^"]*\)"$/\1/p' "$root/components/_image.py" | head -n 1)}"
if [[ -z "$version" || -z "$repository" ]]; then
    echo "error: cannot read version from pyproject.toml or IMAGE_REPOSITORY from components/_image.py" >&2
    exit 2
fi

print=0 push=0 tag="$version" only="" engine=""
extra=()  # pass-through build options
also=()  # more tags of both images
while (($#)); do
    case "$1" in
        --print) print=1 ;;
        --push) push=1 ;;
        --tag) tag="${2:?--tag needs a value}"; shift ;;
        --also-tag) also+=("${2:?--also-tag needs a value}"); shift ;;
        --only)
            only="${2:?--only needs gpu or cpu}"; shift
            [[ "$only" == gpu || "$only" == cpu ]] || { echo "error: --only takes gpu or cpu" >&2; exit 2; }
            ;;
        --engine) engine="${2:?--engine needs docker or podman}"; shift ;;
        --build-arg | --volume | --network) extra+=("$1" "${2:?$1 needs a value}"); shift ;;
        *)
            echo "error: unknown option $1 (use --print, --push, --tag TAG, --also-tag TAG, --only gpu|cpu," \
                "--engine NAME, --build-arg K=V, --volume SPEC, --network MODE)" >&2
            exit 2
            ;;
    esac
    shift
done

gpu_image="$repository:$tag"
cpu_image="$repository:$tag-cpu"
all_images=("$gpu_image" "$cpu_image")
for extra_tag in ${also[@]+"${also[@]}"}; do
    all_images+=("$repository:$extra_tag" "$repository:$extra_tag-cpu")
done
if ((print)); then
    echo "VERSION=$version"
    echo "GPU_IMAGE=$gpu_image"
    echo "CPU_IMAGE=$cpu_image"
    echo "ALL_IMAGES=${all_images[*]}"
    exit 0
fi

if [[ -n "$engine" ]]; then
    if ! command -v "$engine" >/dev/null 2>&1 || ! "$engine" info >/dev/null 2>&1; then
        echo "error: --engine $engine: not installed or not working (\`$engine info\` fails)" >&2
        exit 2
    fi
fi
for candidate in docker podman; do
    [[ -z "$engine" ]] || break
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
        engine="$candidate"
    fi
done
if [[ -z "$engine" ]]; then
    echo "make images: no working container engine (docker or podman with a reachable daemon) here;"
    echo "  nothing built. Install one, or let CI build them (.github/workflows/deploy.yml)."
    echo "  Would build: $gpu_image (containers/Dockerfile.gpu), $cpu_image (containers/Dockerfile.cpu)"
    exit 0
fi

revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
for pair in "gpu:$gpu_image" "cpu:$cpu_image"; do
    kind="${pair%%:*}" image="${pair#*:}"
    [[ -z "$only" || "$only" == "$kind" ]] || continue
    echo "building $image with $engine"
    suffix="${image#"$repository:$tag"}"  # "" or -cpu
    tags=("--tag" "$image")
    for extra_tag in ${also[@]+"${also[@]}"}; do tags+=("--tag" "$repository:$extra_tag$suffix"); done
    "$engine" build --file "$root/containers/Dockerfile.$kind" \
        --build-arg "VERSION=$version" --build-arg "VCS_REF=$revision" \
        ${extra[@]+"${extra[@]}"} "${tags[@]}" "$root"
    if ((push)); then
        for ((i = 1; i < ${#tags[@]}; i += 2)); do "$engine" push "${tags[i]}"; done
    fi
done
