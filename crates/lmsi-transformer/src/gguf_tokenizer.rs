//! The `tokenizers` tokenizer of a GGUF file's `tokenizer.ggml.*` metadata: byte-level BPE with the
//! vocabulary and merges of the file, and the normaliser and pre-tokenizer of the Hugging Face
//! tokenizer that `tokenizer.ggml.pre` names, so that a GGUF file and the Hugging Face directory it
//! was converted from tokenize alike.

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::Error;
use crate::gguf::GgufModel;

/// Qwen2's pre-tokenizer split: GPT-4's pattern with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's pre-tokenizer split: GPT-4's pattern with up to three digits.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// ggml token types that are added tokens: 3 is a control token (special), 4 a user-defined one.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// Builds the tokenizer of `file`.
pub(crate) fn build(file: &GgufModel) -> Result<Tokenizer, Error> {
    let model = file.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(file.error(format!(
            "tokenizer.ggml.model is `{model}`; only byte-level BPE (`gpt2`) tokenizers are supported"
        )));
    }
    let tokens = file.strings("tokenizer.ggml.tokens")?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.to_string(), id as u32))
        .collect();
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
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| file.error(format!("its BPE vocabulary and merges: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let pre = file
        .optional_string("tokenizer.ggml.pre")?
        .unwrap_or("default");
    let (pre_tokenizer, nfc) = pre_tokenizer(pre).map_err(|message| file.error(message))?;
    if nfc {
        tokenizer
            .with_normalizer(Some(NFC))
            .map_err(|e| file.error(format!("its normaliser: {e}")))?;
    }
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer.with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
    tokenizer
        .add_tokens(added_tokens(file, &tokens)?)
        .map_err(|e| file.error(format!("its control and user-defined tokens: {e}")))?;
    Ok(tokenizer)
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

/// The control and user-defined tokens of the vocabulary, as added tokens (matched whole, before
/// BPE), control tokens marked special.
fn added_tokens(file: &GgufModel, tokens: &[&str]) -> Result<Vec<AddedToken>, Error> {
    let Some(types) = file.metadata().get("tokenizer.ggml.token_type") else {
        return Ok(Vec::new());
    };
    let candle_core::quantized::gguf_file::Value::Array(types) = types else {
        return Err(file.error("metadata `tokenizer.ggml.token_type` should be an array".into()));
    };
    if types.len() != tokens.len() {
        return Err(file.error(format!(
            "tokenizer.ggml.token_type has {} entries for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let mut added = Vec::new();
    for (token, kind) in tokens.iter().zip(types) {
        use candle_core::quantized::gguf_file::Value;
        let kind = match *kind {
            Value::I32(v) => i64::from(v),
            Value::U32(v) => i64::from(v),
            Value::I8(v) => i64::from(v),
            Value::U8(v) => i64::from(v),
            _ => return Err(file.error("tokenizer.ggml.token_type holds a non-integer".into())),
        };
        if kind == CONTROL || kind == USER_DEFINED {
            added.push(AddedToken::from(token.to_string(), kind == CONTROL).normalized(false));
        }
    }
    Ok(added)
}
