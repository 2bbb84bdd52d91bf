//! The synthetic task: templated multi-step arithmetic word problems with GSM8K-style reasoning.
//!
//! A problem follows one person's count of one kind of object through 1 to [`MAX_STEPS`]
//! operations (`+ - * /`, always with whole, positive results), then asks a "How many ...?"
//! question. Its reasoning has one sentence per step that states the arithmetic as `a op b = c`:
//!
//! ```text
//! Mia has 12 shells. She finds 7 more shells. She gives 4 shells to Leo. How many shells does Mia have now?
//! Mia starts with 12 shells. She finds 7 more, so she has 12 + 7 = 19 shells. She gives 4 to Leo, so she has 19 - 4 = 15 shells.
//! ```
//!
//! The details that make the task what it is:
//! - `steps` counts equations. A few templates hold two (buying `n` packs of `m` is
//!   `n * m = t` and then `x + t = c`); the opening "has 6 boxes of shells with 8 in each box" holds one.
//! - `max_value` bounds every number in the question and the reasoning, intermediate results
//!   included. Operands are at least 2, counts never drop below 1, a division leaves at least
//!   2, and multipliers, divisors and numbers of packs are at most 10.
//! - The text uses a fixed vocabulary ([`vocabulary_words`]), numbers written as digits, and the
//!   characters of [`SYMBOLS`], so a word-level tokenizer can cover it.
//! - [`generate`] is deterministic: the same config gives the same problems on every platform and
//!   version of this crate's dependencies (the generator is SplitMix64, written here), and a
//!   shorter list is a prefix of a longer one. It never returns the same question twice, nor a
//!   question of the built-in exemplars.

mod render;
mod rng;
mod routes;
mod templates;
mod vocabulary;

use std::collections::HashSet;

pub use routes::{column_facts, vary_reasoning, write_in_columns};
pub use vocabulary::{SYMBOLS, vocabulary_words};

use crate::error::DataError;
use crate::exemplars::{Exemplar, ExemplarSet};
use crate::records::Question;
use render::{Numbers, Scene, render};
use rng::SplitMix64;
use templates::{
    ENDING_AFTER_SUB, ENDINGS, GROUP_STARTS, OBJECTS, Op, Operand, PEOPLE, PLAIN_STARTS, Person,
    STEPS, Step,
};

/// The most steps (equations) a problem may have.
pub const MAX_STEPS: usize = 8;

/// The smallest `max_value` accepted: below it no problem has room for an operation.
pub const MIN_MAX_VALUE: i64 = 4;

/// The largest `max_value` accepted (products of two numbers must fit in an `i64`).
pub const MAX_MAX_VALUE: i64 = 1_000_000_000;

/// The largest multiplier, divisor or number of packs.
const MAX_FACTOR: i64 = 10;

/// [`generate`] gives up after this many attempts in a row that yield no new problem.
const GIVE_UP_AFTER: usize = 5_000;

/// What to generate. The default: 1 to 4 steps, numbers up to 100, seed 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskConfig {
    /// Fewest steps (equations) per problem, at least 1.
    pub min_steps: usize,
    /// Most steps per problem, at most [`MAX_STEPS`]; the count is uniform in the range.
    pub max_steps: usize,
    /// Bound on every number in a problem, in [`MIN_MAX_VALUE`]`..=`[`MAX_MAX_VALUE`].
    pub max_value: i64,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            min_steps: 1,
            max_steps: 4,
            max_value: 100,
            seed: 0,
        }
    }
}

impl TaskConfig {
    /// Checks the ranges documented on the fields.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.min_steps < 1 || self.min_steps > self.max_steps || self.max_steps > MAX_STEPS {
            return Err(DataError::Config(format!(
                "steps {}..={} must satisfy 1 <= min_steps <= max_steps <= {MAX_STEPS}",
                self.min_steps, self.max_steps
            )));
        }
        if !(MIN_MAX_VALUE..=MAX_MAX_VALUE).contains(&self.max_value) {
            return Err(DataError::Config(format!(
                "max_value {} is outside {MIN_MAX_VALUE}..={MAX_MAX_VALUE}",
                self.max_value
            )));
        }
        Ok(())
    }
}

/// One generated problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticProblem {
    /// The question, ending with a "How many ...?" sentence.
    pub question: String,
    /// One sentence per step, each stating its arithmetic as `a op b = c`; no answer sentence.
    pub reasoning: String,
    /// The final count (the result of the last equation).
    pub answer: i64,
    /// Number of equations in `reasoning`.
    pub steps: usize,
}

impl SyntheticProblem {
    /// A labelled question in GSM8K style: `answer` is the reasoning, a newline and `#### N`.
    pub fn to_question(&self, id: String) -> Question {
        Question {
            id,
            question: self.question.clone(),
            answer: Some(format!("{}\n#### {}", self.reasoning, self.answer)),
            choices: None,
        }
    }

    /// The problem as a few-shot exemplar.
    pub fn to_exemplar(&self) -> Exemplar {
        Exemplar {
            question: self.question.clone(),
            reasoning: self.reasoning.clone(),
            answer: self.answer.to_string(),
        }
    }
}

/// Generates `n` distinct problems (see the [module docs](self) for what they look like).
///
/// Errors: [`DataError::Config`] for a config outside its ranges, and [`DataError::Exhausted`]
/// when the config does not allow `n` distinct problems (the generator gives up after 5,000
/// attempts in a row without a new one).
///
/// ```
/// use lmsi_data::{TaskConfig, generate};
/// let config = TaskConfig { min_steps: 2, max_steps: 3, max_value: 50, seed: 7 };
/// let problems = generate(&config, 100)?;
/// assert_eq!(problems.len(), 100);
/// assert!(problems.iter().all(|p| (2..=3).contains(&p.steps) && p.answer <= 50));
/// assert_eq!(generate(&config, 10)?, problems[..10]);
/// let question = problems[0].to_question("0".into());
/// assert_eq!(question.gold(), Some(problems[0].answer.to_string().as_str()));
/// # Ok::<(), lmsi_data::DataError>(())
/// ```
pub fn generate(config: &TaskConfig, n: usize) -> Result<Vec<SyntheticProblem>, DataError> {
    generate_from(config, n, PEOPLE, OBJECTS)
}

/// [`generate`] over given pools of people (at least two) and objects; the tests use small
/// pools to reach the end of the problem space quickly.
fn generate_from(
    config: &TaskConfig,
    n: usize,
    people: &[Person],
    objects: &[(&'static str, &'static str)],
) -> Result<Vec<SyntheticProblem>, DataError> {
    config.validate()?;
    let mut rng = SplitMix64::new(config.seed);
    let mut seen: HashSet<String> = ExemplarSet::builtin()
        .exemplars()
        .iter()
        .map(|exemplar| exemplar.question.clone())
        .collect();
    let mut problems = Vec::with_capacity(n);
    let mut misses = 0;
    while problems.len() < n {
        match attempt(config, people, objects, &mut rng) {
            Some(problem) if seen.insert(problem.question.clone()) => {
                problems.push(problem);
                misses = 0;
            }
            _ => {
                misses += 1;
                if misses == GIVE_UP_AFTER {
                    return Err(DataError::Exhausted {
                        requested: n,
                        made: problems.len(),
                    });
                }
            }
        }
    }
    Ok(problems)
}

/// Builds one random problem, or `None` when the random choices lead to a dead end (no step
/// fits the numbers).
fn attempt(
    config: &TaskConfig,
    people: &[Person],
    objects: &[(&'static str, &'static str)],
    rng: &mut SplitMix64,
) -> Option<SyntheticProblem> {
    let steps = rng.range(config.min_steps as i64, config.max_steps as i64) as usize;
    let max = config.max_value;
    let person = rng.pick(people);
    let friend = loop {
        let friend = rng.pick(people);
        if friend.name != person.name {
            break friend;
        }
    };
    let mut scene = Scene {
        person,
        friend,
        object: *rng.pick(objects),
        numbers: Numbers::default(),
    };
    let mut question = Vec::with_capacity(steps + 2);
    let mut reasoning = Vec::with_capacity(steps + 1);

    let mut done = 0;
    let start = if rng.one_in(4) {
        let (n, m) = groups(rng, max)?;
        scene.numbers = Numbers {
            n,
            m,
            c: n * m,
            ..Numbers::default()
        };
        done = 1;
        rng.pick(GROUP_STARTS)
    } else {
        let x = rng.range(2, max);
        scene.numbers = Numbers {
            x,
            c: x,
            ..Numbers::default()
        };
        rng.pick(PLAIN_STARTS)
    };
    question.push(render(start.0, &scene));
    reasoning.push(render(start.1, &scene));

    let mut count = scene.numbers.c;
    let mut last: Option<&Step> = None;
    while done < steps {
        let remaining = steps - done;
        let usable = |step: &Step| {
            step.cost() <= remaining
                && (step.ending.is_none() || step.cost() == remaining)
                && fits(step, count, max)
        };
        // Choose the operation first, so each is equally likely whatever its number of templates.
        let ops: Vec<Op> = Op::ALL
            .into_iter()
            .filter(|&op| STEPS.iter().any(|step| step.op == op && usable(step)))
            .collect();
        if ops.is_empty() {
            return None;
        }
        let op = *rng.pick(&ops);
        let candidates: Vec<&Step> = STEPS
            .iter()
            .filter(|step| step.op == op && usable(step))
            .collect();
        let step = *rng.pick(&candidates);
        scene.numbers = draw(step, count, max, rng);
        question.push(render(step.question, &scene));
        reasoning.push(render(step.reasoning, &scene));
        count = scene.numbers.c;
        done += step.cost();
        last = Some(step);
    }

    let ending = match last.and_then(|step| step.ending) {
        Some(ending) => ending,
        None if last.is_some_and(|step| step.op == Op::Sub) && rng.one_in(3) => ENDING_AFTER_SUB,
        None => rng.pick(ENDINGS),
    };
    question.push(render(ending, &scene));
    Some(SyntheticProblem {
        question: question.join(" "),
        reasoning: reasoning.join(" "),
        answer: count,
        steps,
    })
}

/// Whether `step` has an operand that keeps every number in `1..=max` from count `x`.
fn fits(step: &Step, x: i64, max: i64) -> bool {
    match (step.op, step.operand) {
        (Op::Add, Operand::Free) => x + 2 <= max,
        (Op::Sub, Operand::Free) => x >= 3,
        (Op::Mul, Operand::Free) => x >= 2 && x * 2 <= max,
        (Op::Mul, Operand::Fixed(k)) => x >= 2 && x * k <= max,
        (Op::Div, Operand::Free) => divisors(x).next().is_some(),
        (Op::Div, Operand::Fixed(k)) => x % k == 0 && x / k >= 2,
        (Op::Add | Op::Sub, Operand::Groups) => group_room(step.op, x, max) >= 4,
        (Op::Add | Op::Sub, Operand::Fixed(_)) | (Op::Mul | Op::Div, Operand::Groups) => false,
    }
}

/// Draws the numbers of `step` from count `x`; `fits(step, x, max)` must hold.
fn draw(step: &Step, x: i64, max: i64, rng: &mut SplitMix64) -> Numbers {
    let mut numbers = Numbers {
        x,
        ..Numbers::default()
    };
    let k = match step.operand {
        Operand::Fixed(k) => k,
        Operand::Free => match step.op {
            Op::Add => rng.range(2, max - x),
            Op::Sub => rng.range(2, x - 1),
            Op::Mul => rng.range(2, (max / x).min(MAX_FACTOR)),
            Op::Div => *rng.pick(&divisors(x).collect::<Vec<_>>()),
        },
        Operand::Groups => {
            let room = group_room(step.op, x, max);
            let (n, m) = groups(rng, room).expect("`fits` checked the room for two groups");
            numbers.n = n;
            numbers.m = m;
            numbers.t = n * m;
            n * m
        }
    };
    numbers.k = k;
    numbers.c = match step.op {
        Op::Add => x + k,
        Op::Sub => x - k,
        Op::Mul => x * k,
        Op::Div => x / k,
    };
    numbers
}

/// The largest total a step of groups can add (keeping `c <= max`) or take away (keeping `c >= 1`).
fn group_room(op: Op, x: i64, max: i64) -> i64 {
    if op == Op::Add { max - x } else { x - 1 }
}

/// `n` groups of `m` with `n, m >= 2`, `n <= MAX_FACTOR` and `n * m <= room`.
fn groups(rng: &mut SplitMix64, room: i64) -> Option<(i64, i64)> {
    if room < 4 {
        return None;
    }
    let n = rng.range(2, (room / 2).min(MAX_FACTOR));
    let m = rng.range(2, room / n);
    Some((n, m))
}

/// The divisors `k` of `x` usable in a division: `2 <= k <= MAX_FACTOR` and `x / k >= 2`.
fn divisors(x: i64) -> impl Iterator<Item = i64> {
    (2..=(x / 2).min(MAX_FACTOR)).filter(move |k| x % k == 0)
}

#[cfg(test)]
mod tests;
