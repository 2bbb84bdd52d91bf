//! `cargo xtask bench generate`: sampling throughput on SmolLM2-135M-Instruct.
//!
//! The workload of the self-improvement "generate" step: one few-shot chain-of-thought prompt of about
//! 380 tokens, 32 paths of exactly 96 new tokens each (EOS and stop strings ignored), temperature 0.7,
//! top-k 40, with the prompt computed once and shared by the 32 paths. Prints prompt tokens/s, sampled
//! tokens/s (the prompt's time counted) and the achieved GFLOP/s against the machine's f32 GEMM peak,
//! measured in the same run. Then a profile of one decode step: its parts timed alone at the step's
//! shapes (every layer's matrix products, the output projection, attention over all layers at the
//! mean context, sampling), each as a share of the measured step, with the products' GFLOP/s
//! against the peak; what they leave is the rest (norms, RoPE, SwiGLU, KV writes, scheduling).
//!
//! `LMSI_BENCH_DEVICE=cuda` (with the crate's `cuda` feature) runs it on GPU 0 instead, with weights
//! and KV cache at `LMSI_BENCH_DTYPE` (`f32`, the default, or `bf16`), printing the same throughputs
//! and the GFLOP/s achieved (no CPU peak to compare with), and then two parts of one decode step
//! timed alone: the paged attention of one layer for the 32 paths at their last token (the bytes
//! of keys and values it reads per second), and the sampling of their 32 rows of logits.
//!
//! `LMSI_BENCH_PROMPT_OUT=FILE` writes the workload (the prompt's token ids and the sampling
//! settings) as JSON, so that another implementation can run the same one (the GPU bundle's
//! PyTorch comparison does).
//!
//! The model directory is `LMSI_BENCH_MODEL`, else `~/.cache/lmsi-test-models/smollm2-135m-instruct`
//! (`cargo xtask bench` fetches it with `shared/tools/fetch-smollm2.sh` when it can).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use lmsi_benches::{Device, cpu_dtype_refused, device, dtype, gemm_peak_gflops, model_dir, result};
use lmsi_cuda::plan::PagedPlan;
use lmsi_data::{ExemplarSet, PromptFormat};
use lmsi_sampler::{RowKey, SamplingParams};
use lmsi_transformer::backend::{BatchLayout, Linear, SeqLayout};
use lmsi_transformer::generate::{Control, GenerateConfig, Request, generate};
use lmsi_transformer::{Backend, CpuBackend, Model, Tokenizer};

const PATHS: usize = 32;
const NEW_TOKENS: usize = 96;
const PROMPT_TOKENS: usize = 380;
const SAMPLING: SamplingParams = SamplingParams {
    temperature: 0.7,
    top_k: 40,
    top_p: 1.0,
    seed: 0,
};

fn main() {
    // As the `lmsi` program does, so that these numbers are what it gets.
    lmsi::allocator::keep_freed_memory();
    let Some(dir) = model_dir() else {
        eprintln!(
            "generate benchmark skipped: no model (set LMSI_BENCH_MODEL or run shared/tools/fetch-smollm2.sh)"
        );
        return;
    };
    match device() {
        Device::Cpu => match cpu_dtype_refused() {
            Some(why) => eprintln!("generate benchmark skipped: {why}"),
            None => {
                decode_step_parts(&bench(&dir, CpuBackend::new()));
            }
        },
        Device::Cuda => bench_gpu(&dir),
    }
}

/// The benchmark on GPU 0 and one decode step's parts timed alone, or why it cannot run (no GPU,
/// or a build without `--features cuda`).
fn bench_gpu(dir: &Path) {
    match lmsi_benches::gpu() {
        Ok(gpu) => {
            let run = bench(dir, gpu);
            decode_attention(&run.model, run.prompt_tokens + NEW_TOKENS, true);
            sampling(&run.model);
        }
        Err(e) => eprintln!("generate benchmark skipped: no usable GPU: {e}"),
    }
}

/// What the generation benchmark measured, for the step profiles after it.
struct Measured<B: Backend> {
    model: Model<B>,
    prompt_tokens: usize,
    /// The second run's time per decode step (the steps after the prompt's).
    step_seconds: f64,
    /// The CPU's f32 GEMM peak in GFLOP/s (on the CPU only).
    peak: Option<f64>,
}

/// The generation benchmark.
fn bench<B: Backend>(dir: &Path, backend: B) -> Measured<B> {
    let model = Model::load(dir, backend).expect("loading the benchmark model");
    let tokenizer = Tokenizer::load(dir, model.config()).expect("loading its tokenizer");

    // As many built-in exemplars as fit in about PROMPT_TOKENS tokens, then one question.
    let question = "A shop has 48 apples. It sells 15 apples in the morning and 9 in the afternoon. How many apples are left?";
    let all = ExemplarSet::builtin();
    let format = PromptFormat::CotFewshot;
    let mut prefix = Vec::new();
    for n in 1..=all.exemplars().len() {
        let candidate = tokenizer
            .encode(&format.prefix(&all.first(n).unwrap()), true)
            .unwrap();
        if candidate.len() > PROMPT_TOKENS && !prefix.is_empty() {
            break;
        }
        prefix = candidate;
    }
    let request = Request {
        key: "bench".into(),
        tokens: tokenizer
            .encode(&format.question_part(question), false)
            .unwrap(),
        paths: PATHS,
    };
    let prompt_tokens = prefix.len() + request.tokens.len();
    if let Some(path) = std::env::var_os("LMSI_BENCH_PROMPT_OUT") {
        write_workload(Path::new(&path), &prefix, &request.tokens);
    }
    let config = GenerateConfig {
        sampling: SAMPLING,
        max_new_tokens: NEW_TOKENS,
        stop_strings: Vec::new(),
        max_batch: PATHS,
        stop_at_eos: false,
        wave: None,
        ..GenerateConfig::default()
    };
    let threads = rayon::current_num_threads();
    println!(
        "generate: {} on {}, prompt {prompt_tokens} tokens, {PATHS} paths x {NEW_TOKENS} new tokens",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        model.backend().describe()
    );
    // The CPU's own matrix-product speed, to say how much of it the run achieves.
    let peak = (device() == Device::Cpu).then(|| {
        let peak = gemm_peak_gflops();
        println!("f32 GEMM peak (gemm crate, 1024^3, {threads} threads): {peak:.1} GFLOP/s");
        peak
    });

    let c = model.config();
    let (d, layers) = (c.hidden_size as f64, c.num_layers as f64);
    let layer_matmul =
        d * c.qkv_dim() as f64 + c.attn_dim() as f64 * d + 3.0 * d * c.intermediate_size as f64;
    let head = c.vocab_size as f64 * d;
    // Multiply-adds of one token at context length `ctx`: the layers' matrix products and attention
    // (scores and weighted values over `ctx` positions).
    let token_flops =
        |ctx: f64| 2.0 * (layers * layer_matmul + layers * 2.0 * ctx * c.attn_dim() as f64);

    let mut last = None;
    for run in 1..=2 {
        let mut sampled = 0;
        let stats = generate(
            &model,
            &tokenizer,
            &prefix,
            std::slice::from_ref(&request),
            &config,
            &mut |p| {
                sampled += p.tokens.len();
                Control::Continue
            },
        )
        .unwrap();
        assert_eq!(sampled, PATHS * NEW_TOKENS);
        let prompt_flops: f64 = (0..prompt_tokens)
            .map(|p| token_flops(p as f64 + 1.0))
            .sum::<f64>()
            + 2.0 * head;
        let sampled_flops: f64 = PATHS as f64
            * (0..NEW_TOKENS)
                .map(|i| token_flops((prompt_tokens + i) as f64 + 1.0) + 2.0 * head)
                .sum::<f64>();
        let gflops = (prompt_flops + sampled_flops) / stats.seconds / 1e9;
        let of_peak = peak.map_or(String::new(), |p| {
            format!(" ({:.0}% of the GEMM peak)", 100.0 * gflops / p)
        });
        println!(
            "run {run}: prompt {:.0} tokens/s, sampled {:.1} tokens/s, {:.1} s in all, {gflops:.1} GFLOP/s{of_peak}",
            stats.prompt_tokens_per_second(),
            stats.sampled_tokens_per_second(),
            stats.seconds,
        );
        last = Some((stats, gflops));
    }
    // The second run: kernels compiled and memory warm.
    let (stats, gflops) = last.expect("two runs");
    let key = format!("generate.{}.{}", device().name(), dtype());
    if let Some(peak) = peak {
        result(&format!("{key}.gemm_peak_share"), gflops / peak);
    }
    result(
        &format!("{key}.prompt_tokens_per_s"),
        stats.prompt_tokens_per_second(),
    );
    result(
        &format!("{key}.sampled_tokens_per_s"),
        stats.sampled_tokens_per_second(),
    );
    Measured {
        model,
        prompt_tokens,
        step_seconds: (stats.seconds - stats.prompt_seconds) / (NEW_TOKENS - 1) as f64,
        peak,
    }
}

/// A profile of one decode step of the workload on the CPU: its parts timed alone at the step's
/// shapes (the 32 paths' rows; attention at the mean context of the sampled tokens), each as a
/// share of the step time the runs measured, and the matrix products' speed against the GEMM
/// peak. What the parts leave is the rest of the step (norms, RoPE, SwiGLU, KV writes, the
/// scheduler).
fn decode_step_parts<B: Backend>(run: &Measured<B>) {
    let (model, step) = (&run.model, run.step_seconds);
    let c = model.config();
    let peak = run.peak.unwrap_or_else(gemm_peak_gflops);
    let (layer_products, head) = decode_products(model);
    let context = run.prompt_tokens + NEW_TOKENS / 2;
    let attention = c.num_layers as f64 * decode_attention(model, context, false);
    let sampling = sampling(model);
    let layer_flops: usize = model
        .params()
        .layers
        .iter()
        .map(|l| {
            let l = l.linears(c);
            [l.qkv, l.o, l.gate_up, l.down]
                .iter()
                .map(|x| 2 * PATHS * x.in_features * x.out_features)
                .sum::<usize>()
        })
        .sum();
    let head_flops = 2 * PATHS * c.hidden_size * c.vocab_size;
    let rest = step - layer_products - head - attention - sampling;
    println!(
        "one decode step ({PATHS} paths): {:.1} ms measured; its parts timed alone:",
        step * 1e3
    );
    for (part, key, seconds, flops) in [
        (
            "the layers' matrix products",
            "layer_products",
            layer_products,
            Some(layer_flops),
        ),
        (
            "the output projection",
            "output_projection",
            head,
            Some(head_flops),
        ),
        ("attention, all layers", "attention", attention, None),
        ("sampling", "sampling", sampling, None),
        ("the rest", "rest", rest, None),
    ] {
        let speed = flops.map_or(String::new(), |f| {
            let gflops = f as f64 / seconds / 1e9;
            format!(
                ", {gflops:.1} GFLOP/s ({:.0}% of the GEMM peak)",
                100.0 * gflops / peak
            )
        });
        println!(
            "  {part}: {:.1} ms, {:.0}% of the step{speed}",
            seconds * 1e3,
            100.0 * seconds / step
        );
        result(&format!("decode_step.cpu.{key}_share"), seconds / step);
    }
}

/// Times the matrix products of one decode step, every layer's weights in turn as the step reads
/// them, and the output projection; returns the seconds of each per step.
fn decode_products<B: Backend>(model: &Model<B>) -> (f64, f64) {
    let (be, c) = (model.backend(), model.config());
    let widest = c.intermediate_size.max(c.qkv_dim()).max(c.hidden_size);
    let x = be.upload(&vec![0.01; PATHS * widest]).unwrap();
    let out = std::cell::RefCell::new(be.zeros(PATHS * widest.max(c.vocab_size)).unwrap());
    let product = |linear: &Linear<'_, B::Buf>| {
        let mut out = out.borrow_mut();
        be.matmul(&mut out, &x, linear, PATHS, false).unwrap();
        finish(be, &out);
    };
    let layers = || {
        for layer in &model.params().layers {
            let l = layer.linears(c);
            for linear in [l.qkv, l.o, l.gate_up, l.down] {
                product(&linear);
            }
        }
    };
    let head = || product(&model.params().output_linear(c));
    let timed = |f: &dyn Fn()| {
        f();
        let repeats = 5;
        let start = Instant::now();
        for _ in 0..repeats {
            f();
        }
        start.elapsed().as_secs_f64() / repeats as f64
    };
    (timed(&layers), timed(&head))
}

/// Writes the workload as JSON: the shared prefix's and the question's token ids, and how it
/// samples.
fn write_workload(path: &Path, prefix: &[u32], question: &[u32]) {
    let json = format!(
        "{{\"prefix\": {prefix:?}, \"question\": {question:?}, \"paths\": {PATHS}, \
         \"new_tokens\": {NEW_TOKENS}, \"temperature\": {}, \"top_k\": {}, \"top_p\": {}}}\n",
        SAMPLING.temperature, SAMPLING.top_k, SAMPLING.top_p
    );
    std::fs::write(path, json).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Times the paged attention of one layer for a decode step of the workload: the 32 paths at
/// context length `context`, sharing the prompt's full blocks (as forked paths do), the rest in
/// blocks of their own. Prints the time per call and returns its seconds; with `gpu_plan`, also
/// the bytes of keys and values the CUDA kernel reads per second: every position of every block
/// once per work item that reads it (an item reads a block shared by several of its rows once).
fn decode_attention<B: Backend>(model: &Model<B>, context: usize, gpu_plan: bool) -> f64 {
    let be = model.backend();
    let bs = GenerateConfig::default().block_size;
    let dims = model.attention_dims(bs);
    let prompt = context - NEW_TOKENS;
    let shared = prompt / bs;
    let per_seq = context.div_ceil(bs);
    let own = per_seq - shared;
    let mut layout = BatchLayout::default();
    for s in 0..PATHS {
        let table: Vec<u32> = (0..shared)
            .chain((0..own).map(|b| shared + s * own + b))
            .map(|b| b as u32)
            .collect();
        let last = context - 1;
        layout.seqs.push(SeqLayout {
            token_start: s as u32,
            num_tokens: 1,
            context_len: context as u32,
            table_start: layout.block_tables.len() as u32,
        });
        layout.token_ids.push(0);
        layout.positions.push(last as u32);
        layout
            .slots
            .push(table[last / bs] * bs as u32 + (last % bs) as u32);
        layout.logit_rows.push(s as u32);
        layout.block_tables.extend(table);
    }
    let blocks = shared + PATHS * own;
    let cache = || be.kv_zeros(blocks * dims.block_len()).unwrap();
    let (k, v) = (cache(), cache());
    let qkv_values: Vec<f32> = (0..PATHS * dims.qkv_dim())
        .map(|i| ((i % 17) as f32 - 8.0) * 0.05)
        .collect();
    let qkv = be.upload(&qkv_values).unwrap();
    let mut out = be.zeros(PATHS * dims.num_heads * dims.head_dim).unwrap();
    let prepared = be.prepare(&layout).unwrap();
    let call = |out: &mut _| {
        be.paged_attention(out, &qkv, &k, &v, &prepared, &dims)
            .unwrap()
    };
    for _ in 0..10 {
        call(&mut out);
    }
    finish(be, &out);
    let repeats = 500;
    let start = Instant::now();
    for _ in 0..repeats {
        call(&mut out);
    }
    finish(be, &out);
    let seconds = start.elapsed().as_secs_f64() / repeats as f64;
    if !gpu_plan {
        println!(
            "decode attention ({PATHS} paths at context {context}, one layer): {:.1} us per call",
            seconds * 1e6
        );
        return seconds;
    }

    // The positions each work item reads, as the backend plans the items.
    let group = (dims.num_heads / dims.num_kv_heads) as u32;
    let row_tables: Vec<u32> = layout.seqs.iter().map(|s| s.table_start).collect();
    let plan = PagedPlan::new(&row_tables, &layout.block_tables, group);
    let mut positions = 0;
    for item in plan.item_offsets.windows(2) {
        let mut read: HashMap<u32, usize> = HashMap::new();
        for &row in &plan.item_rows[item[0] as usize..item[1] as usize] {
            let table = &layout.block_tables[row_tables[row as usize] as usize..][..per_seq];
            for (logical, &physical) in table.iter().enumerate() {
                let visible = bs.min(context - logical * bs);
                let entry = read.entry(physical).or_default();
                *entry = (*entry).max(visible);
            }
        }
        positions += read.values().sum::<usize>();
    }
    let bytes = 2 * positions * dims.num_kv_heads * dims.head_dim * be.dtype().bytes() as usize;
    let gb_per_s = bytes as f64 / seconds / 1e9;
    println!(
        "decode attention ({} cache, {PATHS} paths at context {context}, one layer, {} work items): \
         {:.1} us per call, {:.2} MB of keys and values read, {gb_per_s:.1} GB/s",
        be.dtype(),
        plan.num_items(),
        seconds * 1e6,
        bytes as f64 / 1e6,
    );
    result(
        &format!("decode_attention.{}.us", be.dtype()),
        seconds * 1e6,
    );
    result(
        &format!("decode_attention.{}.gb_per_s", be.dtype()),
        gb_per_s,
    );
    seconds
}

/// Waits for everything queued on `buf`'s device: reading one value back does.
fn finish<B: Backend>(be: &B, buf: &B::Buf) {
    be.download(&be.copy_range(buf, 0, 1).unwrap()).unwrap();
}

/// Times the sampling of one decode step: 32 rows of the vocabulary's logits (f32 at any dtype),
/// temperature 0.7 and top-k 40, tokens back on the host.
fn sampling<B: Backend>(model: &Model<B>) -> f64 {
    let be = model.backend();
    let vocab = model.config().vocab_size;
    let values: Vec<f32> = (0..PATHS * vocab)
        .map(|i| (lmsi_sampler::random_u64(11, i as u64, 0) % 2000) as f32 * 0.005 - 5.0)
        .collect();
    let logits = be.upload(&values).unwrap();
    let rows: Vec<u32> = (0..PATHS as u32).collect();
    let draw = |step: u32| {
        let keys: Vec<RowKey> = (0..PATHS as u64).map(|s| RowKey::new(s, step)).collect();
        be.sample(&logits, &rows, vocab, &SAMPLING, &keys).unwrap()
    };
    for step in 0..5 {
        draw(step);
    }
    let repeats = 200;
    let start = Instant::now();
    for step in 0..repeats {
        draw(step);
    }
    let per_row = start.elapsed().as_secs_f64() / (repeats as usize * PATHS) as f64;
    println!(
        "sampling ({PATHS} rows of {vocab}, T {}, top-k {}): {:.2} us per row, {:.1} us per step",
        SAMPLING.temperature,
        SAMPLING.top_k,
        per_row * 1e6,
        per_row * PATHS as f64 * 1e6
    );
    result(&format!("sample.{}.us_per_row", be.dtype()), per_row * 1e6);
    per_row * PATHS as f64
}
