//! The "build" stage: turn every path that agrees with its question's vote into training examples,
//! in the paper's mixed formats.

use std::collections::HashMap;

use lmsi_data::{ANSWER_PHRASE, ExemplarSet, PathRecord, PromptFormat, TrainExample, VoteRecord};

use crate::Error;

/// How many examples of each format one build made.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuildSummary {
    /// Votes that had an answer and so contributed examples.
    pub questions: usize,
    /// Paths that agree with their vote (each gives one example per format).
    pub kept_paths: usize,
    /// Examples written, per format, in the order of the formats asked for.
    pub per_format: Vec<(PromptFormat, usize)>,
}

impl BuildSummary {
    pub fn examples(&self) -> usize {
        self.per_format.iter().map(|(_, n)| n).sum()
    }
}

/// Builds prompt/completion examples from the paths that reach their question's majority answer.
///
/// Each agreeing path yields one example per format: chain-of-thought formats train on the path's
/// reasoning followed by "The answer is X." (X the voted answer), direct formats on "The answer is X."
/// alone. The reasoning of a path is its text up to its first "The answer is", so whatever the model
/// wrote after its answer is not trained on. Examples come out question by question, path by path.
pub fn build_examples(
    votes: &[VoteRecord],
    paths: &[PathRecord],
    formats: &[PromptFormat],
    exemplars: &ExemplarSet,
) -> Result<(Vec<TrainExample>, BuildSummary), Error> {
    let by_key: HashMap<(&str, usize), &PathRecord> =
        paths.iter().map(|p| ((p.id.as_str(), p.path), p)).collect();
    let mut summary = BuildSummary {
        per_format: formats.iter().map(|&f| (f, 0)).collect(),
        ..BuildSummary::default()
    };
    let mut examples = Vec::new();
    for vote in votes {
        let Some(answer) = &vote.answer else { continue };
        summary.questions += 1;
        for &k in &vote.paths {
            let path = by_key.get(&(vote.id.as_str(), k)).ok_or_else(|| {
                Error::Input(format!(
                    "the vote for question {:?} names path {k}, which the paths file does not have",
                    vote.id
                ))
            })?;
            summary.kept_paths += 1;
            let reasoning = reasoning_of(&path.text);
            for (format, count) in &mut summary.per_format {
                examples.push(TrainExample {
                    prompt: format.prompt(exemplars, &vote.question).text(),
                    completion: format.completion(reasoning, answer),
                    format: *format,
                });
                *count += 1;
            }
        }
    }
    if examples.is_empty() {
        return Err(Error::Input(
            "no training examples: no vote has an answer with agreeing paths".into(),
        ));
    }
    Ok((examples, summary))
}

/// The reasoning part of a generated path: its text before the first "The answer is" or "the answer is".
fn reasoning_of(text: &str) -> &str {
    let lower_phrase = ANSWER_PHRASE.to_lowercase();
    let cut = [text.find(ANSWER_PHRASE), text.find(&lower_phrase)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(text.len());
    text[..cut].trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_stops_at_the_answer_phrase() {
        assert_eq!(
            reasoning_of(" 2 + 3 = 5. The answer is 5. Then"),
            "2 + 3 = 5."
        );
        assert_eq!(reasoning_of("2 + 3 = 5"), "2 + 3 = 5");
        assert_eq!(reasoning_of("so the answer is 5"), "so");
    }
}
