//! Self-generated few-shot exemplars (the paper's section 3.3): the model writes its own prompt.
//!
//! `lmsi run --exemplars self` samples zero-shot "Let's think step by step." paths for some pool
//! questions, votes, and makes the most consistent questions the few-shot exemplars of the rest of
//! the run: each chosen question with the reasoning of its first path that reached the vote and
//! the voted answer. No label is read.
//!
//! ```
//! use lmsi::self_exemplars::select_exemplars;
//! use lmsi::vote::{VoteOptions, vote_paths};
//! use lmsi_data::PathRecord;
//!
//! let path = |id: &str, k: usize, text: &str| PathRecord {
//!     id: id.into(), question: format!("Question {id}?"), path: k, text: text.into(),
//!     answer: None, logprob: -1.0, tokens: 8, gold: None,
//! };
//! let paths = [
//!     path("a", 0, " 2 + 3 = 5. The answer is 5."), path("a", 1, " 2 + 3 = 5. The answer is 5."),
//!     path("b", 0, " 4 + 4 = 8. The answer is 8."), path("b", 1, " 4 + 4 = 9. The answer is 9."),
//! ];
//! let (votes, _) = vote_paths(&paths, &VoteOptions::default()).unwrap();
//! let set = select_exemplars(&paths, &votes, 1).unwrap();
//! let chosen = &set.exemplars()[0];
//! assert_eq!((chosen.question.as_str(), chosen.answer.as_str()), ("Question a?", "5"));
//! assert_eq!(chosen.reasoning, "2 + 3 = 5.");
//! ```

use lmsi_data::{ANSWER_PHRASE, Exemplar, ExemplarSet, PathRecord, Question, VoteRecord};

use crate::Error;
use crate::build_data::reasoning_of;
use crate::train::permutation;

/// Pool questions sampled to find `count` exemplars among: this many per exemplar.
pub const CANDIDATES_PER_EXEMPLAR: usize = 8;

/// The pool questions to sample zero-shot paths for: `CANDIDATES_PER_EXEMPLAR · count` of them
/// (or the whole pool), chosen by `seed`, in pool order.
pub fn candidates(pool: &[Question], count: usize, seed: u64) -> Vec<Question> {
    let n = (CANDIDATES_PER_EXEMPLAR * count).min(pool.len());
    let mut chosen: Vec<usize> = permutation(pool.len(), seed, u64::MAX - 1)[..n].to_vec();
    chosen.sort_unstable();
    chosen.into_iter().map(|i| pool[i].clone()).collect()
}

/// The `count` most consistent questions as exemplars: highest vote confidence first (then most
/// votes, then the votes' order), each with the reasoning of its first path that reached the vote
/// and wrote "The answer is" after some reasoning (a path cut off by the token limit, whose answer
/// was read from its last number, is no worked example). Questions without such a path are passed
/// over. Fewer than `count` come back when fewer qualify; none is an error.
pub fn select_exemplars(
    paths: &[PathRecord],
    votes: &[VoteRecord],
    count: usize,
) -> Result<ExemplarSet, Error> {
    let mut ranked: Vec<(usize, &VoteRecord)> = votes
        .iter()
        .enumerate()
        .filter(|(_, v)| v.answer.is_some())
        .collect();
    ranked.sort_by(|(i, a), (j, b)| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(b.votes.cmp(&a.votes))
            .then(i.cmp(j))
    });
    let mut chosen = Vec::new();
    for (_, vote) in ranked {
        if chosen.len() == count {
            break;
        }
        let Some(answer) = &vote.answer else { continue };
        let reasoning = vote.paths.iter().find_map(|&k| {
            let path = paths.iter().find(|p| p.id == vote.id && p.path == k)?;
            let complete = path
                .text
                .to_lowercase()
                .contains(&ANSWER_PHRASE.to_lowercase());
            let reasoning = reasoning_of(&path.text);
            (complete && !reasoning.is_empty()).then(|| reasoning.to_string())
        });
        if let Some(reasoning) = reasoning {
            chosen.push(Exemplar {
                question: vote.question.clone(),
                reasoning,
                answer: answer.clone(),
            });
        }
    }
    if chosen.is_empty() {
        return Err(Error::Input(
            "--exemplars self: no sampled zero-shot path reached its question's vote with reasoning and \"The answer is\""
                .into(),
        ));
    }
    ExemplarSet::new(chosen).map_err(Error::Data)
}
