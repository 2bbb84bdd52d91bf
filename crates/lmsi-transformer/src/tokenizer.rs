//! `tokenizer.json` (or a GGUF file's tokenizer metadata) through the `tokenizers` crate, with the BOS and EOS rules of
//! `tokenizer_config.json`, and incremental decoding of sampled tokens.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::config::Config;
use crate::gguf::{GgufModel, is_model_file};

/// A model's tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `inner` without SentencePiece's `▁` space prefix, for the later segments of a prompt: a
    /// SentencePiece tokenizer puts it only at the start of a text (llama.cpp does the same), and a
    /// segment continues the text before it. `None` when `inner` adds no prefix.
    continuation: Option<tokenizers::Tokenizer>,
    path: PathBuf,
    /// Prepend BOS to the first segment of a prompt (`add_bos_token` in `tokenizer_config.json`).
    bos_to_add: Option<u32>,
    eos: Vec<u32>,
}

impl Tokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json` when present) from a model directory, or
    /// builds the tokenizer of a GGUF file's metadata when `path` is a file ([`crate::gguf`]).
    ///
    /// BOS: the tokenizer's own post-processor adds special tokens as it was built to; in addition,
    /// when `tokenizer_config.json` says `"add_bos_token": true`, BOS is put first if it is not there.
    /// EOS: the ids of `config.json`'s `eos_token_id` and of `tokenizer_config.json`'s `eos_token`.
    pub fn load(path: &Path, config: &Config) -> Result<Self, Error> {
        if is_model_file(path) {
            let file = GgufModel::open(path)?;
            return Self::new(file.tokenizer()?, path, &file.tokenizer_config()?, config);
        }
        let dir = path;
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::Tokenizer {
                path,
                message: "file not found".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let tokenizer_config = read_tokenizer_config(&dir.join("tokenizer_config.json"))?;
        Self::new(inner, &path, &tokenizer_config, config)
    }

    /// A tokenizer with the BOS and EOS rules of `tokenizer_config` and `config`; `path` names its
    /// source in errors.
    fn new(
        inner: tokenizers::Tokenizer,
        path: &Path,
        tokenizer_config: &serde_json::Value,
        config: &Config,
    ) -> Result<Self, Error> {
        let special = |key: &str| -> Option<u32> {
            let value = tokenizer_config.get(key)?;
            let text = value.as_str().or_else(|| value.get("content")?.as_str())?;
            inner.token_to_id(text)
        };
        let add_bos = tokenizer_config
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let bos = special("bos_token").or(config.bos_token_id);
        let mut eos = config.eos_token_ids.clone();
        if let Some(id) = special("eos_token")
            && !eos.contains(&id)
        {
            eos.push(id);
        }
        let vocab = inner.get_vocab_size(true);
        if vocab > config.vocab_size {
            return Err(Error::Tokenizer {
                path: path.to_path_buf(),
                message: format!(
                    "has {vocab} tokens but the model's vocab_size is {}",
                    config.vocab_size
                ),
            });
        }
        Ok(Self {
            continuation: without_space_prefix(&inner),
            inner,
            path: path.to_path_buf(),
            bos_to_add: if add_bos { bos } else { None },
            eos,
        })
    }

    /// Token ids of `text`. The first segment of a prompt gets the tokenizer's special tokens (BOS);
    /// later segments (a question after a shared few-shot prefix) get none, so that
    /// `encode(a, true) ++ encode(b, false)` is the prompt `a + b` split at a segment boundary.
    pub fn encode(&self, text: &str, first_segment: bool) -> Result<Vec<u32>, Error> {
        let tokenizer = match &self.continuation {
            Some(continuation) if !first_segment => continuation,
            _ => &self.inner,
        };
        let encoding = tokenizer
            .encode(text, first_segment)
            .map_err(|e| self.error(format!("cannot encode text: {e}")))?;
        let mut ids = encoding.get_ids().to_vec();
        if first_segment
            && let Some(bos) = self.bos_to_add
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        self.inner
            .decode(ids, true)
            .map_err(|e| self.error(format!("cannot decode tokens: {e}")))
    }

    /// Token ids that end generation.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// The id of a token given by its text, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A decoder that turns tokens into text one at a time.
    pub fn stream(&self) -> IncrementalDecoder {
        IncrementalDecoder::default()
    }

    /// Appends `token` to `stream` and returns the text it completes (possibly empty: some tokens
    /// are only part of a character).
    pub fn step(&self, stream: &mut IncrementalDecoder, token: u32) -> Result<String, Error> {
        let chunk = tokenizers::tokenizer::step_decode_stream(
            &self.inner,
            vec![token],
            true,
            &mut stream.ids,
            &mut stream.prefix,
            &mut stream.prefix_index,
        )
        .map_err(|e| self.error(format!("cannot decode token {token}: {e}")))?;
        Ok(chunk.unwrap_or_default())
    }

    fn error(&self, message: String) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            message,
        }
    }
}

/// The state of decoding one sequence's sampled tokens incrementally (see [`Tokenizer::step`]).
#[derive(Clone, Debug, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

/// `tokenizer` without the SentencePiece space prefix of its normaliser (`Prepend("▁")`, as in
/// Llama 2's `tokenizer.json` and the tokenizers of GGUF SentencePiece files) or of its `Metaspace`
/// pre-tokenizer; `None` when it has neither.
fn without_space_prefix(tokenizer: &tokenizers::Tokenizer) -> Option<tokenizers::Tokenizer> {
    use tokenizers::normalizers::Sequence;
    use tokenizers::pre_tokenizers::metaspace::PrependScheme;
    use tokenizers::{NormalizerWrapper, PreTokenizerWrapper};
    let is_prepend = |n: &NormalizerWrapper| matches!(n, NormalizerWrapper::Prepend(_));
    // `Some(normaliser)`: the normaliser to put in place of the tokenizer's.
    let normalizer = match tokenizer.get_normalizer() {
        Some(NormalizerWrapper::Prepend(_)) => Some(None),
        Some(NormalizerWrapper::Sequence(sequence)) if sequence.as_ref().iter().any(is_prepend) => {
            let kept = sequence.as_ref().iter().filter(|n| !is_prepend(n));
            Some(Some(Sequence::new(kept.cloned().collect())))
        }
        _ => None,
    };
    let metaspace = match tokenizer.get_pre_tokenizer() {
        Some(PreTokenizerWrapper::Metaspace(metaspace))
            if metaspace.get_prepend_scheme() != PrependScheme::Never =>
        {
            let mut metaspace = metaspace.clone();
            metaspace.set_prepend_scheme(PrependScheme::Never);
            Some(metaspace)
        }
        _ => None,
    };
    if normalizer.is_none() && metaspace.is_none() {
        return None;
    }
    let mut continuation = tokenizer.clone();
    if let Some(normalizer) = normalizer {
        continuation.with_normalizer(normalizer).ok()?;
    }
    if let Some(metaspace) = metaspace {
        continuation.with_pre_tokenizer(Some(metaspace));
    }
    Some(continuation)
}

fn read_tokenizer_config(path: &Path) -> Result<serde_json::Value, Error> {
    if !path.exists() {
        return Ok(serde_json::Value::Null);
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Tokenizer {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
