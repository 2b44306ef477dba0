#!/usr/bin/env bash
# Regenerate the hash-pinned requirement locks the images install from (pip --require-hashes):
#   containers/requirements-cpu.lock  rfdetr[pipeline,onnx] for containers/Dockerfile.cpu
#   containers/requirements-gpu.lock  rfdetr[pipeline,gpu]  for containers/Dockerfile.gpu
# Both leave out torch and torchvision (the GPU base image holds them; the CPU image installs the
# pinned CPU builds from PyTorch's CPU index first) and hold setuptools and wheel, so the
# project itself builds without network (--no-build-isolation). Needs pip-tools (pip-compile) and
# PyPI; run it after changing dependencies in pyproject.toml, then commit both files.
#   containers/lock.sh [PIP_COMPILE]     (default: pip-compile on PATH)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
compile="${1:-pip-compile}"
cd "$root"

# The project's requirements of one image, without torch/torchvision, as a requirements.in
# (written next to the lock: containers/requirements-<kind>.in).
requirements_in() {
    python3 - "$root/pyproject.toml" "$@" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def block(name):
    m = re.search(rf"^{name} = \[(.*?)\]", text, re.MULTILINE | re.DOTALL)
    return re.findall(r'"([^"]+)"', m.group(1))
deps = block("dependencies") + [d for extra in sys.argv[2:] for d in block(extra)]
deps += ["setuptools>=77", "wheel"]  # the build backend (pyproject [build-system])
print("\n".join(d for d in deps if not re.match(r"(torch|torchvision)\b", d)))
PY
}

for kind in cpu gpu; do
    extra=onnx
    [[ "$kind" == gpu ]] && extra=gpu
    requirements_in pipeline "$extra" > "containers/requirements-$kind.in"
    # Only PyPI, none of this machine's pip configuration (local indexes, constraints).
    PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" PIP_CONSTRAINT="" \
        CUSTOM_COMPILE_COMMAND="containers/lock.sh" "$compile" --quiet \
        --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
        --index-url https://pypi.org/simple \
        --output-file "containers/requirements-$kind.lock" "containers/requirements-$kind.in"
done
