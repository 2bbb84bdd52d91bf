//! Batched generation of many sampled paths per prompt.
//!
//! The engine serves a list of [`Request`]s (one per question: its own prompt tokens and how many
//! paths to sample), all continuing one shared prefix (the few-shot exemplars):
//!
//! - The prefix is computed once; each question's prompt is computed once, continuing a fork of the
//!   prefix; each of its paths forks the question and samples from the question's last logits.
//!   Forks share KV-cache blocks (see [`crate::KvCache`]).
//! - Continuous batching: up to `max_batch` paths are decoded together, one token per step; a path
//!   that finishes frees its row for the next waiting path, whose question prompt (if not yet
//!   computed) is prefilled in the same step as the other rows' decoding.
//! - Deterministic: the token drawn for path `k` of question `id` at step `s` uses the sampler's
//!   counter-based RNG keyed by `(seed, sequence_id(id, k), s)`, so a path's tokens do not depend on the
//!   batch size, on which other paths share its steps, or on the number of threads.
//! - Paths reach the caller's observer question by question in path order (a path that finishes
//!   early waits for the ones before it), so an early-stopping rule sees the same sequence of answers
//!   whatever the batching. When the observer says stop, the question's other paths are dropped.
//! - Waves ([`GenerateConfig::wave`]): a question may be limited to `wave` paths started and not yet
//!   observed, so that a stopping rule ends it before its later paths are sampled at all. Rows are
//!   given to the earliest question that may start a path, then to the next question not yet
//!   started. A path's tokens are the same with or without waves; only the tokens sampled for
//!   paths that are then dropped, and the time, change.
//!
//! A path ends at an EOS token (not part of its text), at a stop string (its text is cut before the
//! stop string) or after `max_new_tokens` tokens.
//!
//! Bounds, checked before anything is allocated: every question's prompt (the shared prefix and its
//! own tokens) plus `max_new_tokens` must fit the model's context (`max_position_embeddings`), else
//! the run is refused naming the first question that does not ([`Error::ContextTooLong`]). So a
//! path never runs past the context, and the KV cache, sized for the longest path of each row, is
//! bounded by it. The rows of the batch are at most the paths there are, and nothing is allocated
//! per path before it starts, so a huge `paths` or `max_batch` costs only what is decoded at once.

use std::collections::BTreeMap;
use std::time::Instant;

use lmsi_sampler::{RowKey, Sampled, SamplingParams, sequence_id};

use crate::Error;
use crate::backend::Backend;
use crate::config::Config;
use crate::kv_cache::{KvCache, SeqId};
use crate::memory::{GenerationShape, MemoryPlan};
use crate::model::{Chunk, Logits, Model};
use crate::tokenizer::{IncrementalDecoder, Tokenizer};

/// Settings of one generation run.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateConfig {
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    /// Generation of a path stops before the first of these strings.
    pub stop_strings: Vec<String>,
    /// Paths decoded together in one step.
    pub max_batch: usize,
    /// Positions per KV-cache block.
    pub block_size: usize,
    /// End a path at an EOS token (benchmarks turn this off to sample a fixed number of tokens).
    pub stop_at_eos: bool,
    /// At most this many paths of one question started and not yet handed to the observer
    /// (`None`: no limit). With an early-stopping observer, a question's paths are then decoded
    /// in waves that the observer can stop before the next starts, while other questions' paths
    /// fill the batch; without a limit all of a question's paths start at once and are decoded
    /// whether or not the observer would have stopped after the first few.
    pub wave: Option<usize>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_new_tokens: 256,
            stop_strings: Vec::new(),
            max_batch: 32,
            block_size: 16,
            stop_at_eos: true,
            wave: None,
        }
    }
}

/// One question: the tokens of its prompt after the shared prefix, and how many paths to sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The question's id; it keys the random numbers of its paths.
    pub key: String,
    pub tokens: Vec<u32>,
    pub paths: usize,
}

/// Why a path ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    Eos,
    Stop,
    Length,
}

/// A finished path.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    /// Index of its request.
    pub request: usize,
    /// Its index among its request's paths.
    pub path: usize,
    /// Every sampled token, the one that ended it included.
    pub tokens: Vec<u32>,
    /// The decoded text, without an EOS token and cut before a stop string.
    pub text: String,
    /// Sum of the tokens' log-probabilities under the model's raw distribution.
    pub logprob: f64,
    pub finish: FinishReason,
}

/// What the observer wants after seeing a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Sample no more paths of this path's request.
    StopRequest,
    /// Stop the whole run now (the caller hit an error of its own).
    Abort,
}

/// Counts and timings of a generation run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerateStats {
    /// Prompt tokens computed (the shared prefix once, each question once).
    pub prompt_tokens: usize,
    /// Tokens sampled, those of dropped paths included.
    pub sampled_tokens: usize,
    /// Paths handed to the observer.
    pub paths: usize,
    /// Paths never finished because the observer stopped their request.
    pub paths_saved: usize,
    /// Wall time of the steps that computed prompt tokens.
    pub prompt_seconds: f64,
    /// Wall time of the whole run.
    pub seconds: f64,
}

impl GenerateStats {
    pub fn prompt_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(1e-9)
    }

    /// Sampled tokens over the whole run's time (prompt computation included).
    pub fn sampled_tokens_per_second(&self) -> f64 {
        self.sampled_tokens as f64 / self.seconds.max(1e-9)
    }
}

/// A path being decoded.
struct Row {
    request: usize,
    path: usize,
    /// `None` until its question's logits exist and it has been forked from the question.
    seq: Option<SeqId>,
    tokens: Vec<u32>,
    decoder: IncrementalDecoder,
    text: String,
    logprob: f64,
}

struct RequestState<Buf> {
    /// The question's sequence, alive while some of its paths have not started.
    seq: Option<SeqId>,
    /// The next-token logits after the question's prompt (one row, on the backend).
    logits: Option<Buf>,
    started: usize,
    next_to_emit: usize,
    finished: BTreeMap<usize, Path>,
    stopped: bool,
}

/// Generates `request.paths` paths for every request, all continuing `prefix`, and hands each
/// finished path to `observe` (question by question, in path order within a question).
pub fn generate<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    prefix: &[u32],
    requests: &[Request],
    config: &GenerateConfig,
    observe: &mut dyn FnMut(&Path) -> Control,
) -> Result<GenerateStats, Error> {
    config.sampling.validate()?;
    if config.max_new_tokens == 0 || config.max_batch == 0 || config.wave == Some(0) {
        return Err(Error::Input(
            "max_new_tokens, max_batch and wave must be positive".into(),
        ));
    }
    if let Some(r) = requests
        .iter()
        .find(|r| prefix.is_empty() && r.tokens.is_empty())
    {
        return Err(Error::Input(format!(
            "request {:?} has an empty prompt",
            r.key
        )));
    }
    check_context(model.config(), prefix, requests, config.max_new_tokens)?;
    let mut engine = Engine::new(model, tokenizer, prefix, requests, config)?;
    engine.run(observe)?;
    Ok(engine.stats)
}

/// Refuses the first request (with paths to sample) whose prompt, `prefix` and its own tokens, plus
/// `max_new_tokens` does not fit the model's context.
fn check_context(
    model: &Config,
    prefix: &[u32],
    requests: &[Request],
    max_new_tokens: usize,
) -> Result<(), Error> {
    let context = model.max_position_embeddings;
    let too_long = requests.iter().filter(|r| r.paths > 0).find(|r| {
        (prefix.len() + r.tokens.len())
            .checked_add(max_new_tokens)
            .is_none_or(|positions| positions > context)
    });
    match too_long {
        Some(r) => Err(Error::ContextTooLong {
            question: r.key.clone(),
            prompt_tokens: prefix.len() + r.tokens.len(),
            max_new_tokens,
            context,
        }),
        None => Ok(()),
    }
}

struct Engine<'a, B: Backend> {
    model: &'a Model<B>,
    tokenizer: &'a Tokenizer,
    requests: &'a [Request],
    config: &'a GenerateConfig,
    cache: KvCache<B>,
    prefix: Option<(SeqId, B::Buf)>,
    states: Vec<RequestState<B::Buf>>,
    /// Requests with paths started and paths still to start, in request order.
    open: Vec<usize>,
    /// The first request none of whose paths has started.
    unopened: usize,
    rows: Vec<Row>,
    max_stop_len: usize,
    stats: GenerateStats,
    started: Instant,
    aborted: bool,
}

impl<'a, B: Backend> Engine<'a, B> {
    fn new(
        model: &'a Model<B>,
        tokenizer: &'a Tokenizer,
        prefix: &[u32],
        requests: &'a [Request],
        config: &'a GenerateConfig,
    ) -> Result<Self, Error> {
        // Enough blocks for the prefix, one question prompt per row (plus a copied partial block) and
        // every row's longest possible path (plus a copied partial block): the cache cannot fill up.
        let shape = GenerationShape {
            prompt_tokens: prefix.len(),
            question_tokens: requests.iter().map(|r| r.tokens.len()).max().unwrap_or(0),
            rows: config.max_batch.min(
                requests
                    .iter()
                    .fold(0usize, |n, r| n.saturating_add(r.paths))
                    .max(1),
            ),
            max_new_tokens: config.max_new_tokens,
            block_size: config.block_size,
        };
        // Slots are 32-bit: a batch whose cache they cannot address is refused by what sizes it.
        if shape.kv_blocks().saturating_mul(shape.block_size) > u32::MAX as usize {
            return Err(Error::Input(format!(
                "{} paths decoded together (max_batch {}), each up to {} positions, need more KV cache than {} positions; lower max_batch",
                shape.rows,
                config.max_batch,
                shape.question_tokens.saturating_add(shape.max_new_tokens),
                u32::MAX
            )));
        }
        let backend = model.backend();
        backend.check_memory(&MemoryPlan::generation(
            model.config(),
            backend.dtype(),
            &shape,
        ))?;
        let cache = model.new_cache(shape.block_size, shape.kv_blocks())?;
        let mut engine = Self {
            model,
            tokenizer,
            requests,
            config,
            cache,
            prefix: None,
            states: requests
                .iter()
                .map(|_| RequestState {
                    seq: None,
                    logits: None,
                    started: 0,
                    next_to_emit: 0,
                    finished: BTreeMap::new(),
                    stopped: false,
                })
                .collect(),
            open: Vec::new(),
            unopened: 0,
            rows: Vec::new(),
            max_stop_len: config
                .stop_strings
                .iter()
                .map(String::len)
                .max()
                .unwrap_or(0),
            stats: GenerateStats::default(),
            started: Instant::now(),
            aborted: false,
        };
        if !prefix.is_empty() {
            let seq = engine.cache.create();
            let step = Instant::now();
            let logits = model
                .forward_logits(
                    &mut engine.cache,
                    &[Chunk {
                        seq,
                        tokens: prefix,
                        logits: Logits::Last,
                    }],
                )?
                .expect("the prefix chunk asks for logits");
            engine.stats.prompt_tokens += prefix.len();
            engine.stats.prompt_seconds += step.elapsed().as_secs_f64();
            engine.prefix = Some((seq, logits));
        }
        Ok(engine)
    }

    fn run(&mut self, observe: &mut dyn FnMut(&Path) -> Control) -> Result<(), Error> {
        loop {
            self.admit();
            if self.rows.is_empty() || self.aborted {
                break;
            }
            let decode_logits = self.step()?;
            self.sample(decode_logits.as_ref(), observe)?;
        }
        if let Some((seq, _)) = self.prefix.take() {
            self.cache.release(seq);
        }
        self.stats.seconds = self.started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Fills free rows with waiting paths: of the earliest open request whose wave has room, else
    /// of the next request.
    fn admit(&mut self) {
        self.close_stopped();
        while self.rows.len() < self.config.max_batch {
            let Some(request) = self.next_waiting() else {
                break;
            };
            let state = &mut self.states[request];
            let path = state.started;
            state.started += 1;
            if state.started == self.requests[request].paths {
                self.open.retain(|&r| r != request);
            }
            self.rows.push(Row {
                request,
                path,
                seq: None,
                tokens: Vec::new(),
                decoder: self.tokenizer.stream(),
                text: String::new(),
                logprob: 0.0,
            });
        }
    }

    /// Stopped requests leave the open list; their paths not yet started are saved all at once,
    /// however many there are.
    fn close_stopped(&mut self) {
        let (states, requests, stats) = (&self.states, self.requests, &mut self.stats);
        self.open.retain(|&r| {
            let stopped = states[r].stopped;
            if stopped {
                stats.paths_saved += requests[r].paths - states[r].started;
            }
            !stopped
        });
    }

    /// The request whose next path starts now: the earliest open one whose wave has room, else
    /// the next request with paths to sample (which opens).
    fn next_waiting(&mut self) -> Option<usize> {
        let wave = self.config.wave.unwrap_or(usize::MAX);
        let states = &self.states;
        let has_room = |r: &&usize| states[**r].started - states[**r].next_to_emit < wave;
        if let Some(&r) = self.open.iter().find(has_room) {
            return Some(r);
        }
        while self.unopened < self.requests.len() && self.requests[self.unopened].paths == 0 {
            self.unopened += 1;
        }
        let r = self.unopened;
        if r == self.requests.len() {
            return None;
        }
        self.unopened += 1;
        self.open.push(r);
        Some(r)
    }

    /// One forward step: the next token of every decoding row, and the prompts of questions whose
    /// first paths are waiting for them. Returns the logits (on the backend) whose first rows are
    /// those of the decoding rows, in row order.
    fn step(&mut self) -> Result<Option<B::Buf>, Error> {
        let mut chunks: Vec<(SeqId, &[u32])> = Vec::new();
        for row in &self.rows {
            if let Some(seq) = row.seq {
                chunks.push((
                    seq,
                    std::slice::from_ref(row.tokens.last().expect("forked rows have a token")),
                ));
            }
        }
        let decoding = chunks.len();
        let mut prefill = Vec::new();
        for row in &self.rows {
            let r = row.request;
            if row.seq.is_some() || self.states[r].logits.is_some() || prefill.contains(&r) {
                continue;
            }
            match &self.prefix {
                // A question with no tokens of its own starts from the prefix's logits.
                Some((seq, logits)) if self.requests[r].tokens.is_empty() => {
                    self.states[r].seq = Some(*seq);
                    let vocab = self.model.config().vocab_size;
                    self.states[r].logits =
                        Some(self.model.backend().copy_range(logits, 0, vocab)?);
                }
                prefix => {
                    let seq = match prefix {
                        Some((prefix, _)) => self.cache.fork(*prefix)?,
                        None => self.cache.create(),
                    };
                    self.states[r].seq = Some(seq);
                    prefill.push(r);
                    chunks.push((seq, &self.requests[r].tokens));
                }
            }
        }
        if chunks.is_empty() {
            return Ok(None);
        }
        let chunks: Vec<Chunk<'_>> = chunks
            .into_iter()
            .map(|(seq, tokens)| Chunk {
                seq,
                tokens,
                logits: Logits::Last,
            })
            .collect();
        let started = Instant::now();
        let logits = self
            .model
            .forward_logits(&mut self.cache, &chunks)?
            .expect("every chunk asks for logits");
        let vocab = self.model.config().vocab_size;
        for (i, &r) in prefill.iter().enumerate() {
            let row = decoding + i;
            self.states[r].logits = Some(self.model.backend().copy_range(
                &logits,
                row * vocab,
                vocab,
            )?);
            self.stats.prompt_tokens += self.requests[r].tokens.len();
        }
        if !prefill.is_empty() {
            self.stats.prompt_seconds += started.elapsed().as_secs_f64();
        }
        Ok(Some(logits))
    }

    /// Samples the next token of every row, starts new rows from their question, and finishes rows.
    fn sample(
        &mut self,
        decode_logits: Option<&B::Buf>,
        observe: &mut dyn FnMut(&Path) -> Control,
    ) -> Result<(), Error> {
        let sampled = self.draw(decode_logits)?;
        self.stats.sampled_tokens += sampled.len();

        let mut finished = Vec::new();
        for (i, s) in sampled.into_iter().enumerate() {
            if self.rows[i].seq.is_none() {
                let question = self.states[self.rows[i].request]
                    .seq
                    .expect("prefilled in this step");
                self.rows[i].seq = Some(self.cache.fork(question)?);
            }
            let row = &mut self.rows[i];
            row.tokens.push(s.token);
            row.logprob += f64::from(s.logprob);
            let finish = if self.config.stop_at_eos && self.tokenizer.eos_ids().contains(&s.token) {
                Some(FinishReason::Eos)
            } else {
                let chunk = self.tokenizer.step(&mut row.decoder, s.token)?;
                row.text.push_str(&chunk);
                if cut_at_stop(
                    &mut row.text,
                    chunk.len(),
                    &self.config.stop_strings,
                    self.max_stop_len,
                ) {
                    Some(FinishReason::Stop)
                } else if row.tokens.len() >= self.config.max_new_tokens {
                    Some(FinishReason::Length)
                } else {
                    None
                }
            };
            if let Some(reason) = finish {
                finished.push((i, reason));
            }
        }
        self.release_started_questions();
        for &(i, reason) in finished.iter().rev() {
            let row = self.rows.swap_remove(i);
            self.cache
                .release(row.seq.expect("sampled rows are forked"));
            let path = Path {
                request: row.request,
                path: row.path,
                tokens: row.tokens,
                text: row.text,
                logprob: row.logprob,
                finish: reason,
            };
            self.states[row.request].finished.insert(row.path, path);
        }
        // Keep rows in admission order so steps are laid out the same way whatever finished.
        self.rows.sort_by_key(|row| (row.request, row.path));
        let ready: Vec<usize> = (0..self.states.len())
            .filter(|&r| {
                self.states[r]
                    .finished
                    .contains_key(&self.states[r].next_to_emit)
            })
            .collect();
        for r in ready {
            self.emit(r, observe);
        }
        Ok(())
    }

    /// The next token of every row, in row order: decoding rows from their rows of `decode_logits`,
    /// new rows from their question's logits (one backend call per source).
    fn draw(&self, decode_logits: Option<&B::Buf>) -> Result<Vec<Sampled>, Error> {
        let be = self.model.backend();
        let vocab = self.model.config().vocab_size;
        let key = |row: &Row| {
            let id = sequence_id(&self.requests[row.request].key, row.path as u32);
            RowKey::new(id, row.tokens.len() as u32)
        };
        let mut sampled: Vec<Option<Sampled>> = vec![None; self.rows.len()];
        // Rows of the step's logits, decoding rows first, in row order.
        let decoding: Vec<usize> = (0..self.rows.len())
            .filter(|&i| self.rows[i].seq.is_some())
            .collect();
        if let Some(logits) = decode_logits.filter(|_| !decoding.is_empty()) {
            let keys: Vec<RowKey> = decoding.iter().map(|&i| key(&self.rows[i])).collect();
            let rows: Vec<u32> = (0..decoding.len() as u32).collect();
            for (&i, s) in decoding.iter().zip(be.sample(
                logits,
                &rows,
                vocab,
                &self.config.sampling,
                &keys,
            )?) {
                sampled[i] = Some(s);
            }
        }
        let mut requests: Vec<usize> = self
            .rows
            .iter()
            .filter(|r| r.seq.is_none())
            .map(|r| r.request)
            .collect();
        requests.dedup();
        for r in requests {
            let members: Vec<usize> = (0..self.rows.len())
                .filter(|&i| self.rows[i].seq.is_none() && self.rows[i].request == r)
                .collect();
            let keys: Vec<RowKey> = members.iter().map(|&i| key(&self.rows[i])).collect();
            let logits = self.states[r]
                .logits
                .as_ref()
                .expect("prefilled in this step");
            let draws = be.sample(
                logits,
                &vec![0; keys.len()],
                vocab,
                &self.config.sampling,
                &keys,
            )?;
            for (&i, s) in members.iter().zip(draws) {
                sampled[i] = Some(s);
            }
        }
        Ok(sampled
            .into_iter()
            .map(|s| s.expect("every row was sampled"))
            .collect())
    }

    /// A question's sequence is dropped once every one of its paths has forked from it.
    fn release_started_questions(&mut self) {
        let prefix = self.prefix.as_ref().map(|(seq, _)| *seq);
        for (r, state) in self.states.iter_mut().enumerate() {
            let all_started = state.started == self.requests[r].paths || state.stopped;
            let unforked = self
                .rows
                .iter()
                .any(|row| row.request == r && row.seq.is_none());
            if all_started
                && !unforked
                && let Some(seq) = state.seq.take()
            {
                if Some(seq) != prefix {
                    self.cache.release(seq);
                }
                state.logits = None;
            }
        }
    }

    /// Hands request `r`'s finished paths to the observer, in path order, as far as they go.
    fn emit(&mut self, r: usize, observe: &mut dyn FnMut(&Path) -> Control) {
        let state = &mut self.states[r];
        while !state.stopped {
            let Some(path) = state.finished.remove(&state.next_to_emit) else {
                break;
            };
            state.next_to_emit += 1;
            self.stats.paths += 1;
            match observe(&path) {
                Control::Continue => {}
                Control::StopRequest => state.stopped = true,
                Control::Abort => {
                    self.aborted = true;
                    return;
                }
            }
        }
        if state.stopped {
            self.stats.paths_saved += state.finished.len();
            state.finished.clear();
            let cache = &mut self.cache;
            let before = self.rows.len();
            self.rows.retain(|row| {
                let keep = row.request != r;
                if !keep && let Some(seq) = row.seq {
                    cache.release(seq);
                }
                keep
            });
            self.stats.paths_saved += before - self.rows.len();
            self.release_started_questions();
        }
    }
}

/// Cuts `text` before the first stop string that ends in its last `added` bytes (or earlier, when a
/// stop string straddles the previous end). Returns whether it cut.
fn cut_at_stop(text: &mut String, added: usize, stops: &[String], max_stop_len: usize) -> bool {
    if stops.is_empty() || added == 0 {
        return false;
    }
    let mut from = text
        .len()
        .saturating_sub(added + max_stop_len.saturating_sub(1));
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let found = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text[from..].find(s.as_str()))
        .min();
    match found {
        Some(at) => {
            text.truncate(from + at);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use crate::testing::TinyModel;
    use lmsi_sampler::sample_row;

    fn tiny(spec: TinyModel) -> (tempfile::TempDir, Model<CpuBackend>, Tokenizer) {
        let dir = tempfile::tempdir().unwrap();
        spec.write(dir.path()).unwrap();
        let model = Model::load(dir.path(), CpuBackend::new()).unwrap();
        let tokenizer = Tokenizer::load(dir.path(), model.config()).unwrap();
        (dir, model, tokenizer)
    }

    type Out = Vec<(usize, usize, Vec<u32>, String)>;

    /// One sequence at a time, no sharing, no batching: the prompt computed whole, then one token per step.
    fn one_at_a_time(
        model: &Model<CpuBackend>,
        tok: &Tokenizer,
        prefix: &[u32],
        requests: &[Request],
        config: &GenerateConfig,
    ) -> Out {
        let mut out = Vec::new();
        let max_stop = config
            .stop_strings
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0);
        for (r, req) in requests.iter().enumerate() {
            for k in 0..req.paths {
                let mut cache = model.new_cache(4, 512).unwrap();
                let seq = cache.create();
                let prompt: Vec<u32> = prefix.iter().chain(&req.tokens).copied().collect();
                let mut logits = model
                    .forward(
                        &mut cache,
                        &[Chunk {
                            seq,
                            tokens: &prompt,
                            logits: Logits::Last,
                        }],
                    )
                    .unwrap();
                let (mut tokens, mut text, mut decoder) = (Vec::new(), String::new(), tok.stream());
                loop {
                    let key = RowKey::new(sequence_id(&req.key, k as u32), tokens.len() as u32);
                    let t = sample_row(&logits, &config.sampling, key).unwrap().token;
                    tokens.push(t);
                    if tok.eos_ids().contains(&t) {
                        break;
                    }
                    let chunk = tok.step(&mut decoder, t).unwrap();
                    text.push_str(&chunk);
                    if cut_at_stop(&mut text, chunk.len(), &config.stop_strings, max_stop)
                        || tokens.len() >= config.max_new_tokens
                    {
                        break;
                    }
                    logits = model
                        .forward(
                            &mut cache,
                            &[Chunk {
                                seq,
                                tokens: &[t],
                                logits: Logits::Last,
                            }],
                        )
                        .unwrap();
                }
                out.push((r, k, tokens, text));
            }
        }
        out
    }

    fn batched(
        model: &Model<CpuBackend>,
        tok: &Tokenizer,
        prefix: &[u32],
        requests: &[Request],
        config: &GenerateConfig,
    ) -> (Out, GenerateStats) {
        let mut out = Vec::new();
        let stats = generate(model, tok, prefix, requests, config, &mut |p| {
            out.push((p.request, p.path, p.tokens.clone(), p.text.clone()));
            Control::Continue
        })
        .unwrap();
        out.sort_by_key(|o| (o.0, o.1));
        (out, stats)
    }

    fn requests(tok: &Tokenizer) -> Vec<Request> {
        // Long enough that a step with several prompts has more than 64 rows.
        [
            "Q: Mia has 12 shells and finds 7 more on the beach. How many now?\nA:",
            "Q: how many?\nA:",
            "Q: Leo starts with 30 apples and gives 12 away. How many are left?\nA:",
        ]
        .iter()
        .enumerate()
        .map(|(i, q)| Request {
            key: format!("q{i}"),
            tokens: tok.encode(q, false).unwrap(),
            paths: 3 + i,
        })
        .collect()
    }

    #[test]
    fn batched_shared_prefix_generation_equals_one_sequence_at_a_time() {
        for spec in [
            TinyModel::default(),
            TinyModel {
                model_type: "qwen2",
                tied: true,
                seed: 7,
                ..TinyModel::default()
            },
        ] {
            let (_dir, model, tok) = tiny(spec);
            let prefix = tok.encode("Q: 1 + 1?\nA: 2.\n\n", true).unwrap();
            assert_eq!(prefix[0], crate::testing::BOS);
            let requests = requests(&tok);
            for sampling in [
                SamplingParams::greedy(),
                SamplingParams {
                    temperature: 0.9,
                    top_k: 20,
                    top_p: 0.95,
                    seed: 3,
                },
            ] {
                let config = GenerateConfig {
                    sampling,
                    max_new_tokens: 12,
                    stop_strings: ["e", "Q", "7", "a", " ", "t", "o", "n", "s", "1", "i", ":"]
                        .map(String::from)
                        .to_vec(),
                    block_size: 4,
                    ..GenerateConfig::default()
                };
                let expected = one_at_a_time(&model, &tok, &prefix, &requests, &config);
                let lengths: Vec<usize> = expected.iter().map(|o| o.2.len()).collect();
                if !sampling.is_greedy() {
                    assert!(
                        lengths.iter().any(|&l| l != lengths[0]),
                        "paths of one length test no refills: {lengths:?}"
                    );
                }
                for max_batch in [1, 3, 5, 64] {
                    let (got, stats) = batched(
                        &model,
                        &tok,
                        &prefix,
                        &requests,
                        &GenerateConfig {
                            max_batch,
                            ..config.clone()
                        },
                    );
                    assert_eq!(got, expected, "max_batch {max_batch}, {sampling:?}");
                    assert_eq!(
                        stats.prompt_tokens,
                        prefix.len() + requests.iter().map(|r| r.tokens.len()).sum::<usize>()
                    );
                    assert_eq!(stats.sampled_tokens, lengths.iter().sum::<usize>());
                }
            }
        }
    }

    #[test]
    fn without_a_prefix_each_question_is_its_own_prompt() {
        let (_dir, model, tok) = tiny(TinyModel::default());
        let mut requests = requests(&tok);
        for r in &mut requests {
            r.tokens.insert(0, crate::testing::BOS);
        }
        let config = GenerateConfig {
            max_new_tokens: 6,
            max_batch: 4,
            block_size: 4,
            ..GenerateConfig::default()
        };
        let expected = one_at_a_time(&model, &tok, &[], &requests, &config);
        assert_eq!(batched(&model, &tok, &[], &requests, &config).0, expected);
    }

    #[test]
    fn stopping_a_request_drops_its_later_paths_whatever_the_batch() {
        let (_dir, model, tok) = tiny(TinyModel::default());
        let prefix = tok.encode("A: ", true).unwrap();
        let requests = vec![Request {
            key: "a".into(),
            tokens: tok.encode("b", false).unwrap(),
            paths: 8,
        }];
        let mut results = Vec::new();
        for max_batch in [2, 8] {
            let config = GenerateConfig {
                max_new_tokens: 5,
                max_batch,
                block_size: 4,
                ..GenerateConfig::default()
            };
            let mut seen = Vec::new();
            let stats = generate(&model, &tok, &prefix, &requests, &config, &mut |p| {
                seen.push(p.path);
                if p.path == 2 {
                    Control::StopRequest
                } else {
                    Control::Continue
                }
            })
            .unwrap();
            assert_eq!(seen, vec![0, 1, 2]);
            assert_eq!(stats.paths, 3);
            assert_eq!(stats.paths_saved, 5);
            results.push(seen);
        }
    }

    /// Waves change which paths are decoded together, never a path's tokens; with a stopping
    /// observer they sample fewer tokens, because the paths after the stop never start.
    #[test]
    fn waves_keep_every_path_and_save_the_tokens_of_stopped_paths() {
        let (_dir, model, tok) = tiny(TinyModel::default());
        let prefix = tok.encode("Q: 1 + 1?\nA: 2.\n\n", true).unwrap();
        let mut requests = requests(&tok);
        for r in &mut requests {
            r.paths = 8;
        }
        let config = GenerateConfig {
            sampling: SamplingParams {
                temperature: 0.9,
                top_k: 20,
                top_p: 0.95,
                seed: 3,
            },
            max_new_tokens: 10,
            max_batch: 6,
            block_size: 4,
            ..GenerateConfig::default()
        };
        let expected = one_at_a_time(&model, &tok, &prefix, &requests, &config);
        // Stop each question after its third path.
        let stopped = |wave: Option<usize>| {
            let mut seen = Vec::new();
            let config = GenerateConfig {
                wave,
                ..config.clone()
            };
            let stats = generate(&model, &tok, &prefix, &requests, &config, &mut |p| {
                seen.push((p.request, p.path, p.tokens.clone(), p.text.clone()));
                if p.path == 2 {
                    Control::StopRequest
                } else {
                    Control::Continue
                }
            })
            .unwrap();
            seen.sort_by_key(|o| (o.0, o.1));
            (seen, stats)
        };
        let first_three: Out = expected.iter().filter(|o| o.1 < 3).cloned().collect();
        let (all_at_once, unlimited) = stopped(None);
        assert_eq!(all_at_once, first_three);
        for wave in [1, 2, 3, 5] {
            let (got, stats) = stopped(Some(wave));
            assert_eq!(got, first_three, "wave {wave}");
            assert_eq!(stats.paths, 9);
            assert_eq!(stats.paths_saved, 15);
            assert!(
                stats.sampled_tokens < unlimited.sampled_tokens,
                "wave {wave}: {} tokens against {} without waves",
                stats.sampled_tokens,
                unlimited.sampled_tokens
            );
        }
        // Without a stop, waves give every path, exactly.
        for wave in [1, 3] {
            let config = GenerateConfig {
                wave: Some(wave),
                ..config.clone()
            };
            let (got, stats) = batched(&model, &tok, &prefix, &requests, &config);
            assert_eq!(got, expected, "wave {wave}");
            assert_eq!(stats.paths, 24);
        }
        let zero = GenerateConfig {
            wave: Some(0),
            ..config.clone()
        };
        assert!(
            generate(&model, &tok, &prefix, &requests, &zero, &mut |_| {
                Control::Continue
            })
            .is_err()
        );
    }

    #[test]
    fn stop_strings_cut_the_text_even_across_tokens() {
        let stops = vec!["\nQ:".to_string(), "###".to_string()];
        let mut text = "The answer is 5.\n".to_string();
        assert!(!cut_at_stop(&mut text, 2, &stops, 3));
        text.push_str("Q: next");
        assert!(cut_at_stop(&mut text, 7, &stops, 3));
        assert_eq!(text, "The answer is 5.");
        let mut text = "no stop here".to_string();
        assert!(!cut_at_stop(&mut text, 4, &stops, 3));
    }
}
