//! The CUDA backend at bf16 ([`Dtype::Bf16`]) against the CPU backend in f32: whole forward passes
//! of tiny random models, generation with the seed model, and a short training run, on the
//! simulated device (every machine, CI included) and on the GPU when there is one.
//!
//! bf16 keeps 8 bits of mantissa, so nothing here is compared bit for bit with the CPU; the
//! tolerances below are what bf16 costs, measured on these inputs with some headroom:
//! - logits of tiny random models (prefill and decode, weights and KV cache in bf16): within
//!   `0.03·max|logit|` of the CPU's (measured: about 0.01);
//! - generation with the seed model: bf16 runs are deterministic (the same tokens and
//!   log-probabilities, bit for bit, run after run), and greedy decoding agrees with the CPU's on
//!   most leading tokens (at least 80% of the first 8 tokens of the paths, and every path's first
//!   token);
//! - activations: the products' inputs are stored in bf16, so a forward step's activation memory
//!   falls by at least half of those buffers' f32 bytes;
//! - eight lmsi-adamw trainer steps on the seed model loaded for training (f32 master weights, bf16 products):
//!   each step's loss within 2% of the CPU's, and the loss falls as much.
//!
//! Each test prints its measured errors (`bf16 ...` lines, shown with `--nocapture`).
use std::sync::OnceLock;

use lmsi_sampler::SamplingParams;
use lmsi_transformer::config::Config;
use lmsi_transformer::generate::{Control, GenerateConfig, Path, generate};
use lmsi_transformer::testing::{self, TinyModel};
use lmsi_transformer::{
    Backend, Chunk, CpuBackend, CudaBackend, Dtype, Logits, Model, Params, Storage,
};

/// The simulated device at bf16, and the GPU at bf16 when there is one (else the reason printed).
fn bf16_backends(test: &str) -> Vec<(&'static str, CudaBackend)> {
    static GPU: OnceLock<Result<CudaBackend, String>> = OnceLock::new();
    let mut out = vec![("sim", CudaBackend::sim().with_dtype(Dtype::Bf16))];
    match GPU.get_or_init(|| CudaBackend::new(0).map_err(|e| e.to_string())) {
        Ok(gpu) => out.push(("gpu", gpu.clone().with_dtype(Dtype::Bf16))),
        Err(reason) => eprintln!("{test}: GPU part skipped, no usable GPU: {reason}"),
    }
    out
}

/// The largest `|got - want|` over the largest `|want|`.
fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let largest = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
    worst / largest
}

fn tiny_models() -> Vec<(String, Config, Params<Vec<f32>>)> {
    let variants = [
        TinyModel::default(),
        TinyModel {
            model_type: "qwen2",
            heads: 8,
            kv_heads: 2,
            hidden_size: 64,
            tied: true,
            seed: 2,
            ..TinyModel::default()
        },
    ];
    variants
        .into_iter()
        .map(|tiny| {
            let config = Config::from_json(&tiny.config_json().to_string()).unwrap();
            (tiny.model_type.to_string(), config, tiny.params())
        })
        .collect()
}

/// The logits of a prefill of two prompts, then two decode steps of the first, one after another.
fn logits<B: Backend>(model: &Model<B>) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache(4, 64).unwrap();
    let prompt: Vec<u32> = (0..11).map(|i| (i * 23 % 250) as u32).collect();
    let second: Vec<u32> = (0..6).map(|i| (i * 41 % 250) as u32).collect();
    let (a, b) = (cache.create(), cache.create());
    let prefill = [
        Chunk {
            seq: a,
            tokens: &prompt,
            logits: Logits::All,
        },
        Chunk {
            seq: b,
            tokens: &second,
            logits: Logits::Last,
        },
    ];
    let mut out = vec![model.forward(&mut cache, &prefill).unwrap()];
    for token in [7u32, 99] {
        let step = [Chunk {
            seq: a,
            tokens: &[token],
            logits: Logits::Last,
        }];
        out.push(model.forward(&mut cache, &step).unwrap());
    }
    out
}

#[test]
fn bf16_forward_passes_follow_the_cpu_logits() {
    for (name, config, params) in tiny_models() {
        let want = logits(&Model::from_host(config.clone(), &params, CpuBackend::new()).unwrap());
        for (device, be) in bf16_backends("bf16_forward_passes_follow_the_cpu_logits") {
            let model = Model::from_host(config.clone(), &params, be).unwrap();
            for (step, (g, w)) in logits(&model).iter().zip(&want).enumerate() {
                let err = relative_error(g, w);
                println!("bf16 logits {name} step {step} {device}: {err:.2e} of the largest");
                assert!(err < 0.03, "{name}, step {step}, {device}: {err}");
            }
        }
    }
}

#[test]
fn bf16_stores_weight_matrices_and_caches_in_half_the_memory() {
    let (_, config, params) = tiny_models().swap_remove(0);
    let bytes = |be: CudaBackend| {
        let free = || be.device().memory().unwrap().0;
        let before = free();
        let model = Model::from_host(config.clone(), &params, be.clone()).unwrap();
        let cache = model.new_cache(4, 64).unwrap();
        let used = before - free();
        drop((model, cache));
        used
    };
    let (f32_bytes, bf16_bytes) = (
        bytes(CudaBackend::sim()),
        bytes(CudaBackend::sim().with_dtype(Dtype::Bf16)),
    );
    // Norm weights and the rotary frequencies stay f32: a little over half.
    let ratio = bf16_bytes as f64 / f32_bytes as f64;
    println!("bf16 memory: {bf16_bytes} bytes against {f32_bytes} in f32 ({ratio:.3})");
    assert!((0.5..0.52).contains(&ratio), "{ratio}");
}

/// A forward step's activations: the products' inputs (normalised residual, attention output,
/// SwiGLU output, final norm rows) are written in bf16 by their kernels, with no f32 copy and no
/// separate rounding pass, so the step's peak falls by at least their f32 halves.
#[test]
fn bf16_stores_the_products_input_activations_in_bf16() {
    let (_, config, params) = tiny_models().swap_remove(0);
    let tokens = 40;
    let step_peak = |be: CudaBackend| {
        let model = Model::from_host(config.clone(), &params, be.clone()).unwrap();
        let mut cache = model.new_cache(4, 64).unwrap();
        let prompt: Vec<u32> = (0..tokens).map(|i| (i * 23 % 250) as u32).collect();
        let seq = cache.create();
        let chunk = Chunk {
            seq,
            tokens: &prompt,
            logits: Logits::Last,
        };
        let device = be.device();
        let held = device.memory().map(|(free, total)| total - free).unwrap();
        device.reset_memory_peak();
        model.forward(&mut cache, &[chunk]).unwrap();
        device.memory_peak().unwrap() - held
    };
    let f32_peak = step_peak(CudaBackend::sim());
    let bf16_peak = step_peak(CudaBackend::sim().with_dtype(Dtype::Bf16));
    let operands =
        tokens as u64 * (config.hidden_size + config.attn_dim() + config.intermediate_size) as u64;
    println!(
        "bf16 forward step of {tokens} tokens: activations {bf16_peak} bytes against {f32_peak} in f32"
    );
    assert!(
        bf16_peak + 2 * operands <= f32_peak,
        "{bf16_peak} vs {f32_peak}"
    );
}

/// Every path of greedy or sampled generation for three questions of this project's own, two
/// paths each, six sequences decoding together.
fn generate_paths<B: Backend>(backend: B, sampling: SamplingParams) -> Vec<Path> {
    let (model, tokenizer) = testing::seed_model(backend, Storage::Inference).unwrap();
    let (prefix, requests) = testing::word_problems(&tokenizer, 2).unwrap();
    let config = GenerateConfig {
        sampling,
        max_new_tokens: 24,
        stop_strings: vec!["\n\n".into()],
        max_batch: 6,
        block_size: 16,
        stop_at_eos: true,
        wave: None,
    };
    let mut paths = Vec::new();
    generate(&model, &tokenizer, &prefix, &requests, &config, &mut |p| {
        paths.push(p.clone());
        Control::Continue
    })
    .unwrap();
    paths
}

#[test]
fn bf16_generation_is_deterministic_and_greedy_follows_the_cpu() {
    let sampled = SamplingParams {
        temperature: 0.7,
        top_k: 40,
        top_p: 1.0,
        seed: 3,
    };
    let want = generate_paths(CpuBackend::new(), SamplingParams::greedy());
    for (device, be) in bf16_backends("bf16_generation_is_deterministic_and_greedy_follows_the_cpu")
    {
        for sampling in [SamplingParams::greedy(), sampled] {
            let (first, again) = (
                generate_paths(be.clone(), sampling),
                generate_paths(be.clone(), sampling),
            );
            for (a, b) in first.iter().zip(&again) {
                assert_eq!(
                    (&a.tokens, a.logprob.to_bits()),
                    (&b.tokens, b.logprob.to_bits()),
                    "{device}, {sampling:?}: path {}/{} differs between two runs",
                    a.request,
                    a.path
                );
            }
        }
        let got = generate_paths(be.clone(), SamplingParams::greedy());
        let (mut agree, mut compared) = (0, 0);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.tokens.first(), w.tokens.first(), "{device}: first token");
            for (a, b) in g.tokens.iter().zip(&w.tokens).take(8) {
                compared += 1;
                if a != b {
                    break;
                }
                agree += 1;
            }
        }
        let share = agree as f64 / compared as f64;
        println!("bf16 greedy {device}: {agree} of {compared} leading tokens agree with the CPU");
        assert!(share >= 0.8, "{device}: {agree} of {compared}");
    }
}

/// The seed model's loss curve over `steps` steps on `backend`, loaded for training.
fn loss_curve<B: Backend>(backend: B, steps: usize) -> Vec<f64> {
    let (mut model, tokenizer) = testing::seed_model(backend, Storage::Training).unwrap();
    testing::loss_curve(&mut model, &tokenizer, steps).unwrap()
}

#[test]
fn bf16_training_keeps_f32_master_weights_and_follows_the_cpu_loss_curve() {
    let want = loss_curve(CpuBackend::new(), 8);
    for (device, be) in bf16_backends("bf16_training_keeps_f32_master_weights") {
        let got = loss_curve(be, 8);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| ((g - w) / w).abs())
            .fold(0.0, f64::max);
        println!("bf16 training {device}: losses {got:.4?}, CPU {want:.4?}, worst {worst:.2e}");
        assert!(worst < 0.02, "{device}: {got:?} vs {want:?}");
        assert!(got[7] < got[0], "{device}: the loss falls: {got:?}");
    }
}

#[test]
fn bf16_weights_loaded_for_inference_cannot_be_trained() {
    let backend = CudaBackend::sim().with_dtype(Dtype::Bf16);
    let (mut model, tokenizer) = testing::seed_model(backend, Storage::Inference).unwrap();
    let err = testing::loss_curve(&mut model, &tokenizer, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("load the model for training"), "{err}");
}
