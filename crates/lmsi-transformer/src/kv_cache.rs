//! The paged key/value cache.
//!
//! Keys and values of every layer live in pools of fixed-size blocks (`block_size` positions each).
//! A sequence owns a block table: the blocks that hold its positions, in order. Blocks are
//! reference-counted, so a sequence can be forked without copying anything: the few-shot prefix is
//! computed once and shared by every question, and each question's prompt by its sampled paths.
//! Writing into a block that is shared and only partly filled first copies it (copy-on-write); a full
//! shared block is never written again, so it is never copied.

use std::collections::HashMap;

use crate::Error;
use crate::backend::Backend;
use crate::config::Config;

/// A sequence in a [`KvCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(u64);

#[derive(Clone, Debug)]
struct Sequence {
    blocks: Vec<u32>,
    len: usize,
}

/// Paged keys and values of all layers, and the sequences that own them.
pub struct KvCache<B: Backend> {
    k: Vec<B::Buf>,
    v: Vec<B::Buf>,
    block_size: usize,
    /// Values per block in one layer's k (or v) pool.
    block_len: usize,
    refcount: Vec<u32>,
    /// Free blocks; the next one handed out is the last.
    free: Vec<u32>,
    seqs: HashMap<SeqId, Sequence>,
    next_id: u64,
}

impl<B: Backend> KvCache<B> {
    /// A cache of `num_blocks` blocks of `block_size` positions for a model with `config`.
    pub fn new(
        backend: &B,
        config: &Config,
        block_size: usize,
        num_blocks: usize,
    ) -> Result<Self, Error> {
        if block_size == 0 || num_blocks == 0 {
            return Err(Error::Input(
                "a KV cache needs at least one block of one position".into(),
            ));
        }
        if num_blocks > u32::MAX as usize / block_size {
            return Err(Error::Input(format!(
                "{num_blocks} KV cache blocks is too many"
            )));
        }
        let (block_len, pool_len) = pool_sizes(config, block_size, num_blocks)?;
        let pool = |_| backend.kv_zeros(pool_len);
        Ok(Self {
            k: (0..config.num_layers).map(pool).collect::<Result<_, _>>()?,
            v: (0..config.num_layers).map(pool).collect::<Result<_, _>>()?,
            block_size,
            block_len,
            refcount: vec![0; num_blocks],
            free: (0..num_blocks as u32).rev().collect(),
            seqs: HashMap::new(),
            next_id: 0,
        })
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks not used by any sequence.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// All blocks.
    pub fn num_blocks(&self) -> usize {
        self.refcount.len()
    }

    /// Blocks needed to hold `positions` positions.
    pub fn blocks_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.block_size)
    }

    /// A new, empty sequence.
    pub fn create(&mut self) -> SeqId {
        let id = SeqId(self.next_id);
        self.next_id += 1;
        self.seqs.insert(
            id,
            Sequence {
                blocks: Vec::new(),
                len: 0,
            },
        );
        id
    }

    /// A new sequence with the same contents as `seq`, sharing its blocks.
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId, Error> {
        let parent = self.sequence(seq)?.clone();
        for &b in &parent.blocks {
            self.refcount[b as usize] += 1;
        }
        let id = self.create();
        self.seqs.insert(id, parent);
        Ok(id)
    }

    /// Drops a sequence; blocks no other sequence uses become free.
    pub fn release(&mut self, seq: SeqId) {
        if let Some(s) = self.seqs.remove(&seq) {
            for b in s.blocks {
                self.decref(b);
            }
        }
    }

    /// Number of positions cached for `seq`.
    pub fn seq_len(&self, seq: SeqId) -> Result<usize, Error> {
        Ok(self.sequence(seq)?.len)
    }

    /// The block table of `seq`.
    pub fn block_table(&self, seq: SeqId) -> Result<&[u32], Error> {
        Ok(&self.sequence(seq)?.blocks)
    }

    /// Free blocks that [`KvCache::append`] of `n` positions to `seq` would take (copy-on-write included).
    pub fn blocks_needed(&self, seq: SeqId, n: usize) -> Result<usize, Error> {
        let s = self.sequence(seq)?;
        let partial = s.len % self.block_size != 0;
        let copy_needed = partial
            && s.blocks
                .last()
                .is_some_and(|&b| self.refcount[b as usize] > 1);
        Ok(self.blocks_for(s.len + n) - self.blocks_for(s.len) + usize::from(copy_needed))
    }

    /// Makes room for `n` more positions at the end of `seq` and returns their slots
    /// (`block * block_size + offset`). A shared, partly filled last block is copied first.
    pub fn append(&mut self, backend: &B, seq: SeqId, n: usize) -> Result<Vec<u32>, Error> {
        let new_blocks = self.blocks_needed(seq, n)?;
        let s = self.sequence(seq)?;
        let (len, last) = (s.len, s.blocks.last().copied());
        let copy_needed = new_blocks > self.blocks_for(len + n) - self.blocks_for(len);
        if new_blocks > self.free.len() {
            return Err(Error::CacheFull {
                needed: new_blocks,
                free: self.free.len(),
            });
        }
        if copy_needed && let Some(old) = last {
            let new = self.allocate();
            for pool in self.k.iter_mut().chain(self.v.iter_mut()) {
                backend.copy_block(pool, old as usize, new as usize, self.block_len)?;
            }
            self.decref(old);
            let s = self.seqs.get_mut(&seq).expect("checked above");
            *s.blocks.last_mut().expect("partial block exists") = new;
        }
        for _ in 0..self.blocks_for(len + n) - self.blocks_for(len) {
            let b = self.allocate();
            self.seqs
                .get_mut(&seq)
                .expect("checked above")
                .blocks
                .push(b);
        }
        let s = self.seqs.get_mut(&seq).expect("checked above");
        let slots = (len..len + n)
            .map(|p| {
                s.blocks[p / self.block_size] * self.block_size as u32
                    + (p % self.block_size) as u32
            })
            .collect();
        s.len += n;
        Ok(slots)
    }

    /// The k and v pools of layer `layer`.
    pub fn layer_mut(&mut self, layer: usize) -> (&mut B::Buf, &mut B::Buf) {
        (&mut self.k[layer], &mut self.v[layer])
    }

    fn sequence(&self, seq: SeqId) -> Result<&Sequence, Error> {
        self.seqs
            .get(&seq)
            .ok_or_else(|| Error::Input(format!("{seq:?} is not in the KV cache")))
    }

    fn allocate(&mut self) -> u32 {
        let b = self
            .free
            .pop()
            .expect("caller checked there are free blocks");
        self.refcount[b as usize] = 1;
        b
    }

    fn decref(&mut self, block: u32) {
        let count = &mut self.refcount[block as usize];
        *count -= 1;
        if *count == 0 {
            self.free.push(block);
        }
    }
}

/// Values per block and per pool (one layer's k or v), refused when a pool could not be allocated
/// at all (more than `isize::MAX` bytes of f32), so that no size wraps or aborts.
fn pool_sizes(
    config: &Config,
    block_size: usize,
    num_blocks: usize,
) -> Result<(usize, usize), Error> {
    let block_len = block_size.checked_mul(config.kv_dim());
    let pool_len = block_len.and_then(|b| b.checked_mul(num_blocks));
    match (block_len, pool_len) {
        (Some(block_len), Some(pool_len))
            if pool_len <= isize::MAX as usize / std::mem::size_of::<f32>() =>
        {
            Ok((block_len, pool_len))
        }
        _ => Err(Error::Input(format!(
            "a KV cache of {num_blocks} blocks of {block_size} positions of {} values is too large to allocate",
            config.kv_dim()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;

    fn cache(blocks: usize) -> KvCache<CpuBackend> {
        let config = Config::from_json(
            r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 4, "intermediate_size": 8,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1}"#,
        )
        .unwrap();
        KvCache::new(&CpuBackend, &config, 4, blocks).unwrap()
    }

    #[test]
    fn fork_shares_blocks_and_copies_a_partial_last_block_on_write() {
        let mut c = cache(8);
        let a = c.create();
        let slots = c.append(&CpuBackend, a, 6).unwrap();
        assert_eq!(slots, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(c.free_blocks(), 6);
        // Mark the partial block's contents so the copy can be seen.
        c.k[1][5 * 2] = 42.0;
        let b = c.fork(a).unwrap();
        assert_eq!(c.free_blocks(), 6, "a fork copies nothing");
        let slots = c.append(&CpuBackend, b, 1).unwrap();
        let copied = c.block_table(b).unwrap()[1];
        assert_ne!(copied, 1, "the shared partial block was copied");
        assert_eq!(slots, vec![copied * 4 + 2]);
        assert_eq!(c.k[1][(copied as usize * 4 + 1) * 2], 42.0);
        assert_eq!(
            c.block_table(b).unwrap()[0],
            0,
            "the full block stays shared"
        );
        c.release(a);
        c.release(b);
        assert_eq!(c.free_blocks(), 8);
    }

    #[test]
    fn a_full_shared_block_is_not_copied() {
        let mut c = cache(4);
        let a = c.create();
        c.append(&CpuBackend, a, 4).unwrap();
        let b = c.fork(a).unwrap();
        c.append(&CpuBackend, b, 1).unwrap();
        assert_eq!(c.block_table(b).unwrap()[0], c.block_table(a).unwrap()[0]);
        assert_eq!(c.free_blocks(), 2);
    }

    #[test]
    fn running_out_of_blocks_is_an_error_that_changes_nothing() {
        let mut c = cache(2);
        let a = c.create();
        c.append(&CpuBackend, a, 5).unwrap();
        let err = c.append(&CpuBackend, a, 4).unwrap_err();
        assert!(
            matches!(err, Error::CacheFull { needed: 1, free: 0 }),
            "{err}"
        );
        assert_eq!(c.seq_len(a).unwrap(), 5);
    }
}
