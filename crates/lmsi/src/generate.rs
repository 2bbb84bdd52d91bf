//! The "generate" stage: sample chain-of-thought paths for every question.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

use lmsi_data::{DEFAULT_STOP_STRINGS, ExemplarSet, PathRecord, PromptFormat, Question};
use lmsi_sampler::SamplingParams;
use lmsi_transformer::generate::{Control, GenerateConfig, GenerateStats, Request, generate};
use lmsi_transformer::{Backend, Model, Tokenizer};
use lmsi_voter::{AnswerKind, EarlyStop, Extractor, StoppingRule};

use crate::{Error, check_option};

/// How a question becomes a prompt; written as its name (`cot-fewshot`, `raw`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PromptKind {
    /// One of the paper's four formats (generation normally uses `cot-fewshot` or `cot-zeroshot`).
    Format(PromptFormat),
    /// The question's text is the whole prompt, unchanged.
    Raw,
}

impl TryFrom<String> for PromptKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PromptKind> for String {
    fn from(kind: PromptKind) -> Self {
        match kind {
            PromptKind::Format(f) => f.as_str().to_string(),
            PromptKind::Raw => "raw".to_string(),
        }
    }
}

impl FromStr for PromptKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "raw" {
            return Ok(PromptKind::Raw);
        }
        s.parse::<PromptFormat>().map(PromptKind::Format).map_err(|_| {
            format!(
                "unknown prompt {s:?} (expected cot-fewshot, cot-zeroshot, direct-fewshot, direct-zeroshot or raw)"
            )
        })
    }
}

/// Settings of the generate stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerateOptions {
    pub prompt: PromptKind,
    pub exemplars: ExemplarSet,
    /// Paths per question.
    pub paths: usize,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    /// Stop strings; `None` means the prompt's own: a blank line or a new "Q:" after a paper format,
    /// none after a raw prompt.
    pub stop: Option<Vec<String>>,
    /// Paths decoded together.
    pub max_batch: usize,
    /// How answers are read from paths (for the `answer` field and early stopping).
    pub answer: AnswerKind,
    /// Stop sampling a question once more paths cannot change its vote. Its paths are then
    /// decoded in waves ([`early_stop_wave`]) that the rule can stop before the next starts,
    /// other questions' paths filling the batch meanwhile.
    pub early_stop: Option<EarlyStop>,
}

/// Paths of one question decoded at once under `rule`: ESC's window (it decides once per window),
/// and 4 for Adaptive-Consistency, which decides after every path: small enough that a question
/// rarely decodes more than 3 paths past its stop, while `max_batch / 4` questions share the
/// batch.
pub fn early_stop_wave(rule: &EarlyStop) -> usize {
    match *rule {
        EarlyStop::Esc { window } => window,
        EarlyStop::Adaptive { .. } => 4,
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            prompt: PromptKind::Format(PromptFormat::CotFewshot),
            exemplars: ExemplarSet::builtin(),
            paths: 32,
            sampling: SamplingParams {
                temperature: 0.7,
                top_k: 40,
                top_p: 1.0,
                seed: 0,
            },
            max_new_tokens: 256,
            stop: None,
            max_batch: 32,
            answer: AnswerKind::Number,
            early_stop: None,
        }
    }
}

impl GenerateOptions {
    /// Checks the counts (the sampler checks its own parameters), naming the first out of range
    /// by its flag.
    pub fn check(&self) -> Result<(), Error> {
        let count = |n: &usize| *n >= 1;
        check_option("--paths", self.paths, "at least 1", count)?;
        check_option("--max-new-tokens", self.max_new_tokens, "at least 1", count)?;
        check_option("--max-batch", self.max_batch, "at least 1", count)
    }

    fn stop_strings(&self) -> Vec<String> {
        match (&self.stop, self.prompt) {
            (Some(stop), _) => stop.clone(),
            (None, PromptKind::Raw) => Vec::new(),
            (None, PromptKind::Format(_)) => {
                DEFAULT_STOP_STRINGS.iter().map(|s| s.to_string()).collect()
            }
        }
    }
}

/// The shared prefix and each question's own prompt text.
pub(crate) fn prompt_texts(
    questions: &[Question],
    options: &GenerateOptions,
) -> (String, Vec<String>) {
    match options.prompt {
        PromptKind::Raw => (
            String::new(),
            questions.iter().map(|q| q.question.clone()).collect(),
        ),
        PromptKind::Format(format) => (
            format.prefix(&options.exemplars),
            questions
                .iter()
                .map(|q| format.question_part(&q.question))
                .collect(),
        ),
    }
}

/// Samples `options.paths` paths for every question. Paths come back question by question, in path
/// order; `on_path` sees each as it is finished (for progress), in the same order within a question.
pub fn generate_paths<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    questions: &[Question],
    options: &GenerateOptions,
    on_path: &mut dyn FnMut(&PathRecord),
) -> Result<(Vec<PathRecord>, GenerateStats), Error> {
    generate_paths_by_question(model, tokenizer, questions, options, on_path, &mut |_| {
        Ok(())
    })
}

/// [`generate_paths`], also handing each question's paths to `on_question` as soon as the question is
/// complete (all its paths, or fewer when early stopping ended it). An error from `on_question` stops
/// generation.
pub fn generate_paths_by_question<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    questions: &[Question],
    options: &GenerateOptions,
    on_path: &mut dyn FnMut(&PathRecord),
    on_question: &mut dyn FnMut(&[PathRecord]) -> Result<(), Error>,
) -> Result<(Vec<PathRecord>, GenerateStats), Error> {
    if questions.is_empty() {
        return Err(Error::Input(
            "there are no questions to generate paths for".into(),
        ));
    }
    options.check()?;
    let (prefix_text, question_texts) = prompt_texts(questions, options);
    let prefix = if prefix_text.is_empty() {
        Vec::new()
    } else {
        tokenizer.encode(&prefix_text, true)?
    };
    let requests = questions
        .iter()
        .zip(&question_texts)
        .map(|(q, text)| {
            Ok(Request {
                key: q.id.clone(),
                tokens: tokenizer.encode(text, prefix.is_empty())?,
                paths: options.paths,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let config = GenerateConfig {
        sampling: options.sampling,
        max_new_tokens: options.max_new_tokens,
        stop_strings: options.stop_strings(),
        max_batch: options.max_batch,
        wave: options.early_stop.as_ref().map(early_stop_wave),
        ..GenerateConfig::default()
    };
    let extractors: Vec<Extractor> = questions
        .iter()
        .map(|q| {
            let e = Extractor::new(options.answer);
            match &q.choices {
                Some(choices) => e.with_choices(choices.clone()),
                None => e,
            }
        })
        .collect();
    let mut rules: Vec<Option<Box<dyn StoppingRule + Send>>> = questions
        .iter()
        .map(|_| options.early_stop.as_ref().map(EarlyStop::rule))
        .collect();
    let mut records: Vec<PathRecord> = Vec::new();
    let mut pending: Vec<Vec<PathRecord>> = questions.iter().map(|_| Vec::new()).collect();
    let mut failure: Option<Error> = None;
    let stats = generate(model, tokenizer, &prefix, &requests, &config, &mut |path| {
        let q = &questions[path.request];
        let answer = extractors[path.request].extract(&path.text);
        let stop = rules[path.request]
            .as_mut()
            .is_some_and(|rule| rule.observe(answer.as_deref()));
        let record = PathRecord {
            id: q.id.clone(),
            question: q.question.clone(),
            path: path.path,
            text: path.text.clone(),
            answer,
            logprob: path.logprob,
            tokens: path.tokens.len(),
            gold: q.gold().map(str::to_owned),
        };
        on_path(&record);
        let question = &mut pending[path.request];
        question.push(record);
        if stop || question.len() == options.paths {
            if let Err(e) = on_question(question) {
                failure = Some(e);
                return Control::Abort;
            }
            records.append(question);
        }
        if stop {
            Control::StopRequest
        } else {
            Control::Continue
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    let order: std::collections::HashMap<&str, usize> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| (q.id.as_str(), i))
        .collect();
    records.sort_by_key(|r| (order[r.id.as_str()], r.path));
    Ok((records, stats))
}
