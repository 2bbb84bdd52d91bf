#!/usr/bin/env bash
# lmsi's GPU bundle (made by `cargo xtask gpu-bundle`): runs every CUDA test, a CPU-against-GPU check of
# `lmsi generate` and `lmsi train`, and the generate and train benchmarks on the GPU and, for
# comparison on the same machine, on the CPU. Prints a table (what, result, seconds); each run's
# output is in logs/ (or $LMSI_BUNDLE_LOGS). Needs no Rust toolchain and no network.
#
#   ./run.sh              everything
#   ./run.sh --no-bench   the tests and checks only
#
# Environment: LMSI_BENCH_MODEL, a real model directory (e.g. SmolLM2-135M-Instruct) for the
# benchmarks (default: the bundled seed model); CUDA_HOME, a CUDA install to take libraries from.
# Exits 1 when a run fails; a run that skips its GPU parts (no GPU) is not a failure.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bench=1
[[ "${1:-}" == "--no-bench" ]] && bench=0
logs="${LMSI_BUNDLE_LOGS:-$here/logs}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$logs"
export LMSI_KERNEL_CACHE="${LMSI_KERNEL_CACHE:-$work/kernel-cache}"
export RUST_BACKTRACE=1

# ---- The CUDA libraries. cudarc opens libcuda, libnvrtc and libcublas by unversioned names (or
# CUDA 12's): link whatever version is found under those names, its folder on the library path too.
dirs=("$here/lib")
[[ -n "${CUDA_HOME:-}" ]] && dirs+=("$CUDA_HOME/lib64" "$CUDA_HOME/lib")
dirs+=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64)
dirs+=(/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64)
if command -v python3 >/dev/null 2>&1; then
    while IFS= read -r d; do dirs+=("$d"); done < <(python3 -c '
import glob, os
try:
    import nvidia
except Exception:
    raise SystemExit
for root in nvidia.__path__:
    for lib in sorted(glob.glob(os.path.join(root, "*", "lib"))):
        print(lib)' 2>/dev/null)
fi
find_lib() {
    local d f
    for d in "${dirs[@]}"; do
        for f in "$d/lib$1.so" "$d/lib$1.so".[0-9]*; do
            if [[ -e "$f" ]]; then
                echo "$f"
                return 0
            fi
        done
    done
    return 1
}
links="$work/lib"
mkdir -p "$links"
path="$links"
gpu=0
echo "CUDA libraries:"
for name in cuda nvrtc cublas cublasLt; do
    if f="$(find_lib "$name")"; then
        ln -sf "$f" "$links/lib$name.so"
        path="$path:$(dirname "$f")"
        echo "  lib$name: $f"
        [[ "$name" == cuda ]] && gpu=1
    else
        echo "  lib$name: not found"
    fi
done
export LD_LIBRARY_PATH="$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if command -v nvidia-smi >/dev/null 2>&1; then
    echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n1)"
else
    echo "GPU: nvidia-smi not found"
fi
echo

# ---- Runs. Each appends a row: what, result, seconds.
rows=()
failed=0
notes=()

# run WHAT COMMAND...: runs COMMAND (output to the log $last_log), records its row, returns its
# status.
last_log=""
run() {
    local what="$1"
    shift
    local log="$logs/$(printf '%s' "$what" | tr -c 'A-Za-z0-9_.-' '_').log"
    last_log="$log"
    local start end secs result rc
    start="$(date +%s.%N)"
    "$@" >"$log" 2>&1
    rc=$?
    end="$(date +%s.%N)"
    secs="$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')"
    if [[ $rc -ne 0 ]]; then
        result="FAIL (exit $rc, see $log)"
        failed=$((failed + 1))
    else
        result="ok"
        local passed
        passed="$(grep -Eo 'test result: ok\. [0-9]+ passed' "$log" | awk '{ n += $4 } END { if (n) print n }')"
        [[ -n "$passed" ]] && result="ok, $passed tests"
        local skip
        skip="$(grep -m1 -i 'skipped' "$log" | cut -c1-90)"
        [[ -n "$skip" ]] && result="$result; $skip"
    fi
    rows+=("$what"$'\t'"$result"$'\t'"$secs")
    return $rc
}

skip() {
    rows+=("$1"$'\t'"skipped: $2"$'\t'"-")
}

# The tests print why they skip a GPU part only when not capturing output.
for t in "$here"/tests/*; do
    run "test $(basename "$t")" "$t" --nocapture
done

# lmsi on the seed model: the same greedy paths and the same training losses on the CPU and the GPU.
seed="$here/assets/seed-model"
lmsi="$here/bin/lmsi"
cat >"$work/questions.jsonl" <<'EOF'
{"id": "a", "question": "Tom has 12 apples. He gives 5 apples to Ann and buys 9 more. How many apples does Tom have now?", "answer": "16"}
{"id": "b", "question": "A box holds 6 pens. How many pens are in 7 boxes?", "answer": "42"}
{"id": "c", "question": "Mia reads 15 pages a day. How many pages does she read in 4 days?", "answer": "60"}
{"id": "d", "question": "There are 40 birds on a tree. 17 fly away and 8 come back. How many birds are on the tree?", "answer": "31"}
EOF
cat >"$work/train.jsonl" <<'EOF'
{"prompt": "Q: A box holds 6 pens. How many pens are in 7 boxes?\nA:", "completion": " 7 boxes of 6 pens is 7 * 6 = 42 pens. The answer is 42."}
{"prompt": "Q: Tom has 12 apples and gives 5 away. How many are left?\nA:", "completion": " 12 - 5 = 7. The answer is 7."}
{"prompt": "Q: Mia reads 15 pages a day for 4 days. How many pages?\nA:", "completion": " 15 * 4 = 60. The answer is 60."}
{"prompt": "Q: 40 birds sit on a tree and 17 fly away. How many stay?\nA:", "completion": " 40 - 17 = 23. The answer is 23."}
{"prompt": "Q: A shop sells 9 cakes a day. How many in 3 days?\nA:", "completion": " 9 * 3 = 27. The answer is 27."}
{"prompt": "Q: Sam has 8 coins and finds 11 more. How many coins?\nA:", "completion": " 8 + 11 = 19. The answer is 19."}
{"prompt": "Q: 56 students split into 7 equal groups. How big is a group?\nA:", "completion": " 56 / 7 = 8. The answer is 8."}
{"prompt": "Q: A train has 5 cars of 20 seats. How many seats?\nA:", "completion": " 5 * 20 = 100. The answer is 100."}
EOF
# The "text" of every path of a paths file, one per line.
texts() { grep -o '"text": *"\([^"\\]\|\\.\)*"' "$1"; }
if [[ ! -f "$seed/model.safetensors" ]]; then
    skip "lmsi checks" "no seed model in the bundle"
elif [[ $gpu -eq 0 ]]; then
    skip "lmsi generate/train --device cuda" "no CUDA driver (libcuda) found"
else
    generate=(generate --model "$seed" --questions "$work/questions.jsonl" --paths 2 --max-new-tokens 64)
    for mode in greedy sampled; do
        sampling=(--temperature 0)
        [[ $mode == sampled ]] && sampling=(--temperature 0.7 --seed 3)
        run "lmsi generate $mode (cpu)" "$lmsi" "${generate[@]}" "${sampling[@]}" --device cpu --out "$work/$mode-cpu.jsonl"
        if run "lmsi generate $mode (cuda)" "$lmsi" "${generate[@]}" "${sampling[@]}" --device cuda --out "$work/$mode-cuda.jsonl"; then
            total="$(texts "$work/$mode-cpu.jsonl" | wc -l)"
            same="$(paste -d '\n' <(texts "$work/$mode-cpu.jsonl") <(texts "$work/$mode-cuda.jsonl") | paste - - | awk -F'\t' '$1 == $2' | wc -l)"
            if [[ "$same" == "$total" && "$total" -gt 0 ]]; then
                rows+=("lmsi $mode paths, cuda = cpu"$'\t'"same $same of $total paths"$'\t'"-")
            else
                rows+=("lmsi $mode paths, cuda = cpu"$'\t'"DIFF: $same of $total paths the same (logits differ by rounding)"$'\t'"-")
            fi
        fi
    done
    train=(train --model "$seed" --data "$work/train.jsonl" --steps 4 --batch-size 4 --lr 1e-3)
    for device in cpu cuda; do
        if run "lmsi train (${device})" "$lmsi" "${train[@]}" --device "$device" --out "$work/trained-$device"; then
            notes+=("lmsi train ($device): $(grep -o 'loss [0-9.]* -> [0-9.]*' "$last_log" | head -n1)")
        fi
    done
fi

if [[ $bench -eq 1 ]]; then
    bench_model="${LMSI_BENCH_MODEL:-$seed}"
    for device in cuda cpu; do
        run "bench generate ($device)" env LMSI_BENCH_DEVICE="$device" LMSI_BENCH_MODEL="$bench_model" "$here/benches/generate"
        run "bench train ($device)" env LMSI_BENCH_DEVICE="$device" LMSI_BENCH_SEED_MODEL="$seed" "$here/benches/train"
    done
    for log in "$logs"/bench_*.log; do
        while IFS= read -r line; do
            notes+=("$(basename "$log" .log): $line")
        done < <(grep -E 'tokens/s|^generate:|^train:' "$log")
    done
fi

echo
printf '%-44s  %-70s  %8s\n' "what" "result" "seconds"
printf '%-44s  %-70s  %8s\n' "----" "------" "-------"
for row in "${rows[@]}"; do
    IFS=$'\t' read -r what result secs <<<"$row"
    printf '%-44s  %-70s  %8s\n' "$what" "$result" "$secs"
done
if [[ ${#notes[@]} -gt 0 ]]; then
    echo
    printf '%s\n' "${notes[@]}"
fi
echo
echo "$failed failed; logs in $logs"
[[ $failed -eq 0 ]]
