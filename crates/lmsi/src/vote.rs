//! The "vote" stage: group sampled paths by question, extract each path's answer and keep the
//! self-consistent (majority) answer.

use std::collections::HashMap;

use lmsi_data::{PathRecord, VoteRecord};
use lmsi_voter::{AnswerKind, Ballot, Extractor, Vote, Weighting, vote};
use serde::{Deserialize, Serialize};

use crate::{Error, check_option};

/// How the vote stage reads answers and counts them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoteOptions {
    pub kind: AnswerKind,
    pub weighting: Weighting,
    /// Questions whose confidence (votes / valid paths) is below this are left out of the output.
    pub min_confidence: f64,
    /// Which answer each question keeps: the majority, or (a control) a random one.
    #[serde(default)]
    pub control: VoteControl,
    /// The seed of [`VoteControl::RandomVote`]'s draws.
    #[serde(default)]
    pub seed: u64,
}

impl Default for VoteOptions {
    fn default() -> Self {
        Self {
            kind: AnswerKind::Number,
            weighting: Weighting::Uniform,
            min_confidence: 0.0,
            control: VoteControl::Majority,
            seed: 0,
        }
    }
}

impl VoteOptions {
    /// Checks the minimum confidence, naming it by its flag.
    pub fn check(&self) -> Result<(), Error> {
        let in_unit = |x: &f64| (0.0..=1.0).contains(x);
        let expected = "a number from 0 to 1";
        check_option("--min-confidence", self.min_confidence, expected, in_unit)
    }
}

/// Which answer a question's vote keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VoteControl {
    /// The majority (self-consistent) answer: the method.
    #[default]
    Majority,
    /// The spurious-vote control: one of the question's distinct sampled answers, drawn uniformly
    /// (seeded by the question's id), whatever its share of the paths. Training on these is the
    /// same loop without the vote's signal; a gain that survives it is not the vote's doing.
    RandomVote,
}

impl std::str::FromStr for VoteControl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "majority" => Ok(VoteControl::Majority),
            "random-vote" => Ok(VoteControl::RandomVote),
            _ => Err(format!(
                "unknown vote control {s:?} (expected majority or random-vote)"
            )),
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
    options.check()?;
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
        let result = match options.control {
            VoteControl::Majority => vote(&ballots, options.weighting),
            VoteControl::RandomVote => random_vote(&ballots, id, options.seed),
        };
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

/// [`VoteControl::RandomVote`]: one of the distinct answers among `ballots` (in order of first
/// appearance), drawn uniformly with `seed` and the question's id, with the paths that gave it.
fn random_vote(ballots: &[Ballot], id: &str, seed: u64) -> Vote {
    let mut distinct: Vec<&str> = Vec::new();
    for answer in ballots.iter().filter_map(|b| b.answer.as_deref()) {
        if !distinct.contains(&answer) {
            distinct.push(answer);
        }
    }
    let valid = ballots.iter().filter(|b| b.answer.is_some()).count();
    let draw = lmsi_sampler::random_u64(seed, lmsi_sampler::sequence_id(id, 0), 0);
    let answer = (!distinct.is_empty()).then(|| distinct[(draw % distinct.len() as u64) as usize]);
    let paths: Vec<usize> = (0..ballots.len())
        .filter(|&i| answer.is_some() && ballots[i].answer.as_deref() == answer)
        .collect();
    let votes = paths.len();
    Vote {
        answer: answer.map(str::to_string),
        votes,
        weight: votes as f64,
        valid,
        total: ballots.len(),
        confidence: if valid == 0 {
            0.0
        } else {
            votes as f64 / valid as f64
        },
        paths,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Question `id` with paths answering `answers` in order.
    fn paths(id: &str, answers: &[&str]) -> Vec<PathRecord> {
        let path = |(k, answer): (usize, &&str)| PathRecord {
            id: id.into(),
            question: "How many?".into(),
            path: k,
            text: format!("So it is {answer}. The answer is {answer}."),
            answer: None,
            logprob: -1.0,
            tokens: 4,
            gold: None,
        };
        answers.iter().enumerate().map(path).collect()
    }

    #[test]
    fn the_random_vote_control_keeps_a_drawn_sampled_answer_and_its_paths() {
        let control = VoteOptions {
            control: VoteControl::RandomVote,
            ..VoteOptions::default()
        };
        let mut not_majority = 0;
        for q in 0..40 {
            let id = format!("q{q}");
            let all = paths(&id, &["4", "4", "4", "7", "9"]);
            let (votes, _) = vote_paths(&all, &control).unwrap();
            let v = &votes[0];
            let answer = v.answer.as_deref().unwrap();
            assert!(["4", "7", "9"].contains(&answer), "{answer}");
            let expected: Vec<usize> = (0..5).filter(|&k| all[k].text.contains(answer)).collect();
            assert_eq!(v.paths, expected);
            assert_eq!(v.confidence, expected.len() as f64 / 5.0);
            not_majority += usize::from(answer != "4");
            // The same seed draws the same answer.
            assert_eq!(vote_paths(&all, &control).unwrap().0, votes);
        }
        // Each distinct answer is drawn with probability 1/3, so the majority loses about 27 of 40.
        assert!((15..=38).contains(&not_majority), "{not_majority}");
        let majority = vote_paths(&paths("q", &["4", "4", "7"]), &VoteOptions::default()).unwrap();
        assert_eq!(majority.0[0].answer.as_deref(), Some("4"));
    }
}
