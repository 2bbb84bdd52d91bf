#!/usr/bin/env bash
# Installs the peers of `cargo xtask bench compare` into a Python virtual environment under
# ${LMSI_BENCH_PEERS:-$HOME/.cache/lmsi-bench-peers} and prints the environment's path:
# - llama-cpp-python, built from its source distribution (llama.cpp compiled here, for this CPU);
# - torch and transformers, from PyPI (the Linux torch wheel brings its CUDA libraries; the
#   comparison runs it on the CPU).
# Versions are pinned below; a change of pin makes a new environment beside the old ones.
#
# Idempotent: prints the path when that environment is complete. A failed or killed install
# leaves nothing.
set -euo pipefail
LLAMA_CPP_PYTHON=0.3.36
LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
TORCH=2.15.0
TRANSFORMERS=5.23.0
root=${LMSI_BENCH_PEERS:-$HOME/.cache/lmsi-bench-peers}
out="$root/llama-cpp-python-$LLAMA_CPP_PYTHON-torch-$TORCH-transformers-$TRANSFORMERS"
if [ -x "$out/bin/python" ]; then echo "$out"; exit 0; fi
mkdir -p "$root"
# Built beside its final path and renamed when complete; a venv moved so still runs as
# `bin/python -m`, which is all that uses it.
partial="$out.partial.$$"; trap 'rm -rf "$partial"' EXIT
python3 -m venv "$partial"
pip=("$partial/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install "torch==$TORCH" "transformers==$TRANSFORMERS" numpy sentencepiece >&2
# llama-cpp-python's source distribution, found through PyPI's simple index and checked against the
# digest pinned here, is both what pip builds and where llama.cpp's own converter (and its gguf
# package) come from. (`pip download --no-binary` would build the build tools from source too, CMake
# among them.)
"$partial/bin/python" - "llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz" "$LLAMA_CPP_PYTHON_SHA256" \
  "$partial/sdist.tar.gz" >&2 <<'PY'
import hashlib, json, sys, urllib.request
name, sha256, out = sys.argv[1:]
index = urllib.request.Request("https://pypi.org/simple/llama-cpp-python/",
                               headers={"Accept": "application/vnd.pypi.simple.v1+json"})
(url,) = [f["url"] for f in json.load(urllib.request.urlopen(index))["files"] if f["filename"] == name]
data = urllib.request.urlopen(url).read()
if hashlib.sha256(data).hexdigest() != sha256:
    sys.exit(f"{url}: its sha256 is not the pinned {sha256}")
open(out, "wb").write(data)
PY
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "${pip[@]}" install "$partial/sdist.tar.gz" >&2
mkdir "$partial/sdist"
tar -xzf "$partial/sdist.tar.gz" -C "$partial/sdist"
mv "$partial/sdist/llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp" "$partial/llama.cpp"
rm -rf "$partial/sdist" "$partial/sdist.tar.gz"
"${pip[@]}" install "$partial/llama.cpp/gguf-py" >&2
mv "$partial" "$out"
echo "$out"
