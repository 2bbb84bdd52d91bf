#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vocabularies (GGUF files holding only tokenizer metadata, each
# with `.inp` texts and the `.out` token ids llama.cpp gives them) from the source package of
# llama-cpp-python 0.3.36 on PyPI, which vendors llama.cpp, into
# ${LMSI_TEST_MODELS:-$HOME/.cache/lmsi-test-models}/llama-vocabs and prints that directory.
# The GGUF tokenizer tests read them (`LMSI_TEST_GGUF_VOCABS`).
#
# Idempotent: does nothing but print the path when the directory is there. The package is unpacked in
# a temporary directory and the directory moved into place in one step, so a killed fetch leaves
# nothing.
set -euo pipefail
root=${LMSI_TEST_MODELS:-$HOME/.cache/lmsi-test-models}
out="$root/llama-vocabs"
if [ -d "$out" ]; then echo "$out"; exit 0; fi
url=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
mkdir -p "$root"
tmp=$(mktemp -d "$root/.vocab-fetch.XXXXXX"); trap 'rm -rf "$tmp"' EXIT
curl --silent --show-error --fail --location --retry 3 -o "$tmp/sdist.tar.gz" "$url" >&2
echo "$sha256  $tmp/sdist.tar.gz" | sha256sum --check --quiet >&2
mkdir "$tmp/vocabs"
for name in llama-spm phi-3 gpt-2 llama-bpe qwen2; do
    for suffix in .gguf .gguf.inp .gguf.out; do
        member="llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-$name$suffix"
        tar -xzf "$tmp/sdist.tar.gz" -C "$tmp" "$member"
        mv "$tmp/$member" "$tmp/vocabs/"
    done
done
mv "$tmp/vocabs" "$out"
echo "$out"
