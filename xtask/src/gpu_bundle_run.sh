#!/usr/bin/env bash
# lmsi's GPU check (the folder `cargo xtask gpu-bundle` makes). On a machine with an NVIDIA GPU and
# its driver, without Rust and without network, meant to take about five minutes (never more than
# $LMSI_BUNDLE_BUDGET_S, default 450 s: every phase has a timeout and the phases share the budget):
#
#   1. every CUDA test (kernels against CPU references, through the CPU shim, the simulated
#      device and the GPU; the CUDA backend against the CPU backend, f32 and bf16), with the
#      largest error of each kernel and whole step on each device;
#   2. `lmsi generate` and `lmsi train` on the bundled seed model, on the CPU and on the GPU;
#   3. the generate and train benchmarks on SmolLM2-135M-Instruct, f32 and bf16, on the GPU, with
#      decode attention's GB/s and sampling's time per row; the same generate workload with
#      PyTorch and transformers (bf16) when python3 has them.
#
# SmolLM2's weights are not in the bundle (too big): they are made here, seeded random values in
# the model's exact shapes (python3 with numpy, or with torch and safetensors). The benchmarks
# ignore EOS and sample a fixed number of tokens, so throughput does not depend on the values.
#
#   ./run.sh [OUTDIR] [--no-tests] [--no-bench]     OUTDIR default ./gpu-check-out
#
# Writes OUTDIR/table.md, OUTDIR/table.json and each run's output in OUTDIR/logs/, and prints the
# table. CUDA's libraries come from the bundle's lib/ (when it has NVRTC), CUDA_HOME, the usual
# install folders or python3's nvidia-* packages (PyTorch's). LMSI_PYTHON picks the python;
# LMSI_GPU_BANDWIDTH_GBPS and LMSI_GPU_BF16_TFLOPS give the peaks of a GPU the table does not know.
# Exits 1 when something failed; a part that cannot run here (no GPU, no torch) is skipped and
# says why, which is not a failure.
set -uo pipefail

started="$(date +%s)"
here="$(cd "$(dirname "$0")" && pwd)"
out="./gpu-check-out"
tests=1
bench=1
for arg in "$@"; do
    case "$arg" in
        --no-tests) tests=0 ;;
        --no-bench) bench=0 ;;
        -h | --help)
            sed -n '2,/^set -uo/p' "$0" | sed '$d'
            exit 0
            ;;
        -*)
            echo "run.sh: unknown option $arg" >&2
            exit 2
            ;;
        *) out="$arg" ;;
    esac
done
mkdir -p "$out/logs" || exit 2
out="$(cd "$out" && pwd)"
logs="$out/logs"
rm -f "$logs"/*.log
deadline=$((started + ${LMSI_BUNDLE_BUDGET_S:-450}))
python="${LMSI_PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export LMSI_KERNEL_CACHE="${LMSI_KERNEL_CACHE:-$work/kernel-cache}"
export LMSI_TEST_SEED_MODEL="$here/assets/seed-model"
export RUST_BACKTRACE=1

# ---- The CUDA libraries. cudarc opens libcuda, libnvrtc and libcublas by unversioned names (or
# CUDA 12's): link whatever version is found under those names, its folder on the library path too.
dirs=("$here/lib")
[[ -n "${CUDA_HOME:-}" ]] && dirs+=("$CUDA_HOME/lib64" "$CUDA_HOME/lib")
dirs+=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64)
dirs+=(/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64)
if command -v "$python" >/dev/null 2>&1; then
    while IFS= read -r d; do dirs+=("$d"); done < <("$python" -c '
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
notes=()
echo "CUDA libraries:"
for name in cuda nvrtc cublas cublasLt; do
    if f="$(find_lib "$name")"; then
        ln -sf "$f" "$links/lib$name.so"
        path="$path:$(dirname "$f")"
        echo "  lib$name: $f"
        notes+=("lib$name: $f")
    else
        echo "  lib$name: not found"
        notes+=("lib$name: not found")
    fi
done
export LD_LIBRARY_PATH="$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- The GPU and its peaks: memory bandwidth (GB/s) and dense bf16 tensor throughput (TFLOP/s),
# from the vendor's data sheets.
gpu_name=""
if ! command -v nvidia-smi >/dev/null 2>&1; then
    notes+=("GPU: nvidia-smi not found")
elif gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"; then
    gpu_name="$(head -n1 <<<"$gpu" | cut -d, -f1)"
    notes+=("GPU: $(head -n1 <<<"$gpu")")
else
    notes+=("GPU: nvidia-smi failed: $(head -n1 <<<"$gpu")")
fi
peaks() {
    shopt -s nocasematch
    case "$1" in
        *H200*NVL*) echo "4800 835" ;;
        *GH200*) echo "4000 989" ;;
        *H200*) echo "4800 989" ;;
        *H100*PCIe*) echo "2000 756" ;;
        *H100*NVL*) echo "3900 835" ;;
        *H100*) echo "3350 989" ;;
        *A100*40GB*) echo "1555 312" ;;
        *A100*80GB*PCIe*) echo "1935 312" ;;
        *A100*) echo "2039 312" ;;
        *L40S*) echo "864 362" ;;
        *L40*) echo "864 181" ;;
        *L4*) echo "300 121" ;;
    esac
    shopt -u nocasematch
}
read -r bandwidth bf16_peak < <(peaks "$gpu_name"; echo)
bandwidth="${LMSI_GPU_BANDWIDTH_GBPS:-${bandwidth:-}}"
bf16_peak="${LMSI_GPU_BF16_TFLOPS:-${bf16_peak:-}}"
notes+=("peaks: memory ${bandwidth:-n/a} GB/s, dense bf16 ${bf16_peak:-n/a} TFLOP/s (${gpu_name:-no GPU name})")
echo "GPU: ${gpu_name:-none found}; peaks ${bandwidth:-n/a} GB/s, ${bf16_peak:-n/a} TFLOP/s bf16"
echo

# ---- Runs. Each appends a row: what, result, seconds.
rows=()
failed=0
last_log=""

# run WHAT LIMIT COMMAND...: runs COMMAND for at most LIMIT seconds (less when the budget is
# nearly spent), its output in $last_log, records its row and returns its status.
run() {
    local what="$1" limit="$2"
    shift 2
    local log
    log="$logs/$(printf '%s' "$what" | tr -c 'A-Za-z0-9_.-' '_').log"
    last_log="$log"
    local left=$((deadline - $(date +%s)))
    ((left < limit)) && limit=$left
    if ((limit < 10)); then
        : >"$log"
        rows+=("$what"$'\t'"skipped: the time budget is spent"$'\t'"-")
        return 1
    fi
    local start rc secs result
    start="$(date +%s.%N)"
    timeout -k 5 "$limit" "$@" >"$log" 2>&1
    rc=$?
    secs="$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
    local passed failures skip
    passed="$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{ n += $4 } END { if (NR) print n + 0 }')"
    failures="$(grep -Eo '[0-9]+ failed' "$log" | awk '{ n += $1 } END { if (n) print n }')"
    skip="$(grep -m1 -i 'skipped' "$log" | cut -c1-140)"
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        result="FAIL: timed out after $limit s"
    elif [[ $rc -ne 0 ]]; then
        result="FAIL (exit $rc)"
    elif [[ -n "$skip" ]] && ! grep -q '^bench-result \|test result:' "$log"; then
        result="skipped: ${skip#*skipped: }"
    else
        result="pass"
    fi
    [[ -n "$passed" ]] && result="$result, $passed passed"
    [[ -n "$failures" ]] && result="$result, $failures failed"
    [[ $rc -ne 0 ]] && failed=$((failed + 1)) && result="$result (logs/$(basename "$log"))"
    [[ $rc -eq 0 && -n "$skip" && "$result" != skipped* ]] && result="$result; $skip"
    rows+=("$what"$'\t'"$result"$'\t'"$secs")
    return $rc
}

skip() {
    rows+=("$1"$'\t'"skipped: $2"$'\t'"-")
}

# ---- 1. The CUDA tests. They print why they skip a GPU part, and their max-error lines, only
# when not capturing output.
if [[ $tests -eq 1 ]]; then
    for t in "$here"/tests/*; do
        run "test $(basename "$t")" 120 "$t" --nocapture
    done
else
    skip "CUDA tests" "--no-tests"
fi

# Largest error of each kernel or step, per test binary and device, from the tests' max-error
# lines: "KERNEL<TAB>gpu 1.2e-07, sim 3.0e-08, ...".
for log in "$logs"/test_*.log; do
    [[ -f "$log" ]] || continue
    test="$(basename "$log" .log)"
    test="${test#test_}"
    while IFS=$'\t' read -r kernel errors; do
        rows+=("max error: $test $kernel"$'\t'"$errors"$'\t'"-")
    done < <(awk '
        $1 == "max-error" {
            key = $2 SUBSEP $3
            bad = ($4 !~ /^[0-9.eE+-]+$/)
            if (!(key in worst)) { order[++n] = key; worst[key] = 0 }
            if (bad) nan[key] = 1
            else if ($4 + 0 > worst[key]) worst[key] = $4 + 0
        }
        END {
            split("gpu sim shim cpu", devices, " ")
            for (i = 1; i <= n; i++) {
                split(order[i], kd, SUBSEP)
                if (kd[1] in done) continue
                done[kd[1]] = 1
                line = ""
                for (d = 1; d <= 4; d++) {
                    key = kd[1] SUBSEP devices[d]
                    if (!(key in worst)) continue
                    value = (key in nan) ? "NaN" : sprintf("%.1e", worst[key])
                    line = line (line == "" ? "" : ", ") devices[d] " " value
                }
                print kd[1] "\t" line
            }
        }' "$log")
    # The bf16 test measures its errors against the largest value, in its own lines.
    while IFS= read -r line; do
        notes+=("$test: $line")
    done < <(grep -E '^bf16 .* gpu[: ]' "$log" | cut -c1-160)
done

# ---- 2. lmsi on the seed model: the same greedy paths and the same training losses on the CPU
# and the GPU.
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
elif [[ ! -e "$links/libcuda.so" ]]; then
    skip "lmsi generate/train --device cuda" "no CUDA driver (libcuda) found"
else
    generate=(generate --model "$seed" --questions "$work/questions.jsonl" --paths 2 --max-new-tokens 64)
    for mode in greedy sampled; do
        sampling=(--temperature 0)
        [[ $mode == sampled ]] && sampling=(--temperature 0.7 --seed 3)
        run "lmsi generate $mode (cpu)" 60 "$lmsi" "${generate[@]}" "${sampling[@]}" --device cpu --out "$work/$mode-cpu.jsonl"
        if run "lmsi generate $mode (cuda)" 60 "$lmsi" "${generate[@]}" "${sampling[@]}" --device cuda --out "$work/$mode-cuda.jsonl"; then
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
        if run "lmsi train ($device)" 60 "$lmsi" "${train[@]}" --device "$device" --out "$work/trained-$device"; then
            notes+=("lmsi train ($device): $(grep -o 'loss [0-9.]* -> [0-9.]*' "$last_log" | head -n1)")
        fi
    done
fi

# ---- 3. The benchmarks on SmolLM2-135M-Instruct (random weights made here), and the PyTorch peer.
model="$work/smollm2-135m-instruct"
if [[ $bench -eq 0 ]]; then
    skip "benchmarks" "--no-bench"
elif [[ ! -f "$here/assets/smollm2-135m-instruct/config.json" ]]; then
    skip "benchmarks" "SmolLM2's config and tokenizer are not in the bundle"
elif ! command -v "$python" >/dev/null 2>&1; then
    skip "benchmarks" "no $python to make SmolLM2's weights"
elif ! run "make SmolLM2 weights (seeded random)" 120 "$python" "$here/make_weights.py" \
    "$here/assets/smollm2-135m-instruct" "$model"; then
    skip "benchmarks and PyTorch" "making the weights failed"
elif [[ ! -f "$model/model.safetensors" ]]; then
    skip "benchmarks and PyTorch" "no SmolLM2 weights (see the row above)"
else
    for dtype in f32 bf16; do
        run "bench generate $dtype (cuda)" 150 env LMSI_BENCH_DEVICE=cuda LMSI_BENCH_DTYPE="$dtype" \
            LMSI_BENCH_MODEL="$model" LMSI_BENCH_PROMPT_OUT="$work/workload.json" "$here/benches/generate"
    done
    run "bench generate bf16 (PyTorch)" 180 "$python" "$here/peer.py" "$model" "$work/workload.json"
    for dtype in f32 bf16; do
        run "bench train $dtype (cuda)" 150 env LMSI_BENCH_DEVICE=cuda LMSI_BENCH_DTYPE="$dtype" \
            LMSI_BENCH_MODEL="$model" LMSI_BENCH_SEED_MODEL="$seed" "$here/benches/train"
    done
    notes+=("SmolLM2's weights are seeded random values in its exact shapes (f32 safetensors); the benchmarks ignore EOS and sample exactly 96 tokens per path, so throughput does not depend on the values")
fi

# ---- The table's benchmark rows: the benchmarks' headline numbers: bench-result NAME VALUE.
declare -A res=()
for log in "$logs"/bench_*.log; do
    [[ -f "$log" ]] || continue
    while read -r _ name value; do
        res["$name"]="$value"
    done < <(grep '^bench-result ' "$log")
done
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { printf f, v }'; }
of() { # of VALUE PEAK: VALUE as a percentage of PEAK, or n/a
    if [[ -n "$2" ]]; then awk -v v="$1" -v p="$2" 'BEGIN { printf "%.1f%%", 100 * v / p }'; else echo "n/a"; fi
}
for dtype in f32 bf16; do
    v="${res[generate.cuda.$dtype.sampled_tokens_per_s]:-}"
    [[ -n "$v" ]] && rows+=("lmsi generate $dtype: sampled tokens/s"$'\t'"$(fmt "$v" %.0f) (prompt $(fmt "${res[generate.cuda.$dtype.prompt_tokens_per_s]:-0}" %.0f) tokens/s)"$'\t'"-")
done
torch_tps="${res[generate.torch.bf16.sampled_tokens_per_s]:-}"
if [[ -n "$torch_tps" ]]; then
    rows+=("PyTorch generate bf16: sampled tokens/s"$'\t'"$(fmt "$torch_tps" %.0f)"$'\t'"-")
    lmsi_tps="${res[generate.cuda.bf16.sampled_tokens_per_s]:-}"
    [[ -n "$lmsi_tps" ]] && rows+=("lmsi bf16 / PyTorch bf16"$'\t'"$(awk -v a="$lmsi_tps" -v b="$torch_tps" 'BEGIN { printf "%.2fx", a / b }')"$'\t'"-")
fi
for dtype in f32 bf16; do
    v="${res[decode_attention.$dtype.gb_per_s]:-}"
    [[ -n "$v" ]] && rows+=("decode attention $dtype: GB/s"$'\t'"$(fmt "$v" %.1f) GB/s, $(of "$v" "$bandwidth") of ${bandwidth:-n/a} GB/s ($(fmt "${res[decode_attention.$dtype.us]:-0}" %.1f) µs per layer)"$'\t'"-")
done
for dtype in f32 bf16; do
    v="${res[sample.$dtype.us_per_row]:-}"
    [[ -n "$v" ]] && rows+=("sampling ($dtype run): µs per row"$'\t'"$(fmt "$v" %.2f) µs (32 rows of 49152)"$'\t'"-")
done
for dtype in f32 bf16; do
    v="${res[train.smollm2.cuda.$dtype.tokens_per_s]:-}"
    t="${res[train.smollm2.cuda.$dtype.tflops]:-}"
    [[ -n "$v" ]] && rows+=("lmsi train $dtype: tokens/s"$'\t'"$(fmt "$v" %.0f), $(fmt "$t" %.1f) TFLOP/s (6 x parameters x tokens), $(of "$t" "$bf16_peak") of the dense bf16 peak (${bf16_peak:-n/a} TFLOP/s)"$'\t'"-")
done
notes+=("$failed failed; $(($(date +%s) - started)) s in all")

table="$out/table.md"
{
    echo "# lmsi GPU check"
    echo
    echo "| what | result | seconds |"
    echo "|---|---|---|"
    for row in "${rows[@]}"; do
        IFS=$'\t' read -r what result secs <<<"$row"
        echo "| $what | ${result//|/\\|} | $secs |"
    done
    echo
    printf -- '- %s\n' "${notes[@]}"
} >"$table"
{
    printf '%s\n' "${rows[@]}"
    echo "--notes--"
    printf '%s\n' "${notes[@]}"
    echo "--results--"
    for name in "${!res[@]}"; do printf '%s\t%s\n' "$name" "${res[$name]}"; done | sort
} | awk -F'\t' '
    function q(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, " ", s); return "\"" s "\"" }
    /^--notes--$/ { part = 1; next }
    /^--results--$/ { part = 2; next }
    part == 0 { rows = rows (rows == "" ? "" : ",\n    ") "{\"what\": " q($1) ", \"result\": " q($2) ", \"seconds\": " ($3 == "-" ? "null" : $3) "}" }
    part == 1 { notes = notes (notes == "" ? "" : ",\n    ") q($0) }
    part == 2 { results = results (results == "" ? "" : ",\n    ") q($1) ": " ($2 ~ /^-?[0-9.]+([eE][+-]?[0-9]+)?$/ ? $2 : q($2)) }
    END { printf "{\n  \"rows\": [\n    %s\n  ],\n  \"notes\": [\n    %s\n  ],\n  \"results\": {\n    %s\n  }\n}\n", rows, notes, results }
' >"$out/table.json"

echo
cat "$table"
echo
echo "table: $table (and table.json); logs in $logs"
[[ $failed -eq 0 ]]
