//! The closed vocabulary of the synthetic task, for building a word-level tokenizer.

use super::render::literal_words;
use super::templates::{
    ENDING_AFTER_SUB, ENDINGS, GROUP_STARTS, OBJECTS, PEOPLE, PLAIN_STARTS, PRONOUNS, STEPS,
};
use crate::prompt::{ANSWER_PHRASE, LETS_THINK};
use crate::text::words;

/// Every character other than ASCII letters and digits, `'` inside words, space and newline that
/// the generator, the built-in exemplars, the prompt formats (`Q:`, `A:`) and
/// [`to_question`](super::SyntheticProblem::to_question) (`####`) can emit.
pub const SYMBOLS: &[char] = &['.', ',', '?', ':', '+', '-', '*', '/', '=', '#'];

/// Every word (in the sense of [`words`](crate::words): maximal runs of ASCII letters and
/// apostrophes; case matters) that synthetic problems, the built-in exemplars and the fixed
/// text of the four prompt formats can contain, sorted and without repeats. Numbers are
/// written as digits and are not words.
///
/// ```
/// let vocabulary = lmsi_data::vocabulary_words();
/// assert!(vocabulary.contains(&"shells") && vocabulary.contains(&"Let's"));
/// ```
pub fn vocabulary_words() -> Vec<&'static str> {
    let templates = STEPS
        .iter()
        .flat_map(|step| [Some(step.question), Some(step.reasoning), step.ending])
        .flatten()
        .chain(
            PLAIN_STARTS
                .iter()
                .chain(GROUP_STARTS)
                .flat_map(|(q, r)| [*q, *r]),
        )
        .chain(ENDINGS.iter().copied())
        .chain([ENDING_AFTER_SUB]);
    let mut vocabulary: Vec<&'static str> = templates.flat_map(literal_words).collect();
    vocabulary.extend(PEOPLE.iter().map(|person| person.name));
    vocabulary.extend(PRONOUNS.iter().flatten());
    vocabulary.extend(
        OBJECTS
            .iter()
            .flat_map(|(singular, plural)| [*singular, *plural]),
    );
    vocabulary.extend(words(ANSWER_PHRASE).chain(words(LETS_THINK)));
    vocabulary.extend(["Q", "A"]);
    vocabulary.sort_unstable();
    vocabulary.dedup();
    vocabulary
}
