//! `cargo xtask bench generate`: sampling throughput on SmolLM2-135M-Instruct.
//!
//! The workload of the self-improvement "generate" step: one few-shot chain-of-thought prompt of about
//! 380 tokens, 32 paths of exactly 96 new tokens each (EOS and stop strings ignored), temperature 0.7,
//! top-k 40, with the prompt computed once and shared by the 32 paths. Prints prompt tokens/s, sampled
//! tokens/s (the prompt's time counted) and the achieved GFLOP/s against the machine's f32 GEMM peak,
//! measured in the same run.
//!
//! `LMSI_BENCH_DEVICE=cuda` (with the crate's `cuda` feature) runs it on GPU 0 instead, printing the
//! same throughputs and the GFLOP/s achieved (no CPU peak to compare with).
//!
//! The model directory is `LMSI_BENCH_MODEL`, else `~/.cache/lmsi-test-models/smollm2-135m-instruct`
//! (`cargo xtask bench` fetches it with `shared/tools/fetch-smollm2.sh` when it can).

use std::path::PathBuf;

use lmsi_benches::{Device, device, gemm_peak_gflops, model_dir};
use lmsi_data::{ExemplarSet, PromptFormat};
use lmsi_sampler::SamplingParams;
use lmsi_transformer::generate::{Control, GenerateConfig, Request, generate};
use lmsi_transformer::{Backend, CpuBackend, Model, Tokenizer};

const PATHS: usize = 32;
const NEW_TOKENS: usize = 96;
const PROMPT_TOKENS: usize = 380;

fn main() {
    let Some(dir): Option<PathBuf> = model_dir() else {
        eprintln!(
            "generate benchmark skipped: no model (set LMSI_BENCH_MODEL or run shared/tools/fetch-smollm2.sh)"
        );
        return;
    };
    match device() {
        Device::Cpu => bench(&dir, CpuBackend::new()),
        Device::Cuda => bench_gpu(&dir),
    }
}

/// The benchmark on GPU 0, or why it cannot run (no GPU, or a build without `--features cuda`).
fn bench_gpu(dir: &std::path::Path) {
    match lmsi_transformer::CudaBackend::new(0) {
        Ok(gpu) => bench(dir, gpu),
        Err(e) => eprintln!("generate benchmark skipped: no usable GPU: {e}"),
    }
}

fn bench<B: Backend>(dir: &std::path::Path, backend: B) {
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
    let config = GenerateConfig {
        sampling: SamplingParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 1.0,
            seed: 0,
        },
        max_new_tokens: NEW_TOKENS,
        stop_strings: Vec::new(),
        max_batch: PATHS,
        stop_at_eos: false,
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
    }
}
