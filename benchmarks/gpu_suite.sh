#!/usr/bin/env bash
# GPU suite: ours vs upstream rfdetr==1.11.2 on one CUDA machine, in under 8 minutes
# (benchmarks/gpu_suite.py says what it prints).
#
#   benchmarks/gpu_suite.sh [gpu_suite.py options, e.g. --steps 20]
#
# Environment:
#   PYTHON         our interpreter (default: .venv/bin/python, else python3)
#   UPSTREAM_VENV  the upstream venv, created when missing
#                  (default: ~/.cache/rfdetr-bench/upstream-1.11.2)
#   WHEELHOUSE     install upstream (rfdetr[train,onnx]==1.11.2: its training step and
#                  its export) from this folder of wheels only, on an offline machine
#   TOTAL_S        the whole run's budget in seconds, setup included (default 450)
#
# The upstream venv shares our interpreter's torch (a path line in a .pth file, which does not
# run our site-packages' own .pth hooks, so our editable rfdetr stays invisible there): both
# sides run the same torch and CUDA build, and nothing of torch is downloaded again.
set -euo pipefail

started=$SECONDS
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[[ -x "$PYTHON" ]] || PYTHON=python3
UPSTREAM_VENV=${UPSTREAM_VENV:-$HOME/.cache/rfdetr-bench/upstream-1.11.2}
TOTAL_S=${TOTAL_S:-450}
UPSTREAM_VENV=$(realpath -m "$UPSTREAM_VENV")

fail() {
    echo "gpu_suite: $*" >&2
    exit 2
}

"$PYTHON" -c "import torch" 2>/dev/null || fail "$PYTHON cannot import torch; set PYTHON"
"$PYTHON" - <<'EOF' || fail "no usable CUDA device here (torch.cuda.is_available() is False); run it on a CUDA machine"
import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)
EOF

upstream="$UPSTREAM_VENV/bin/python"
if [[ ! -x "$upstream" ]]; then
    echo "gpu_suite: creating the upstream venv $UPSTREAM_VENV"
    "$PYTHON" -m venv "$UPSTREAM_VENV"
    ours_site=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    their_site=$("$upstream" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "$ours_site" >"$their_site/zz_shared_torch.pth"
    pip_args=(--quiet --disable-pip-version-check)
    if [[ -n "${WHEELHOUSE:-}" ]]; then
        pip_args+=(--no-index --find-links "$WHEELHOUSE")
    fi
    "$upstream" -m pip install "${pip_args[@]}" "rfdetr[train,onnx]==1.11.2" \
        || fail "could not install rfdetr==1.11.2 into $UPSTREAM_VENV (no network? set WHEELHOUSE)"
fi
"$upstream" - "$UPSTREAM_VENV" <<'EOF' || fail "$UPSTREAM_VENV does not import upstream rfdetr 1.11.2 with CUDA; delete it to rebuild"
import sys, importlib.metadata as md, torch, rfdetr
assert rfdetr.__file__.startswith(sys.argv[1]), rfdetr.__file__
assert md.version("rfdetr") == "1.11.2" and torch.cuda.is_available()
EOF

left=$((TOTAL_S - (SECONDS - started)))
((left > 60)) || fail "setup took $((SECONDS - started)) s of TOTAL_S=$TOTAL_S; run again (the venv is kept)"
echo "gpu_suite: setup $((SECONDS - started)) s; measuring for at most $left s"
export HF_HUB_OFFLINE=1
exec timeout --kill-after=10 $((left + 15)) "$PYTHON" benchmarks/gpu_suite.py \
    --upstream-python "$upstream" --budget-s "$left" "$@"
