//! The "build" stage: turn sampled paths into an objective's training data, in the paper's mixed
//! formats: the paths that agree with their question's vote (`sft`, [`build_examples`]), every
//! answered path weighted by its answer's vote share (`weighted`, [`build_weighted_examples`]), or
//! preference pairs of a most-voted path against a less-voted one (`scpo`, [`build_pairs`]).

use std::collections::HashMap;

use lmsi_data::{
    ANSWER_PHRASE, ExemplarSet, PathRecord, PreferencePair, PromptFormat, TrainExample, VoteRecord,
};
use lmsi_voter::Extractor;

use crate::Error;
use crate::objective::Objective;
use crate::train::TrainData;

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
                examples.push(format.train_example(exemplars, &vote.question, reasoning, answer));
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

/// The training data of `objective`: [`build_examples`] (`sft`), [`build_weighted_examples`]
/// (`weighted`) or [`build_pairs`] (`scpo`); `ttrl` has none, it samples as it trains.
pub fn build_for(
    objective: Objective,
    votes: &[VoteRecord],
    paths: &[PathRecord],
    formats: &[PromptFormat],
    exemplars: &ExemplarSet,
    extractor: &Extractor,
) -> Result<(TrainData, BuildSummary), Error> {
    Ok(match objective {
        Objective::Sft => {
            let (examples, summary) = build_examples(votes, paths, formats, exemplars)?;
            (TrainData::Examples(examples), summary)
        }
        Objective::Weighted => {
            let (examples, summary) =
                build_weighted_examples(votes, paths, formats, exemplars, extractor)?;
            (TrainData::Examples(examples), summary)
        }
        Objective::Scpo => {
            let (pairs, summary) = build_pairs(votes, paths, formats, exemplars, extractor)?;
            (TrainData::Pairs(pairs), summary)
        }
        Objective::Ttrl => {
            return Err(Error::Input(
                "--objective ttrl has no offline data: it samples as it trains (lmsi run --objective ttrl)"
                    .into(),
            ));
        }
    })
}

/// One question's sampled paths with the answers read from them, and each answer's count.
struct Answered<'a> {
    paths: Vec<(&'a PathRecord, Option<String>)>,
    counts: HashMap<String, usize>,
    /// Paths with an answer.
    valid: usize,
}

impl<'a> Answered<'a> {
    /// The paths of each question, in the order the votes name the questions.
    fn by_question(
        votes: &'a [VoteRecord],
        paths: &'a [PathRecord],
        extractor: &Extractor,
    ) -> Vec<(&'a str, Answered<'a>)> {
        let mut groups: HashMap<&str, Answered<'a>> = HashMap::new();
        for p in paths {
            let group = groups.entry(p.id.as_str()).or_insert_with(|| Answered {
                paths: Vec::new(),
                counts: HashMap::new(),
                valid: 0,
            });
            let answer = extractor.extract(&p.text);
            if let Some(a) = &answer {
                *group.counts.entry(a.clone()).or_default() += 1;
                group.valid += 1;
            }
            group.paths.push((p, answer));
        }
        votes
            .iter()
            .filter_map(|v| Some((&*v.question, groups.remove(v.id.as_str())?)))
            .map(|(q, mut g)| {
                g.paths.sort_by_key(|(p, _)| p.path);
                (q, g)
            })
            .collect()
    }

    /// The share of the answered paths that reached `answer` (0 for no answer).
    fn share(&self, answer: Option<&str>) -> f64 {
        let count = answer
            .and_then(|a| self.counts.get(a))
            .copied()
            .unwrap_or(0);
        count as f64 / self.valid.max(1) as f64
    }
}

/// The weighted-likelihood data: every answered path, in every format, weighted by its answer's
/// share of the question's answered paths. No threshold: a path whose answer one path in 32
/// reached still counts, 1/32 as much as a unanimous one. Paths without an answer carry no vote
/// share and are left out.
pub fn build_weighted_examples(
    votes: &[VoteRecord],
    paths: &[PathRecord],
    formats: &[PromptFormat],
    exemplars: &ExemplarSet,
    extractor: &Extractor,
) -> Result<(Vec<TrainExample>, BuildSummary), Error> {
    let mut summary = BuildSummary {
        per_format: formats.iter().map(|&f| (f, 0)).collect(),
        ..BuildSummary::default()
    };
    let mut examples = Vec::new();
    for (question, group) in Answered::by_question(votes, paths, extractor) {
        summary.questions += usize::from(group.valid > 0);
        for (path, answer) in &group.paths {
            let Some(answer) = answer else { continue };
            summary.kept_paths += 1;
            let reasoning = reasoning_of(&path.text);
            for (format, count) in &mut summary.per_format {
                let mut example = format.train_example(exemplars, question, reasoning, answer);
                example.weight = group.share(Some(answer));
                examples.push(example);
                *count += 1;
            }
        }
    }
    if examples.is_empty() {
        return Err(Error::Input(
            "no training examples: no sampled path has an answer".into(),
        ));
    }
    Ok((examples, summary))
}

/// The ScPO preference pairs: per question with a voted answer, its paths that reached the vote
/// (chosen, in path order) against those that reached another answer (rejected, least-voted
/// answer first), paired in order, as many pairs as the shorter list;
/// each pair in every format, weighted by the difference of the two answers' shares. Pairs whose
/// answers tie carry no preference and are left out.
pub fn build_pairs(
    votes: &[VoteRecord],
    paths: &[PathRecord],
    formats: &[PromptFormat],
    exemplars: &ExemplarSet,
    extractor: &Extractor,
) -> Result<(Vec<PreferencePair>, BuildSummary), Error> {
    let mut summary = BuildSummary {
        per_format: formats.iter().map(|&f| (f, 0)).collect(),
        ..BuildSummary::default()
    };
    let answers: HashMap<&str, &str> = votes
        .iter()
        .filter_map(|v| Some((v.id.as_str(), v.answer.as_deref()?)))
        .collect();
    let mut pairs = Vec::new();
    for (question, group) in Answered::by_question(votes, paths, extractor) {
        let Some((path, _)) = group.paths.first() else {
            continue;
        };
        let Some(&voted) = answers.get(path.id.as_str()) else {
            continue;
        };
        let answered = group
            .paths
            .iter()
            .filter_map(|(p, a)| Some((*p, a.as_deref()?)));
        let (chosen, mut rejected): (Vec<_>, Vec<_>) = answered.partition(|(_, a)| *a == voted);
        rejected.sort_by(|(p, a), (q, b)| {
            let (x, y) = (group.share(Some(a)), group.share(Some(b)));
            x.total_cmp(&y).then(p.path.cmp(&q.path))
        });
        let mut used = false;
        for ((good, _), (bad, bad_answer)) in chosen.iter().zip(&rejected) {
            let weight = (group.share(Some(voted)) - group.share(Some(bad_answer))).abs();
            if weight == 0.0 {
                continue;
            }
            used = true;
            summary.kept_paths += 2;
            for (format, count) in &mut summary.per_format {
                pairs.push(PreferencePair {
                    prompt: format.prompt(exemplars, question).text(),
                    chosen: format.completion(reasoning_of(&good.text), voted),
                    rejected: format.completion(reasoning_of(&bad.text), bad_answer),
                    weight,
                    format: *format,
                });
                *count += 1;
            }
        }
        summary.questions += usize::from(used);
    }
    if pairs.is_empty() {
        return Err(Error::Input(
            "no preference pairs: no question has both a voted path and one with another answer"
                .into(),
        ));
    }
    Ok((pairs, summary))
}

/// The reasoning part of a generated path: its text before the first "The answer is" or "the answer is".
pub(crate) fn reasoning_of(text: &str) -> &str {
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
