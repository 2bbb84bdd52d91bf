//! The attention kernels through the CPU shim against the CPU backend of lmsi-transformer: the
//! paged cache (store, decode and prefill rows, shared prefix blocks) and causal training attention
//! with its backward pass, over MHA and GQA, head sizes 64, 128 and odd ones, block sizes below,
//! at and above a tile, with and without a sliding window, under every fiber schedule.
//!
//! Tolerances: kv_store is exact, and so is kv_store_bf16 (the CPU's values rounded to nearest
//! even). Attention outputs and log-sum-exps differ from the CPU in the online softmax's order of
//! operations and in `exp`: `2e-6 + 2e-5·|x|`, for paged attention over bf16 caches too (against
//! the CPU over the same rounded caches). Gradients sum over many keys and queries:
//! `1e-5 + 1e-4·|x|`. The kernels that write a bf16 output (paged_attention_bf16,
//! causal_attention_forward_bf16) write their f32 twins' results rounded to nearest even, bit for
//! bit, and causal_attention_backward_delta_bf16 is its f32 twin over the widened output, exactly.

mod common;

use common::{Rng, assert_bits, assert_close, assert_rounded, poisoned, poisoned_bf16, runners};
use half::bf16;
use lmsi_cuda::params::*;
use lmsi_cuda::plan::{self, PagedPlan};
use lmsi_transformer::CpuBackend;
use lmsi_transformer::backend::{AttentionDims, AttentionSaved, Backend, BatchLayout, SeqLayout};

fn dims(
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    window: Option<usize>,
) -> AttentionDims {
    AttentionDims {
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
        window,
        block_size,
    }
}

fn shape(d: &AttentionDims) -> LmsiAttnShape {
    LmsiAttnShape {
        num_heads: d.num_heads as u32,
        num_kv_heads: d.num_kv_heads as u32,
        head_dim: d.head_dim as u32,
        block_size: d.block_size as u32,
        window: d.window.unwrap_or(0) as u32,
        scale: d.scale,
    }
}

/// One step over a paged cache: the layout, the step's fused rows and the cache before the step.
struct Step {
    layout: BatchLayout,
    qkv: Vec<f32>,
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
    cache_blocks: usize,
}

/// Sequences `(cached, new)`: `cached` positions already in the cache, `new` tokens this step.
/// Sequences with at least `prefix` cached positions share the physical blocks of the first
/// `prefix / block_size` blocks (siblings of one prompt); the other blocks are scattered.
fn paged_step(rng: &mut Rng, dims: AttentionDims, prefix: usize, seqs: &[(usize, usize)]) -> Step {
    let bs = dims.block_size;
    let cache_blocks = 400;
    // Physical blocks in a scrambled order.
    let mut free: Vec<u32> = (0..cache_blocks as u32).collect();
    for i in (1..free.len()).rev() {
        free.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let shared: Vec<u32> = (0..prefix / bs).map(|_| free.pop().unwrap()).collect();
    let mut layout = BatchLayout::default();
    for &(cached, new) in seqs {
        let context = cached + new;
        let mut table = Vec::new();
        for b in 0..context.div_ceil(bs) {
            let share = cached >= prefix && b < shared.len();
            table.push(if share {
                shared[b]
            } else {
                free.pop().unwrap()
            });
        }
        layout.seqs.push(SeqLayout {
            token_start: layout.token_ids.len() as u32,
            num_tokens: new as u32,
            context_len: context as u32,
            table_start: layout.block_tables.len() as u32,
        });
        for pos in cached..context {
            layout.token_ids.push(0);
            layout.positions.push(pos as u32);
            layout
                .slots
                .push(table[pos / bs] * bs as u32 + (pos % bs) as u32);
        }
        layout.block_tables.extend(table);
    }
    let tokens = layout.num_tokens();
    Step {
        qkv: rng.values(tokens * dims.qkv_dim(), 1.5),
        // Earlier positions' keys and values: random everywhere.
        k_cache: rng.values(cache_blocks * dims.block_len(), 1.5),
        v_cache: rng.values(cache_blocks * dims.block_len(), 1.0),
        layout,
        cache_blocks,
    }
}

/// Every item holds tokens of different sequences, round robin: rows of one item then map to
/// different physical blocks, which the kernel must handle (only more slowly).
fn mixed_plan(tokens: usize, group: u32) -> PagedPlan {
    let per_item = plan::rows_per_item(group) as usize;
    let items = tokens.div_ceil(per_item);
    let mut p = PagedPlan {
        item_offsets: vec![0],
        item_rows: Vec::new(),
    };
    for i in 0..items {
        p.item_rows
            .extend((i..tokens).step_by(items).map(|t| t as u32));
        p.item_offsets.push(p.item_rows.len() as u32);
    }
    p
}

fn check_paged(rng: &mut Rng, d: AttentionDims, prefix: usize, seqs: &[(usize, usize)]) {
    let step = paged_step(rng, d, prefix, seqs);
    let cpu = CpuBackend::new();
    let prepared = cpu.prepare(&step.layout).unwrap();
    let tokens = step.layout.num_tokens();
    let (mut want_k, mut want_v) = (step.k_cache.clone(), step.v_cache.clone());
    cpu.kv_store(&mut want_k, &mut want_v, &step.qkv, &prepared, &d)
        .unwrap();
    let mut want = vec![0.0; tokens * d.num_heads * d.head_dim];
    cpu.paged_attention(&mut want, &step.qkv, &want_k, &want_v, &prepared, &d)
        .unwrap();

    let token_seq = step.layout.token_seq();
    let row_tables: Vec<u32> = token_seq
        .iter()
        .map(|&s| step.layout.seqs[s as usize].table_start)
        .collect();
    let group = (d.num_heads / d.num_kv_heads) as u32;
    let plans = [
        PagedPlan::new(&row_tables, &step.layout.block_tables, group),
        mixed_plan(tokens, group),
    ];
    let store = LmsiKvStoreParams {
        shape: shape(&d),
        tokens: tokens as u32,
        cache_blocks: step.cache_blocks as u32,
    };
    for runner in runners() {
        let (mut k, mut v) = (step.k_cache.clone(), step.v_cache.clone());
        runner
            .kv_store(&store, &mut k, &mut v, &step.qkv, &step.layout.slots)
            .unwrap();
        assert_bits(&*runner, "kv_store key cache", &k, &want_k);
        assert_bits(&*runner, "kv_store value cache", &v, &want_v);
        for plan in &plans {
            let p = LmsiPagedAttentionParams {
                shape: shape(&d),
                num_items: plan.num_items(),
                tokens: tokens as u32,
                item_rows_len: plan.item_rows.len() as u32,
                block_tables_len: step.layout.block_tables.len() as u32,
                cache_blocks: step.cache_blocks as u32,
            };
            let mut out = poisoned(want.len());
            runner
                .paged_attention(
                    &p,
                    &mut out,
                    &step.qkv,
                    &k,
                    &v,
                    &step.layout.positions,
                    &row_tables,
                    &step.layout.block_tables,
                    &plan.item_offsets,
                    &plan.item_rows,
                )
                .unwrap();
            let what = format!("paged_attention {d:?}");
            assert_close(&*runner, &what, &out, &want, 2e-6, 2e-5);
        }
    }
    check_paged_bf16(&step, &d, &plans[0], &row_tables);
}

/// The bf16 caches: `kv_store_bf16` stores the CPU's f32 values rounded to nearest even, bit for
/// bit; `paged_attention` over the widened caches is the CPU's attention over those rounded
/// values, and `paged_attention_bf16` writes its result rounded.
fn check_paged_bf16(step: &Step, d: &AttentionDims, plan: &PagedPlan, row_tables: &[u32]) {
    let round = |x: &[f32]| -> Vec<bf16> { x.iter().map(|&v| bf16::from_f32(v)).collect() };
    let widen = |x: &[bf16]| -> Vec<f32> { x.iter().map(|v| v.to_f32()).collect() };
    let cpu = CpuBackend::new();
    let prepared = cpu.prepare(&step.layout).unwrap();
    let tokens = step.layout.num_tokens();
    let (k16, v16) = (round(&step.k_cache), round(&step.v_cache));
    let (mut want_k, mut want_v) = (widen(&k16), widen(&v16));
    cpu.kv_store(&mut want_k, &mut want_v, &step.qkv, &prepared, d)
        .unwrap();
    let (want_k, want_v) = (round(&want_k), round(&want_v));
    let mut want = vec![0.0; tokens * d.num_heads * d.head_dim];
    cpu.paged_attention(
        &mut want,
        &step.qkv,
        &widen(&want_k),
        &widen(&want_v),
        &prepared,
        d,
    )
    .unwrap();
    let store = LmsiKvStoreParams {
        shape: shape(d),
        tokens: tokens as u32,
        cache_blocks: step.cache_blocks as u32,
    };
    let p = LmsiPagedAttentionParams {
        shape: shape(d),
        num_items: plan.num_items(),
        tokens: tokens as u32,
        item_rows_len: plan.item_rows.len() as u32,
        block_tables_len: step.layout.block_tables.len() as u32,
        cache_blocks: step.cache_blocks as u32,
    };
    for runner in runners() {
        let (mut k, mut v) = (k16.clone(), v16.clone());
        runner
            .kv_store_bf16(&store, &mut k, &mut v, &step.qkv, &step.layout.slots)
            .unwrap();
        assert_eq!(k, want_k, "bf16 key cache under {}", runner.name());
        assert_eq!(v, want_v, "bf16 value cache under {}", runner.name());
        let mut exact = poisoned(want.len());
        runner
            .paged_attention(
                &p,
                &mut exact,
                &step.qkv,
                &widen(&k),
                &widen(&v),
                &step.layout.positions,
                row_tables,
                &step.layout.block_tables,
                &plan.item_offsets,
                &plan.item_rows,
            )
            .unwrap();
        let what = format!("paged_attention over bf16 caches {d:?}");
        assert_close(&*runner, &what, &exact, &want, 2e-6, 2e-5);
        let mut out = poisoned_bf16(want.len());
        runner
            .paged_attention_bf16(
                &p,
                &mut out,
                &step.qkv,
                &k,
                &v,
                &step.layout.positions,
                row_tables,
                &step.layout.block_tables,
                &plan.item_offsets,
                &plan.item_rows,
            )
            .unwrap();
        let what = format!("paged_attention_bf16 {d:?}");
        assert_rounded(&*runner, &what, &out, &exact);
    }
}

#[test]
fn paged_decode_rows_sharing_a_prompt_prefix() {
    let mut rng = Rng::new(11);
    // Ten paths of one question (48 shared positions) decoding, and an unrelated sequence.
    let mut seqs = vec![(60, 1); 10];
    seqs.push((20, 1));
    check_paged(&mut rng, dims(9, 3, 64, 16, None), 48, &seqs);
    check_paged(&mut rng, dims(4, 4, 64, 16, None), 48, &seqs);
}

#[test]
fn paged_prefill_and_decode_in_one_step() {
    let mut rng = Rng::new(12);
    // A prompt prefilled in chunks of different lengths, beside decoding siblings.
    let seqs = [(40, 23), (45, 1), (40, 7), (0, 5), (63, 1)];
    check_paged(&mut rng, dims(8, 2, 128, 16, None), 32, &seqs);
    check_paged(&mut rng, dims(6, 2, 33, 5, None), 30, &seqs);
}

#[test]
fn paged_attention_with_a_sliding_window_and_large_blocks() {
    let mut rng = Rng::new(13);
    let seqs = [(100, 1), (100, 9), (70, 1), (3, 30)];
    // Blocks of 48 positions span two tiles of keys.
    check_paged(&mut rng, dims(4, 1, 64, 48, Some(37)), 96, &seqs);
    check_paged(&mut rng, dims(14, 2, 40, 16, Some(5)), 64, &seqs);
    check_paged(&mut rng, dims(2, 2, 256, 8, Some(70)), 96, &seqs);
}

/// A packed training batch of sequences of the given lengths.
fn training_layout(lens: &[usize]) -> BatchLayout {
    let mut layout = BatchLayout::default();
    for &len in lens {
        layout.seqs.push(SeqLayout {
            token_start: layout.token_ids.len() as u32,
            num_tokens: len as u32,
            context_len: len as u32,
            table_start: 0,
        });
        for p in 0..len {
            layout.token_ids.push(0);
            layout.positions.push(p as u32);
            layout.slots.push(0);
        }
    }
    layout
}

fn check_training(rng: &mut Rng, d: AttentionDims, lens: &[usize]) {
    let layout = training_layout(lens);
    let tokens = layout.num_tokens();
    let (h, dim) = (d.num_heads, d.head_dim);
    let qkv = rng.values(tokens * d.qkv_dim(), 2.0);
    let d_out = rng.values(tokens * h * dim, 1.0);
    let cpu = CpuBackend::new();
    let prepared = cpu.prepare(&layout).unwrap();
    let mut want_out = vec![0.0; tokens * h * dim];
    let mut want_lse = vec![0.0; tokens * h];
    cpu.causal_attention(&mut want_out, &mut want_lse, &qkv, &prepared, &d)
        .unwrap();
    let mut want_grad = vec![0.0; tokens * d.qkv_dim()];
    let forward = AttentionSaved {
        qkv: &qkv,
        out: &want_out,
        lse: &want_lse,
    };
    cpu.causal_attention_backward(&mut want_grad, &d_out, &forward, &prepared, &d)
        .unwrap();

    let ranges: Vec<std::ops::Range<u32>> = layout
        .seqs
        .iter()
        .map(|s| s.token_start..s.token_start + s.num_tokens)
        .collect();
    let group = (h / d.num_kv_heads) as u32;
    let queries = plan::query_items(&ranges, group);
    let keys = plan::key_items(&ranges);
    let p = |items: &[LmsiAttnItem]| LmsiCausalAttentionParams {
        shape: shape(&d),
        tokens: tokens as u32,
        num_items: items.len() as u32,
    };
    for runner in runners() {
        let what = format!("{d:?} {lens:?}");
        let mut out = poisoned(want_out.len());
        let mut lse = poisoned(want_lse.len());
        runner
            .causal_attention_forward(&p(&queries), &mut out, &mut lse, &qkv, &queries)
            .unwrap();
        assert_close(
            &*runner,
            &format!("causal_attention_forward out, {what}"),
            &out,
            &want_out,
            2e-6,
            2e-5,
        );
        assert_close(
            &*runner,
            &format!("causal_attention_forward lse, {what}"),
            &lse,
            &want_lse,
            2e-6,
            2e-5,
        );

        let mut delta = poisoned(tokens * h);
        runner
            .causal_attention_backward_delta(&p(&queries), &mut delta, &d_out, &out)
            .unwrap();
        check_training_bf16(&*runner, &p(&queries), &queries, &qkv, &d_out, &out, &what);
        let mut grad = poisoned(want_grad.len());
        runner
            .causal_attention_backward_dq(
                &p(&queries),
                &mut grad,
                &d_out,
                &lse,
                &delta,
                &qkv,
                &queries,
            )
            .unwrap();
        runner
            .causal_attention_backward_dkdv(&p(&keys), &mut grad, &d_out, &lse, &delta, &qkv, &keys)
            .unwrap();
        assert_close(
            &*runner,
            &format!("causal_attention_backward d_qkv, {what}"),
            &grad,
            &want_grad,
            1e-5,
            1e-4,
        );
    }
}

/// The bf16 output of causal attention is the f32 one, `exact`, rounded, and the backward pass's
/// delta over it is the f32 delta over its widened values.
fn check_training_bf16(
    runner: &dyn common::Kernels,
    p: &LmsiCausalAttentionParams,
    queries: &[LmsiAttnItem],
    qkv: &[f32],
    d_out: &[f32],
    exact: &[f32],
    what: &str,
) {
    let heads = p.tokens as usize * p.shape.num_heads as usize;
    let mut out = poisoned_bf16(exact.len());
    let mut lse = poisoned(heads);
    runner
        .causal_attention_forward_bf16(p, &mut out, &mut lse, qkv, queries)
        .unwrap();
    let name = format!("causal_attention_forward_bf16 out, {what}");
    assert_rounded(runner, &name, &out, exact);
    let widened: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
    let (mut want, mut got) = (poisoned(heads), poisoned(heads));
    runner
        .causal_attention_backward_delta(p, &mut want, d_out, &widened)
        .unwrap();
    runner
        .causal_attention_backward_delta_bf16(p, &mut got, d_out, &out)
        .unwrap();
    let name = format!("causal_attention_backward_delta_bf16, {what}");
    assert_bits(runner, &name, &got, &want);
}

#[test]
fn training_attention_mha_and_gqa() {
    let mut rng = Rng::new(21);
    check_training(&mut rng, dims(4, 4, 64, 16, None), &[1, 17, 40]);
    check_training(&mut rng, dims(9, 3, 64, 16, None), &[33, 5]);
}

#[test]
fn training_attention_odd_and_large_heads() {
    let mut rng = Rng::new(22);
    check_training(&mut rng, dims(6, 2, 33, 16, None), &[70, 2]);
    check_training(&mut rng, dims(2, 1, 128, 16, None), &[45]);
    check_training(&mut rng, dims(2, 2, 256, 16, None), &[20, 13]);
}

#[test]
fn training_attention_with_a_sliding_window() {
    let mut rng = Rng::new(23);
    check_training(&mut rng, dims(8, 2, 64, 16, Some(7)), &[50, 9]);
    check_training(&mut rng, dims(3, 3, 40, 16, Some(40)), &[81]);
}
