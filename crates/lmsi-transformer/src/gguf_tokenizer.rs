//! The `tokenizers` tokenizer of a GGUF file's `tokenizer.ggml.*` metadata, built as Hugging Face
//! builds the tokenizer of the model the file was converted from, so that the two tokenize alike:
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE with the file's vocabulary and merges, and the
//!   normaliser and pre-tokenizer of the Hugging Face tokenizer that `tokenizer.ggml.pre` names.
//! - `tokenizer.ggml.model = "llama"` (SentencePiece, as in Llama 2, Mistral and Phi-3 files): BPE
//!   with byte fallback, whose merges are derived from the vocabulary and its scores exactly as
//!   `transformers`' `SentencePieceExtractor` derives them (every split of a piece into two pieces,
//!   the piece's score its rank), with the `▁` space prefix that llama.cpp adds
//!   (`tokenizer.ggml.add_space_prefix`, default true).
//!
//! Both are checked against llama.cpp's own tokenizer tests (`tests/gguf_vocab.rs`).

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
    Tokenizer,
};

use crate::Error;
use crate::gguf::GgufModel;

/// Qwen2's pre-tokenizer split: GPT-4's pattern with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's pre-tokenizer split: GPT-4's pattern with up to three digits.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The pre-tokenizers that take a whole word from the vocabulary before merging
/// (`ignore_merges`, as in llama.cpp and Llama 3's `tokenizer.json`).
const IGNORE_MERGES: &[&str] = &["llama-bpe", "llama3", "llama-v3", "smaug-bpe"];

/// ggml token types: 2 the unknown token, 3 a control token, 4 a user-defined one.
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// SentencePiece's escaped space.
const SPACE: &str = "\u{2581}";

/// Builds the tokenizer of `file`.
pub(crate) fn build(file: &GgufModel) -> Result<Tokenizer, Error> {
    let tokens = file.strings("tokenizer.ggml.tokens")?;
    let types = token_types(file, tokens.len())?;
    let mut tokenizer = match file.string("tokenizer.ggml.model")? {
        "gpt2" => byte_level_bpe(file, &tokens)?,
        "llama" => sentencepiece_bpe(file, &tokens, &types)?,
        other => {
            return Err(file.error(format!(
                "tokenizer.ggml.model is `{other}`; supported: `gpt2` (byte-level BPE) and \
                 `llama` (SentencePiece BPE)"
            )));
        }
    };
    tokenizer
        .add_tokens(added_tokens(&tokens, &types))
        .map_err(|e| file.error(format!("its control and user-defined tokens: {e}")))?;
    Ok(tokenizer)
}

/// Whether llama.cpp puts BOS first when the file has no `tokenizer.ggml.add_bos_token`: for
/// SentencePiece vocabularies and Llama 3's pre-tokenizer.
pub(crate) fn adds_bos_by_default(file: &GgufModel) -> Result<bool, Error> {
    let pre = file
        .optional_string("tokenizer.ggml.pre")?
        .unwrap_or("default");
    Ok(file.string("tokenizer.ggml.model")? == "llama" || IGNORE_MERGES.contains(&pre))
}

/// Byte-level BPE from the file's vocabulary and merges.
fn byte_level_bpe(file: &GgufModel, tokens: &[&str]) -> Result<Tokenizer, Error> {
    let vocab = vocab(tokens);
    let merges = file
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|merge| {
            merge
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| file.error(format!("merge `{merge}` is not two tokens")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pre = file
        .optional_string("tokenizer.ggml.pre")?
        .unwrap_or("default");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(IGNORE_MERGES.contains(&pre))
        .build()
        .map_err(|e| file.error(format!("its BPE vocabulary and merges: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let (pre_tokenizer, nfc) = pre_tokenizer(pre).map_err(|message| file.error(message))?;
    if nfc {
        tokenizer
            .with_normalizer(Some(NFC))
            .map_err(|e| file.error(format!("its normaliser: {e}")))?;
    }
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer.with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
    Ok(tokenizer)
}

/// SentencePiece BPE: merges derived from the scored vocabulary, byte fallback, spaces escaped as
/// `▁` and one put first (as llama.cpp and the Hugging Face Llama tokenizer do).
fn sentencepiece_bpe(file: &GgufModel, tokens: &[&str], types: &[i64]) -> Result<Tokenizer, Error> {
    let scores = file.floats("tokenizer.ggml.scores")?;
    if scores.len() != tokens.len() {
        return Err(file.error(format!(
            "tokenizer.ggml.scores has {} entries for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    if file.optional_bool("tokenizer.ggml.remove_extra_whitespaces")? == Some(true) {
        return Err(file.error(
            "tokenizer.ggml.remove_extra_whitespaces is true; only SentencePiece vocabularies \
             that keep whitespace are supported"
                .into(),
        ));
    }
    let space_prefix = file
        .optional_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let unknown = types.iter().position(|&kind| kind == UNKNOWN);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab(tokens), sentencepiece_merges(tokens, &scores))
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unknown) = unknown {
        builder = builder.unk_token(tokens[unknown].to_string());
    }
    let bpe = builder
        .build()
        .map_err(|e| file.error(format!("its SentencePiece vocabulary: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let escape = Replace::new(" ", SPACE).expect("a literal pattern");
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPACE, " ").expect("a literal pattern").into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if space_prefix {
        normalizers.push(Prepend::new(SPACE.into()).into());
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    normalizers.push(escape.into());
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(|e| file.error(format!("its normaliser: {e}")))?;
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// BPE merges of a SentencePiece vocabulary, as `transformers`' `SentencePieceExtractor` makes
/// them: every split of a piece into two pieces of the vocabulary, ordered by the piece's score
/// (highest first), ties in vocabulary order and then by the ids of the two halves. BPE then joins
/// the pair whose piece scores highest, as SentencePiece does.
fn sentencepiece_merges(tokens: &[&str], scores: &[f32]) -> Merges {
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(id, t)| (*t, id)).collect();
    let mut merges: Vec<(f32, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let mut splits: Vec<(usize, usize)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (left, right) = piece.split_at(at);
                Some((*ids.get(left)?, *ids.get(right)?))
            })
            .collect();
        splits.sort_unstable();
        merges.extend(splits.into_iter().map(|(l, r)| (scores[id], l, r)));
    }
    // A stable sort keeps the vocabulary order among equal scores.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        .map(|(_, l, r)| (tokens[l].to_string(), tokens[r].to_string()))
        .collect()
}

fn vocab(tokens: &[&str]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.to_string(), id as u32))
        .collect()
}

/// The pre-tokenizer that `tokenizer.ggml.pre` names, and whether input is NFC-normalised first.
fn pre_tokenizer(pre: &str) -> Result<(PreTokenizerWrapper, bool), String> {
    let split = |pattern: &str| -> Result<PreTokenizerWrapper, String> {
        let split = Split::new(
            SplitPattern::Regex(pattern.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| format!("pre-tokenizer pattern: {e}"))?;
        Ok(split.into())
    };
    Ok(match pre {
        "smollm" => (
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            false,
        ),
        "qwen2" => (
            Sequence::new(vec![
                split(QWEN2_SPLIT)?,
                ByteLevel::new(false, false, false).into(),
            ])
            .into(),
            true,
        ),
        "llama-bpe" | "llama3" | "smaug-bpe" => (
            Sequence::new(vec![
                split(LLAMA3_SPLIT)?,
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
            false,
        ),
        "default" | "gpt-2" | "gpt2" => (ByteLevel::new(false, true, true).into(), false),
        other => {
            return Err(format!(
                "tokenizer.ggml.pre is `{other}`; supported: smollm, qwen2, llama-bpe (llama3, \
                 smaug-bpe), gpt-2 (default)"
            ));
        }
    })
}

/// The ggml type of each token (`tokenizer.ggml.token_type`; all normal when absent).
fn token_types(file: &GgufModel, count: usize) -> Result<Vec<i64>, Error> {
    use candle_core::quantized::gguf_file::Value;
    let Some(types) = file.metadata().get("tokenizer.ggml.token_type") else {
        return Ok(vec![1; count]);
    };
    let Value::Array(types) = types else {
        return Err(file.error("metadata `tokenizer.ggml.token_type` should be an array".into()));
    };
    if types.len() != count {
        return Err(file.error(format!(
            "tokenizer.ggml.token_type has {} entries for {count} tokens",
            types.len()
        )));
    }
    types
        .iter()
        .map(|kind| match *kind {
            Value::I32(v) => Ok(i64::from(v)),
            Value::U32(v) => Ok(i64::from(v)),
            Value::I8(v) => Ok(i64::from(v)),
            Value::U8(v) => Ok(i64::from(v)),
            _ => Err(file.error("tokenizer.ggml.token_type holds a non-integer".into())),
        })
        .collect()
}

/// The unknown, control and user-defined tokens of the vocabulary, as added tokens (matched whole,
/// before BPE); all but user-defined ones are special.
fn added_tokens(tokens: &[&str], types: &[i64]) -> Vec<AddedToken> {
    tokens
        .iter()
        .zip(types)
        .filter(|(_, kind)| matches!(**kind, UNKNOWN | CONTROL | USER_DEFINED))
        .map(|(token, &kind)| {
            AddedToken::from(token.to_string(), kind != USER_DEFINED).normalized(false)
        })
        .collect()
}
