//! The CUDA backend against the CPU backend on the same inputs: every operation, whole forward passes
//! of tiny random models (prefill, forks sharing a prefix, decode), a whole backward pass, and AdamW
//! steps. Each test runs three times: with the CPU backend standing in (CPU against CPU, which
//! checks the test itself), on the simulated CUDA device (the backend's host code, its launches
//! and cuBLAS calls, run on the CPU: every machine, CI included), then on the GPU, or prints why
//! it cannot.
//!
//! Tolerances, `|gpu - cpu| <= atol + rtol·|cpu|`:
//! - exact (bit for bit): uploads and copies, gathers and scatters (embedding, logit rows, the
//!   embedding gradient), the KV-cache store, block copies, adds, scaling, the bias gradient, and
//!   the AdamW update;
//! - sampling: the same tokens; log-probabilities to `1e-6 + 1e-6·|x|`;
//! - element-wise maths with `exp`/`sin`/`cos` (RMSNorm, RoPE, SwiGLU, cross-entropy) and
//!   attention: `1e-5 + 1e-5·|x|` (its backward `1e-5 + 1e-4·|x|`); sums of squares: `1e-12`
//!   relative;
//! - cuBLAS products (another summation order over `k` up to 300): `1e-4 + 1e-4·|x|`;
//! - whole models: logits `1e-4 + 1e-4·|x|`, the loss `1e-5` relative, and each gradient tensor to
//!   `1e-4` of its largest value;
//! - generation with the seed model (greedy and sampled, one row at a time and six together): the
//!   same tokens, text and finish of every path, the path log-probability to `1e-3` relative;
//! - one lmsi-adamw trainer step of a tiny model from the same gradients (clipping, the update):
//!   exact, the gradient norm to `1e-12` relative;
//! - eight trainer steps on the seed model: each step's loss to `1e-4` relative.
//!
//! Every comparison prints `max-error WHAT WHERE VALUE` (the largest `|got - want|`; `WHERE` is
//! `cpu`, `sim` or `gpu`; shown with `--nocapture`), which the GPU bundle's `run.sh` gathers into
//! its table.
use std::sync::OnceLock;

use lmsi_adamw::{AdamWConfig, LrSchedule, StepParams, Trainer, TrainerConfig};
use lmsi_sampler::{RowKey, SampleError, SamplingParams};
use lmsi_transformer::backend::{
    AttentionDims, AttentionSaved, Backend, BatchLayout, Linear, LinearGrad, RmsNormGrad, Rotation,
    SeqLayout,
};
use lmsi_transformer::config::Config;
use lmsi_transformer::generate::{Control, GenerateConfig, generate};
use lmsi_transformer::testing::{self, TinyModel, nonzero_values, scattered_prefill_layout};
use lmsi_transformer::{
    Chunk, CpuBackend, CudaBackend, Error, Logits, Model, Params, SeqId, Storage, TrainSequence,
};

/// The GPU, opened once; `None` with the reason printed by each test that needs it.
fn gpu(test: &str) -> Option<&'static CudaBackend> {
    static GPU: OnceLock<Result<CudaBackend, String>> = OnceLock::new();
    match GPU.get_or_init(|| CudaBackend::new(0).map_err(|e| e.to_string())) {
        Ok(gpu) => Some(gpu),
        Err(reason) => {
            eprintln!("{test}: skipped, no usable GPU: {reason}");
            None
        }
    }
}

const CPU: CpuBackend = CpuBackend;

/// Where `be` runs, in one word: `cpu`, `sim` or `gpu`.
fn kind<B: Backend>(be: &B) -> &'static str {
    match be.describe() {
        d if d.starts_with("sim") => "sim",
        d if d.starts_with("cuda") => "gpu",
        _ => "cpu",
    }
}

/// Prints `max-error WHAT WHERE VALUE`: `WHAT` is the first word of `what`, `VALUE` the largest
/// `|got - want|` (NaN if any value is).
fn print_max_error(on: &str, what: &str, got: &[f32], want: &[f32]) {
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, |m, e| {
            if e.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(e)
            }
        });
    let what = what
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .trim_end_matches([',', ':']);
    println!("max-error {what} {on} {worst:e}");
}

/// Asserts `|got - want| <= atol + rtol·|want|` element-wise, after [`print_max_error`].
#[track_caller]
fn assert_close<B: Backend>(be: &B, what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    print_max_error(kind(be), what, got, want);
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}]: gpu {g}, cpu {w} (error {err:e})"
        );
    }
}

/// Asserts bit-identical results, after [`print_max_error`].
#[track_caller]
fn assert_bits<B: Backend>(be: &B, what: &str, got: &[f32], want: &[f32]) {
    print_max_error(kind(be), what, got, want);
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}[{i}]: gpu {g}, cpu {w}");
    }
}

fn up<B: Backend>(be: &B, data: &[f32]) -> B::Buf {
    be.upload(data).unwrap()
}

fn down<B: Backend>(be: &B, buf: &B::Buf) -> Vec<f32> {
    be.download(buf).unwrap()
}

/// The CUDA backend on the simulated device, shared by the tests of one binary.
fn sim() -> &'static CudaBackend {
    static SIM: OnceLock<CudaBackend> = OnceLock::new();
    SIM.get_or_init(CudaBackend::sim)
}

/// A test run with the CPU backend in the place of the CUDA backend (CPU against CPU: this checks
/// the test itself), on the simulated device, and on the GPU when there is one.
macro_rules! on_backends {
    ($(fn $name:ident($be:ident) $body:block)*) => {$(
        #[test]
        fn $name() {
            fn check<B: Backend + Clone>($be: &B) $body
            check(&CpuBackend::new());
            check(sim());
            if let Some(gpu) = gpu(stringify!($name)) {
                check(gpu);
            }
        }
    )*};
}

/// A packed training batch of sequences of `lens` tokens, with a logit row and target for every
/// token after the first of each sequence.
fn train_layout(lens: &[usize]) -> BatchLayout {
    let mut l = BatchLayout::default();
    for &len in lens {
        let start = l.token_ids.len() as u32;
        l.seqs.push(SeqLayout {
            token_start: start,
            num_tokens: len as u32,
            context_len: len as u32,
            table_start: 0,
        });
        for p in 0..len as u32 {
            l.token_ids.push((p * 11 + start) % 200);
            l.positions.push(p);
            if p > 0 {
                l.logit_rows.push(start + p - 1);
                l.targets.push((p * 13 + 5) % 200);
            }
        }
    }
    l
}

fn dims(heads: usize, kv_heads: usize, head_dim: usize, window: Option<usize>) -> AttentionDims {
    AttentionDims {
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
        window,
        block_size: 4,
    }
}

fn inv_freq(head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 10000f32.powf(-2.0 * i as f32 / head_dim as f32))
        .collect()
}

#[test]
fn the_backend_names_its_device() {
    assert!(
        sim().describe().starts_with("sim ("),
        "{}",
        sim().describe()
    );
    let Some(gpu) = gpu("the_backend_names_its_device") else {
        return;
    };
    assert!(gpu.describe().starts_with("cuda:0 ("), "{}", gpu.describe());
}

on_backends! {
    fn buffers_round_trip_exactly(be) {
        let data = nonzero_values(1000, 1, 3.0);
        let buf = up(be, &data);
        assert_eq!(be.len(&buf), 1000);
        assert_bits(be, "download", &down(be, &buf), &data);
        assert_bits(be, "copy", &down(be, &be.copy(&buf).unwrap()), &data);
        let range = be.copy_range(&buf, 123, 456).unwrap();
        assert_bits(be, "copy_range", &down(be, &range), &data[123..579]);
        assert!(be.copy_range(&buf, 900, 101).is_err());
        let mut zeroed = be.copy(&buf).unwrap();
        be.zero(&mut zeroed).unwrap();
        assert_eq!(down(be, &zeroed), vec![0.0; 1000]);
        assert_eq!(down(be, &be.zeros(77).unwrap()), vec![0.0; 77]);
        assert_eq!(be.len(&be.zeros(0).unwrap()), 0);
        assert!(down(be, &up(be, &[])).is_empty());
    }

    fn embedding_and_its_backward_are_exact(be) {
        let (vocab, dim) = (260, 48);
        let layout = scattered_prefill_layout(&[9, 30], 4);
        let t = layout.num_tokens();
        let table = nonzero_values(vocab * dim, 2, 1.0);
        let (cl, bl) = (CPU.prepare(&layout).unwrap(), be.prepare(&layout).unwrap());
        let mut want = vec![0.0; t * dim];
        CPU.embedding(&mut want, &table, &cl, dim).unwrap();
        let mut got = up(be, &vec![f32::NAN; t * dim]);
        be.embedding(&mut got, &up(be, &table), &bl, dim).unwrap();
        assert_bits(be, "embedding", &down(be, &got), &want);

        let d_out = nonzero_values(t * dim, 3, 1.0);
        let start = nonzero_values(vocab * dim, 4, 0.5);
        let mut want = start.clone();
        CPU.embedding_backward(&mut want, &d_out, &cl, dim).unwrap();
        let mut got = up(be, &start);
        be.embedding_backward(&mut got, &up(be, &d_out), &bl, dim).unwrap();
        assert_bits(be, "embedding_backward", &down(be, &got), &want);

        let bad = BatchLayout {
            token_ids: vec![3, vocab as u32],
            positions: vec![0, 1],
            slots: vec![0, 1],
            ..BatchLayout::default()
        };
        let mut out = be.zeros(2 * dim).unwrap();
        // An id past the table is a buffer error, forward and backward (the model checks token ids
        // against the vocabulary before a step reaches the backend).
        let prepared = be.prepare(&bad).unwrap();
        let err = be.embedding(&mut out, &up(be, &table), &prepared, dim).unwrap_err();
        assert!(matches!(&err, Error::Backend(m) if m.contains("outside the table")), "{err}");
        let mut d_table = up(be, &vec![0.0; table.len()]);
        let err = be.embedding_backward(&mut d_table, &out, &prepared, dim).unwrap_err();
        assert!(matches!(&err, Error::Backend(m) if m.contains("outside the table")), "{err}");
    }

    fn rmsnorm_and_its_backward_match(be) {
        for (rows, dim) in [(1, 32), (70, 100), (130, 257)] {
            let x = nonzero_values(rows * dim, 5, 2.0);
            let w = nonzero_values(dim, 6, 1.0);
            let mut want = vec![0.0; rows * dim];
            CPU.rmsnorm(&mut want, &x, &w, rows, 1e-5).unwrap();
            let mut got = be.zeros(rows * dim).unwrap();
            be.rmsnorm(&mut got, &up(be, &x), &up(be, &w), rows, 1e-5).unwrap();
            assert_close(be, "rmsnorm", &down(be, &got), &want, 1e-5, 1e-5);

            let d_out = nonzero_values(rows * dim, 7, 1.0);
            let (dx0, dw0) = (nonzero_values(rows * dim, 8, 0.5), nonzero_values(dim, 9, 0.5));
            let (mut want_dx, mut want_dw) = (dx0.clone(), dw0.clone());
            CPU.rmsnorm_backward(RmsNormGrad { input: &mut want_dx, weight: &mut want_dw }, &d_out, &x, &w, rows, 1e-5)
                .unwrap();
            let (mut dx, mut dw) = (up(be, &dx0), up(be, &dw0));
            let (d_out, x, w) = (up(be, &d_out), up(be, &x), up(be, &w));
            be.rmsnorm_backward(RmsNormGrad { input: &mut dx, weight: &mut dw }, &d_out, &x, &w, rows, 1e-5)
                .unwrap();
            assert_close(be, "rmsnorm_backward d_x", &down(be, &dx), &want_dx, 1e-5, 1e-5);
            assert_close(be, "rmsnorm_backward d_weight", &down(be, &dw), &want_dw, 1e-5, 1e-5);
        }
    }

    fn matrix_products_match_in_every_direction(be) {
        // Few rows (decode; the CPU's unpacked kernel) and many (prefill; the gemm crate).
        for (m, n, k) in [(1, 5, 3), (7, 96, 64), (130, 300, 48), (65, 33, 300)] {
            let x = nonzero_values(m * k, 10, 1.0);
            let w = nonzero_values(n * k, 11, 1.0);
            let bias = nonzero_values(n, 12, 1.0);
            let start = nonzero_values(m * n, 13, 1.0);
            let (bx, bw, bb) = (up(be, &x), up(be, &w), up(be, &bias));
            for accumulate in [false, true] {
                for with_bias in [false, true] {
                    let mut want = start.clone();
                    CPU.matmul(&mut want, &x, &Linear::new(&w, k, n).with_bias(with_bias.then_some(&bias)), m, accumulate)
                        .unwrap();
                    let mut got = up(be, &start);
                    be.matmul(&mut got, &bx, &Linear::new(&bw, k, n).with_bias(with_bias.then_some(&bb)), m, accumulate)
                        .unwrap();
                    let what =
                        format!("matmul {m}x{n}x{k}, accumulate {accumulate}, bias {with_bias}");
                    assert_close(be, &what, &down(be, &got), &want, 1e-4, 1e-4);
                }
            }

            let d_out = nonzero_values(m * n, 14, 1.0);
            let bd = up(be, &d_out);
            let dx0 = nonzero_values(m * k, 15, 1.0);
            for accumulate in [false, true] {
                let mut want = dx0.clone();
                CPU.matmul_backward_input(&mut want, &d_out, &Linear::new(&w, k, n), m, accumulate)
                    .unwrap();
                let mut got = up(be, &dx0);
                be.matmul_backward_input(&mut got, &bd, &Linear::new(&bw, k, n), m, accumulate)
                    .unwrap();
                assert_close(be, "matmul_backward_input", &down(be, &got), &want, 1e-4, 1e-4);
            }
            let (dw0, db0) = (nonzero_values(n * k, 16, 1.0), nonzero_values(n, 17, 1.0));
            let (mut want_dw, mut want_db) = (dw0.clone(), db0.clone());
            CPU.matmul_backward_weight(grad(&mut want_dw, &mut want_db, k, n), &d_out, &x, m)
                .unwrap();
            let (mut dw, mut db) = (up(be, &dw0), up(be, &db0));
            be.matmul_backward_weight(grad(&mut dw, &mut db, k, n), &bd, &bx, m)
                .unwrap();
            assert_close(be, "matmul_backward_weight d_w", &down(be, &dw), &want_dw, 1e-4, 1e-4);
            assert_bits(be, "matmul_backward_weight d_bias", &down(be, &db), &want_db);
        }
    }

    fn rope_swiglu_and_their_backwards_match(be) {
        let d = dims(8, 2, 16, None);
        let layout = scattered_prefill_layout(&[5, 40], 4);
        let t = layout.num_tokens();
        let (cl, bl) = (CPU.prepare(&layout).unwrap(), be.prepare(&layout).unwrap());
        let freqs = inv_freq(d.head_dim);
        let bf = up(be, &freqs);
        let qkv = nonzero_values(t * d.qkv_dim(), 18, 1.0);
        for (name, rotation) in [("rope", Rotation::Forward), ("rope_backward", Rotation::Inverse)] {
            let mut want = qkv.clone();
            CPU.rope(&mut want, &cl, &d, &freqs, rotation).unwrap();
            let mut got = up(be, &qkv);
            be.rope(&mut got, &bl, &d, &bf, rotation).unwrap();
            assert_close(be, name, &down(be, &got), &want, 1e-5, 1e-5);
        }

        let (rows, inter) = (33, 70);
        let gate_up = nonzero_values(rows * 2 * inter, 19, 4.0);
        let mut want = vec![0.0; rows * inter];
        CPU.swiglu(&mut want, &gate_up, rows, inter).unwrap();
        let mut got = be.zeros(rows * inter).unwrap();
        be.swiglu(&mut got, &up(be, &gate_up), rows, inter).unwrap();
        assert_close(be, "swiglu", &down(be, &got), &want, 1e-5, 1e-5);
        let d_out = nonzero_values(rows * inter, 20, 1.0);
        let mut want = vec![0.0; rows * 2 * inter];
        CPU.swiglu_backward(&mut want, &d_out, &gate_up, rows, inter).unwrap();
        let mut got = be.zeros(rows * 2 * inter).unwrap();
        be.swiglu_backward(&mut got, &up(be, &d_out), &up(be, &gate_up), rows, inter)
            .unwrap();
        assert_close(be, "swiglu_backward", &down(be, &got), &want, 1e-5, 1e-5);
    }

    fn paged_cache_store_and_attention_match(be) {
        for (heads, kv_heads, window) in [(4, 2, None), (8, 2, Some(6)), (3, 3, None)] {
            let d = dims(heads, kv_heads, 16, window);
            let layout = scattered_prefill_layout(&[7, 13, 1], d.block_size);
            let t = layout.num_tokens();
            let (cl, bl) = (CPU.prepare(&layout).unwrap(), be.prepare(&layout).unwrap());
            let qkv = nonzero_values(t * d.qkv_dim(), 21, 1.0);
            let cache_len = 101 * d.block_len();
            let (mut k, mut v) = (vec![0.0; cache_len], vec![0.0; cache_len]);
            CPU.kv_store(&mut k, &mut v, &qkv, &cl, &d).unwrap();
            let (mut bk, mut bv) = (be.zeros(cache_len).unwrap(), be.zeros(cache_len).unwrap());
            let bq = up(be, &qkv);
            be.kv_store(&mut bk, &mut bv, &bq, &bl, &d).unwrap();
            assert_bits(be, "kv_store key cache", &down(be, &bk), &k);
            assert_bits(be, "kv_store value cache", &down(be, &bv), &v);

            let attn = heads * d.head_dim;
            let mut want = vec![0.0; t * attn];
            CPU.paged_attention(&mut want, &qkv, &k, &v, &cl, &d).unwrap();
            let mut got = up(be, &vec![f32::NAN; t * attn]);
            be.paged_attention(&mut got, &bq, &bk, &bv, &bl, &d).unwrap();
            let what = format!("paged_attention, {heads}/{kv_heads} heads, window {window:?}");
            assert_close(be, &what, &down(be, &got), &want, 1e-5, 1e-5);

            // A slot outside the cache is an error.
            let mut small_k = be.zeros(d.block_len()).unwrap();
            let mut small_v = be.zeros(d.block_len()).unwrap();
            assert!(be.kv_store(&mut small_k, &mut small_v, &bq, &bl, &d).is_err());
        }
    }

    fn rows_blocks_adds_and_scaling_are_exact(be) {
        let layout = train_layout(&[6, 9, 4]);
        let (cl, bl) = (CPU.prepare(&layout).unwrap(), be.prepare(&layout).unwrap());
        let (t, dim) = (layout.num_tokens(), 40);
        let x = nonzero_values(t * dim, 22, 1.0);
        let rows = 3..11;
        let mut want = vec![0.0; rows.len() * dim];
        CPU.gather_logit_rows(&mut want, &x, &cl, rows.clone(), dim).unwrap();
        let mut got = be.zeros(rows.len() * dim).unwrap();
        be.gather_logit_rows(&mut got, &up(be, &x), &bl, rows.clone(), dim).unwrap();
        assert_bits(be, "gather_logit_rows", &down(be, &got), &want);
        let src = nonzero_values(rows.len() * dim, 23, 1.0);
        let mut want = x.clone();
        CPU.scatter_logit_rows(&mut want, &src, &cl, rows.clone(), dim).unwrap();
        let mut got = up(be, &x);
        be.scatter_logit_rows(&mut got, &up(be, &src), &bl, rows, dim).unwrap();
        assert_bits(be, "scatter_logit_rows", &down(be, &got), &want);

        let block_len = 24;
        let cache = nonzero_values(10 * block_len, 24, 1.0);
        for (src, dst) in [(2, 7), (8, 1)] {
            let mut want = cache.clone();
            CPU.copy_block(&mut want, src, dst, block_len).unwrap();
            let mut got = up(be, &cache);
            be.copy_block(&mut got, src, dst, block_len).unwrap();
            assert_bits(be, "copy_block", &down(be, &got), &want);
        }

        let (a, b) = (nonzero_values(5000, 25, 1.0), nonzero_values(5000, 26, 1.0));
        let mut want = a.clone();
        CPU.add_assign(&mut want, &b, 4321).unwrap();
        CPU.scale(&mut want, 0.37).unwrap();
        let mut got = up(be, &a);
        be.add_assign(&mut got, &up(be, &b), 4321).unwrap();
        be.scale(&mut got, 0.37).unwrap();
        assert_bits(be, "add_assign and scale", &down(be, &got), &want);
    }

    fn training_attention_and_its_backward_match(be) {
        for (heads, kv_heads, window) in [(4, 2, None), (8, 2, Some(5)), (2, 1, None)] {
            let d = AttentionDims {
                block_size: 1,
                ..dims(heads, kv_heads, 16, window)
            };
            let layout = train_layout(&[3, 40, 17]);
            let t = layout.num_tokens();
            let (cl, bl) = (CPU.prepare(&layout).unwrap(), be.prepare(&layout).unwrap());
            let qkv = nonzero_values(t * d.qkv_dim(), 27, 1.0);
            let attn = heads * d.head_dim;
            let (mut out, mut lse) = (vec![0.0; t * attn], vec![0.0; t * heads]);
            CPU.causal_attention(&mut out, &mut lse, &qkv, &cl, &d).unwrap();
            let bq = up(be, &qkv);
            let (mut bout, mut blse) = (be.zeros(t * attn).unwrap(), be.zeros(t * heads).unwrap());
            be.causal_attention(&mut bout, &mut blse, &bq, &bl, &d).unwrap();
            let what = format!("{heads}/{kv_heads} heads, window {window:?}");
            assert_close(be, &format!("causal_attention out, {what}"), &down(be, &bout), &out, 1e-5, 1e-5);
            assert_close(be, &format!("causal_attention lse, {what}"), &down(be, &blse), &lse, 1e-5, 1e-5);

            let d_out = nonzero_values(t * attn, 28, 1.0);
            let mut want = vec![f32::NAN; t * d.qkv_dim()];
            CPU.causal_attention_backward(&mut want, &d_out, &AttentionSaved { qkv: &qkv, out: &out, lse: &lse }, &cl, &d)
                .unwrap();
            let mut got = up(be, &vec![f32::NAN; t * d.qkv_dim()]);
            let bd = up(be, &d_out);
            be.causal_attention_backward(&mut got, &bd, &AttentionSaved { qkv: &bq, out: &bout, lse: &blse }, &bl, &d)
                .unwrap();
            assert_close(be, &format!("causal_attention_backward d_qkv, {what}"), &down(be, &got), &want, 1e-5, 1e-4);
        }
    }

    fn cross_entropy_matches_and_checks_targets(be) {
        let vocab = 260;
        let layout = train_layout(&[5, 8]);
        let (cl, bl) = (CPU.prepare(&layout).unwrap(), be.prepare(&layout).unwrap());
        let rows = 2..9;
        let logits = nonzero_values(rows.len() * vocab, 29, 6.0);
        let mut want = logits.clone();
        // One weight per row, of either sign (a policy-gradient advantage can be negative).
        let scales: Vec<f32> = (0..rows.len()).map(|i| 0.125 * (i as f32 - 2.5)).collect();
        let want_loss = CPU.cross_entropy(&mut want, &cl, rows.clone(), vocab, &scales).unwrap();
        let mut got = up(be, &logits);
        let loss = be.cross_entropy(&mut got, &bl, rows.clone(), vocab, &scales).unwrap();
        assert_close(be, "cross_entropy loss", &loss, &want_loss, 1e-5, 1e-5);
        assert_close(be, "cross_entropy gradient", &down(be, &got), &want, 1e-7, 1e-5);
        // Targets of these rows (18 to 96) reach past a vocabulary of 20.
        let err = be
            .cross_entropy(&mut up(be, &logits), &bl, rows, 20, &scales)
            .unwrap_err();
        assert!(matches!(&err, Error::Backend(m) if m.contains("outside a row's 20 logits")), "{err}");
    }

    fn sampling_draws_the_cpu_tokens(be) {
        let vocab = 300;
        let logits = nonzero_values(6 * vocab, 30, 5.0);
        let on_be = up(be, &logits);
        // Rows out of order and repeated, as generation asks for them.
        let rows = [4u32, 0, 5, 5, 2];
        let keys: Vec<RowKey> = (0..rows.len() as u64).map(|i| RowKey::new(i * 7 + 1, 3)).collect();
        type Pick = fn(&lmsi_sampler::Sampled) -> f32;
        let logprob: Pick = |s| s.logprob;
        let sampling_logprob: Pick = |s| s.sampling_logprob;
        for params in [
            SamplingParams::greedy(),
            SamplingParams::default(),
            SamplingParams {
                temperature: 1.2,
                top_k: 0,
                top_p: 0.9,
                seed: 17,
            },
        ] {
            let want = CPU.sample(&logits, &rows, vocab, &params, &keys).unwrap();
            let got = be.sample(&on_be, &rows, vocab, &params, &keys).unwrap();
            let tokens: Vec<u32> = got.iter().map(|s| s.token).collect();
            let want_tokens: Vec<u32> = want.iter().map(|s| s.token).collect();
            assert_eq!(tokens, want_tokens, "{params:?}");
            for (what, pick) in [("sample logprob", logprob), ("sample sampling_logprob", sampling_logprob)] {
                let got: Vec<f32> = got.iter().map(pick).collect();
                let want: Vec<f32> = want.iter().map(pick).collect();
                assert_close(be, what, &got, &want, 1e-6, 1e-6);
            }
        }
        // A NaN logit is an error naming the position in the keys (row 2 is at position 4).
        let mut bad = logits.clone();
        bad[2 * vocab + 17] = f32::NAN;
        let err = be
            .sample(&up(be, &bad), &rows, vocab, &SamplingParams::default(), &keys)
            .unwrap_err();
        assert!(
            matches!(err, Error::Sampling(SampleError::NanLogit { row: 4, index: 17 })),
            "{err}"
        );
    }

    fn sums_of_squares_and_adamw_steps_match(be) {
        for len in [1, 1000, 65_537, 300_000] {
            let x = nonzero_values(len, 31, 2.0);
            let want = CPU.sum_squares(&x).unwrap();
            let got = be.sum_squares(&up(be, &x)).unwrap();
            println!("max-error sum_squares {} {:e}", kind(be), (got - want).abs());
            assert!(((got - want) / want).abs() < 1e-12, "{len}: {got} vs {want}");
        }
        // Three steps of one tensor from the same gradients: the update is exact, so the states
        // stay identical.
        let n = 70_001;
        let param = nonzero_values(n, 32, 1.0);
        let (mut cp, mut cm, mut cv) = (param.clone(), vec![0.0; n], vec![0.0; n]);
        let (mut bp, mut bm, mut bv) = (up(be, &param), be.zeros(n).unwrap(), be.zeros(n).unwrap());
        let step = |step| {
            StepParams {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
                step,
            }
            .scalars()
        };
        for s in 1..=3 {
            let grad = nonzero_values(n, 40 + s, 1e-2);
            CPU.adamw_update(&mut cp, &grad, &mut cm, &mut cv, &step(s)).unwrap();
            be.adamw_update(&mut bp, &up(be, &grad), &mut bm, &mut bv, &step(s)).unwrap();
        }
        assert_bits(be, "adamw_update param", &down(be, &bp), &cp);
        assert_bits(be, "adamw_update m", &down(be, &bm), &cm);
        assert_bits(be, "adamw_update v", &down(be, &bv), &cv);
        let short = be.zeros(n - 1).unwrap();
        assert!(be.adamw_update(&mut bp, &short, &mut bm, &mut bv, &step(4)).is_err());
    }

    fn whole_forward_passes_give_the_cpu_logits(be) {
        for (name, config, params) in tiny_models() {
            let cpu = Model::from_host(config.clone(), &params, CpuBackend::new()).unwrap();
            let other = Model::from_host(config, &params, be.clone()).unwrap();
            let (mut cc, mut oc) = (cpu.new_cache(4, 64).unwrap(), other.new_cache(4, 64).unwrap());
            let prompt: Vec<u32> = (0..11).map(|i| (i * 23 % 250) as u32).collect();
            let second: Vec<u32> = (0..6).map(|i| (i * 41 % 250) as u32).collect();
            // Step 1: two prompts prefilled together, every logit of one, the last of the other.
            let (c0, c1) = (cc.create(), cc.create());
            let (o0, o1) = (oc.create(), oc.create());
            let prefill = |a, b| {
                [
                    Chunk { seq: a, tokens: &prompt[..], logits: Logits::All },
                    Chunk { seq: b, tokens: &second[..], logits: Logits::Last },
                ]
            };
            let want = cpu.forward(&mut cc, &prefill(c0, c1)).unwrap();
            let got = other.forward(&mut oc, &prefill(o0, o1)).unwrap();
            assert_close(be, &format!("forward {name}: prefill logits"), &got, &want, 1e-4, 1e-4);
            // Steps 2-4: the first prompt forked into three paths that share its blocks (the
            // partly filled last one is copied on write), each decoding its own tokens.
            let cpu_paths: Vec<SeqId> = (0..3).map(|_| cc.fork(c0).unwrap()).collect();
            let paths: Vec<SeqId> = (0..3).map(|_| oc.fork(o0).unwrap()).collect();
            for step in 0..3u32 {
                let tokens: Vec<[u32; 1]> =
                    (0..3).map(|p| [(step * 31 + p * 7 + 1) % 250]).collect();
                let decode = |seqs: &[SeqId]| -> Vec<Chunk<'_>> {
                    seqs.iter()
                        .zip(&tokens)
                        .map(|(&seq, t)| Chunk { seq, tokens: t, logits: Logits::Last })
                        .collect()
                };
                let want = cpu.forward(&mut cc, &decode(&cpu_paths)).unwrap();
                let got = other.forward(&mut oc, &decode(&paths)).unwrap();
                assert_close(be, &format!("forward {name}: decode step {step}"), &got, &want, 1e-4, 1e-4);
            }
        }
    }

    fn whole_backward_passes_give_the_cpu_gradients(be) {
        for (name, config, params) in tiny_models() {
            let cpu = Model::from_host(config.clone(), &params, CpuBackend::new()).unwrap();
            let other = Model::from_host(config, &params, be.clone()).unwrap();
            let batch = batch();
            let tokens: usize = batch.iter().map(TrainSequence::target_count).sum();
            let scale = 1.0 / tokens as f32;
            for recompute in [false, true] {
                let (mut cg, mut og) = (cpu.zero_grads().unwrap(), other.zero_grads().unwrap());
                let want = cpu.loss_and_grads(&batch, &mut cg, scale, recompute).unwrap();
                let got = other.loss_and_grads(&batch, &mut og, scale, recompute).unwrap();
                println!("max-error backward_loss {} {:e}", kind(be), (got.loss - want.loss).abs());
                assert_eq!(got.tokens, want.tokens);
                assert!(
                    ((got.loss - want.loss) / want.loss).abs() < 1e-5,
                    "{name}: loss {} vs {}",
                    got.loss,
                    want.loss
                );
                let specs = cpu.layout().tensors();
                for ((spec, c), o) in specs.into_iter().zip(cg.tensors()).zip(og.tensors()) {
                    let o = down(be, o);
                    let largest = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let worst = o.iter().zip(c).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                    println!("max-error backward {} {worst:e}", kind(be));
                    assert!(
                        worst <= 1e-4 * largest,
                        "{name}, recompute {recompute}: gradient of {} off by {worst:e} (largest {largest:e})",
                        spec.name
                    );
                }
            }
        }
    }

    fn an_adamw_step_of_a_model_matches(be) {
        let (_, config, params) = tiny_models().swap_remove(0);
        let mut cpu = Model::from_host(config.clone(), &params, CpuBackend::new()).unwrap();
        let mut other = Model::from_host(config, &params, be.clone()).unwrap();
        // The CPU's gradients on both, so that the step itself is compared: exactly.
        let mut grads = cpu.zero_grads().unwrap();
        cpu.loss_and_grads(&batch(), &mut grads, 0.01, false).unwrap();
        let host = grads.try_map(|g| CPU.download(g)).unwrap();
        // Clipped to half the norm, so that the scaling takes part.
        let half_norm = 0.5 * lmsi_adamw::global_norm(&host.tensors().iter().map(|g| g.as_slice()).collect::<Vec<_>>());
        let (cpu_stats, cpu_params) = one_trainer_step(&mut cpu, &host, half_norm);
        let (other_stats, other_params) = one_trainer_step(&mut other, &host, half_norm);

        let (norm, other_norm) = (cpu_stats.grad_norm, other_stats.grad_norm);
        assert!(((other_norm - norm) / norm).abs() < 1e-12, "{other_norm} vs {norm}");
        let specs = cpu.layout().tensors();
        for ((spec, w), g) in specs.into_iter().zip(cpu_params.tensors()).zip(other_params.tensors()) {
            assert_bits(be, &format!("adamw_step {}", spec.name), g, w);
        }
    }
}

/// One lmsi-adamw trainer step of `model` (lr 1e-3, clipped to `max_grad_norm`) whose gradient is
/// `grads`: the step's statistics and the parameters after it.
fn one_trainer_step<B: Backend>(
    model: &mut Model<B>,
    grads: &Params<Vec<f32>>,
    max_grad_norm: f64,
) -> (lmsi_adamw::StepStats, Params<Vec<f32>>) {
    let config = TrainerConfig {
        adamw: AdamWConfig::default(),
        schedule: LrSchedule::constant(1e-3),
        max_grad_norm: Some(max_grad_norm),
        decay_all: false,
    };
    let mut trainer = Trainer::new(&*model, config).unwrap();
    let stats = trainer
        .step(model, [grads], |model, grads, sums| {
            let be = model.backend();
            for (sum, g) in sums.tensors_mut().into_iter().zip(grads.tensors()) {
                be.add_assign(sum, &be.upload(g)?, g.len())?;
            }
            Ok(0.0)
        })
        .unwrap();
    (stats, model.params_to_host().unwrap())
}

/// A weight gradient `[n, k]` and its bias gradient `[n]` to add into.
fn grad<'a, T>(weight: &'a mut T, bias: &'a mut T, k: usize, n: usize) -> LinearGrad<'a, T> {
    LinearGrad {
        weight,
        bias: Some(bias),
        in_features: k,
        out_features: n,
    }
}

/// Tiny models covering the architecture's options: grouped-query attention, q/k/v biases, tied
/// embeddings, a sliding window.
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
        TinyModel {
            model_type: "mistral",
            layers: 3,
            seed: 3,
            ..TinyModel::default()
        },
    ];
    variants
        .into_iter()
        .map(|tiny| {
            let mut json = tiny.config_json();
            if tiny.model_type == "mistral" {
                json["sliding_window"] = 6.into();
            }
            let config = Config::from_json(&json.to_string()).unwrap();
            (tiny.model_type.to_string(), config, tiny.params())
        })
        .collect()
}

/// A training batch: completions after prompts of several lengths, and two target spans in one.
fn batch() -> Vec<TrainSequence> {
    vec![
        TrainSequence::completion((0..19).map(|i| (i * 17 % 250) as u32).collect(), 7),
        TrainSequence::completion((0..5).map(|i| (i * 29 % 250) as u32).collect(), 1),
        TrainSequence {
            tokens: (0..40).map(|i| (i * 13 % 250) as u32).collect(),
            targets: vec![3..10, 20..40],
        },
    ]
}

/// Every path of one generation run.
fn generate_paths<B: Backend>(
    backend: B,
    sampling: SamplingParams,
    max_batch: usize,
) -> Vec<lmsi_transformer::generate::Path> {
    let (model, tokenizer) = testing::seed_model(backend, Storage::Inference).unwrap();
    let (prefix, requests) = testing::word_problems(&tokenizer, 2).unwrap();
    let config = GenerateConfig {
        sampling,
        max_new_tokens: 40,
        stop_strings: vec!["\n\n".into()],
        max_batch,
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
fn generation_gives_the_cpu_tokens() {
    let sampled = SamplingParams {
        temperature: 0.7,
        top_k: 40,
        top_p: 1.0,
        seed: 3,
    };
    for (sampling, what) in [(SamplingParams::greedy(), "greedy"), (sampled, "sampled")] {
        for max_batch in [1, 6] {
            let want = generate_paths(CpuBackend::new(), sampling, max_batch);
            let mut others = vec![("sim", generate_paths(sim().clone(), sampling, max_batch))];
            if let Some(gpu) = gpu("generation_gives_the_cpu_tokens") {
                others.push(("gpu", generate_paths(gpu.clone(), sampling, max_batch)));
            }
            for (device, got) in others {
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    let at = format!(
                        "{what}, batch {max_batch}, {device}: path {}/{}",
                        w.request, w.path
                    );
                    assert_eq!(
                        (&g.tokens, &g.text, g.finish),
                        (&w.tokens, &w.text, w.finish),
                        "{at}"
                    );
                    println!(
                        "max-error generate_logprob {device} {:e}",
                        (g.logprob - w.logprob).abs()
                    );
                    assert!(
                        (g.logprob - w.logprob).abs() <= 1e-3 * w.logprob.abs().max(1.0),
                        "{at}"
                    );
                }
            }
        }
    }
}

/// The seed model's loss curve over `steps` steps on `backend`.
fn loss_curve<B: Backend>(backend: B, steps: usize) -> Vec<f64> {
    let (mut model, tokenizer) = testing::seed_model(backend, Storage::Training).unwrap();
    testing::loss_curve(&mut model, &tokenizer, steps).unwrap()
}

#[test]
fn a_short_training_run_follows_the_cpu_loss_curve() {
    let want = loss_curve(CpuBackend::new(), 8);
    assert!(want[7] < want[0], "the loss falls: {want:?}");
    let mut others = vec![("sim", loss_curve(sim().clone(), 8))];
    if let Some(gpu) = gpu("a_short_training_run_follows_the_cpu_loss_curve") {
        others.push(("gpu", loss_curve(gpu.clone(), 8)));
    }
    for (device, got) in others {
        for (step, (g, w)) in got.iter().zip(&want).enumerate() {
            println!("max-error train_loss {device} {:e}", (g - w).abs());
            assert!(
                ((g - w) / w).abs() < 1e-4,
                "{device}, step {}: loss {g} vs {w}",
                step + 1
            );
        }
    }
}
