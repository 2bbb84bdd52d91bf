#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 toolchain wheels (nvcc, NVRTC, headers) from PyPI into a virtual
# environment under ${LMSI_CUDA_HOME:-$HOME/.cache/lmsi/cuda-13.0} and prints the toolkit root
# (`.../site-packages/nvidia/cu13`, holding bin/nvcc, include/, lib/libnvrtc*).
#
# Idempotent: a completed install is marked with a stamp naming the pinned set, and a rerun with the
# same set only prints the path. No GPU is needed. Progress goes to stderr; stdout is the path alone,
# so callers can do `CU13=$(scripts/cuda-toolchain.sh)`.
set -euo pipefail

# CUDA 13.0 exactly: newer nvcc emits PTX that older drivers reject (see shared/CUDA-NOTES.md).
PACKAGES=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-runtime==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-nvrtc==13.0.88
)

home="${LMSI_CUDA_HOME:-$HOME/.cache/lmsi/cuda-13.0}"
venv="$home/venv"
stamp="$home/installed"
wanted="${PACKAGES[*]}"

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
    echo "cuda-toolchain: installing ${PACKAGES[*]} into $venv" >&2
    mkdir -p "$home"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2
    echo "$wanted" >"$stamp"
fi

root="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
if [[ ! -x "$root/bin/nvcc" ]]; then
    echo "cuda-toolchain: $root/bin/nvcc is missing; remove $home and rerun" >&2
    exit 1
fi
# cudarc opens NVRTC by its unversioned name (or .so.12 and older): give the wheel's library that name.
if [[ ! -e "$root/lib/libnvrtc.so" ]]; then
    lib="$(cd "$root/lib" && ls libnvrtc.so.13* 2>/dev/null | head -n1 || true)"
    if [[ -n "$lib" ]]; then
        ln -s "$lib" "$root/lib/libnvrtc.so"
    fi
fi
echo "$root"
