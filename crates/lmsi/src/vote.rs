//! The "vote" stage: group sampled paths by question, extract each path's answer and keep the
//! self-consistent (majority) answer.

use std::collections::HashMap;

use lmsi_data::{PathRecord, VoteRecord};
use lmsi_voter::{AnswerKind, Ballot, Extractor, Weighting, vote};
use serde::{Deserialize, Serialize};

use crate::{Error, check_option};

/// How the vote stage reads answers and counts them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoteOptions {
    pub kind: AnswerKind,
    pub weighting: Weighting,
    /// Questions whose confidence (votes / valid paths) is below this are left out of the output.
    pub min_confidence: f64,
}

impl Default for VoteOptions {
    fn default() -> Self {
        Self {
            kind: AnswerKind::Number,
            weighting: Weighting::Uniform,
            min_confidence: 0.0,
        }
    }
}

/// What one vote stage did, for the command's summary line and the run report.
#[derive(Clone, Debug, PartialEq)]
pub struct VoteSummary {
    /// Questions seen in the paths.
    pub questions: usize,
    /// Questions with an answer (at least one path had one) that reached the minimum confidence.
    pub voted: usize,
    /// Questions left out because their confidence was below the minimum.
    pub below_confidence: usize,
    /// Mean confidence over the voted questions (0 when none).
    pub mean_confidence: f64,
    /// `(correct, judged)`: votes that equal the gold answer, over the voted questions that carry one.
    pub gold: Option<(usize, usize)>,
}

impl VoteSummary {
    /// Accuracy of the votes against the gold answers, when the paths carried gold answers.
    pub fn accuracy(&self) -> Option<f64> {
        self.gold
            .map(|(correct, n)| correct as f64 / n.max(1) as f64)
    }
}

/// Votes over `paths`, one record per question in order of first appearance.
///
/// Every path's answer is extracted again from its text with `options.kind` (the `answer` field of a
/// paths file is what generation extracted, possibly with another answer kind). A question where no path
/// has an answer gets `answer: None`; it is kept whatever the minimum confidence.
pub fn vote_paths(
    paths: &[PathRecord],
    options: &VoteOptions,
) -> Result<(Vec<VoteRecord>, VoteSummary), Error> {
    let in_unit = |x: &f64| (0.0..=1.0).contains(x);
    check_option(
        "--min-confidence",
        options.min_confidence,
        "a number from 0 to 1",
        in_unit,
    )?;
    let extractor = Extractor::new(options.kind);
    let groups = group_by_question(paths)?;

    let mut records = Vec::with_capacity(groups.len());
    let mut summary = VoteSummary {
        questions: groups.len(),
        voted: 0,
        below_confidence: 0,
        mean_confidence: 0.0,
        gold: None,
    };
    let mut confidence_sum = 0.0;
    for (id, mut group) in groups {
        group.sort_by_key(|p| p.path);
        let ballots: Vec<Ballot> = group
            .iter()
            .map(|p| Ballot {
                answer: extractor.extract(&p.text),
                mean_logprob: p.logprob / p.tokens.max(1) as f64,
            })
            .collect();
        let result = vote(&ballots, options.weighting);
        if result.answer.is_some() && result.confidence < options.min_confidence {
            summary.below_confidence += 1;
            continue;
        }
        let gold = group.iter().find_map(|p| p.gold.clone());
        if let Some(answer) = &result.answer {
            summary.voted += 1;
            confidence_sum += result.confidence;
            if let Some(gold) = &gold {
                let (correct, judged) = summary.gold.get_or_insert((0, 0));
                *judged += 1;
                if extractor.is_correct(Some(answer), gold) {
                    *correct += 1;
                }
            }
        }
        records.push(VoteRecord {
            id: id.to_string(),
            question: group[0].question.clone(),
            answer: result.answer,
            votes: result.votes,
            valid: result.valid,
            total: result.total,
            confidence: result.confidence,
            paths: result.paths.iter().map(|&i| group[i].path).collect(),
            gold,
        });
    }
    if summary.voted == 0 && summary.below_confidence > 0 {
        return Err(Error::Input(format!(
            "no question's vote reaches the minimum confidence {} ({} questions were below it)",
            options.min_confidence, summary.below_confidence
        )));
    }
    if summary.voted > 0 {
        summary.mean_confidence = confidence_sum / summary.voted as f64;
    }
    Ok((records, summary))
}

/// Each question's id and paths, in order of first appearance; a question's path number seen
/// twice is an error.
fn group_by_question(paths: &[PathRecord]) -> Result<Vec<(&str, Vec<&PathRecord>)>, Error> {
    let mut groups: Vec<(&str, Vec<&PathRecord>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for record in paths {
        let i = *index.entry(&record.id).or_insert_with(|| {
            groups.push((&record.id, Vec::new()));
            groups.len() - 1
        });
        let group = &mut groups[i].1;
        if group.iter().any(|p| p.path == record.path) {
            return Err(Error::Input(format!(
                "question {:?} has path {} twice",
                record.id, record.path
            )));
        }
        group.push(record);
    }
    Ok(groups)
}
