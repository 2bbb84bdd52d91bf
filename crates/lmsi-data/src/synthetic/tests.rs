use std::collections::HashSet;

use proptest::prelude::*;

use super::templates::{OBJECTS, PEOPLE, Person};
use super::*;
use crate::prompt::{ANSWER_PHRASE, PromptFormat};
use crate::testutil::{equations, numbers};
use crate::text::words;

fn config(min_steps: usize, max_steps: usize, max_value: i64, seed: u64) -> TaskConfig {
    TaskConfig {
        min_steps,
        max_steps,
        max_value,
        seed,
    }
}

/// Every documented property of one problem; returns the first broken one.
fn check(problem: &SyntheticProblem, config: &TaskConfig) -> Result<(), String> {
    let SyntheticProblem {
        question,
        reasoning,
        answer,
        steps,
    } = problem;
    let found = equations(reasoning);
    if found.len() != *steps {
        return Err(format!("{steps} steps but {} equations", found.len()));
    }
    if !(config.min_steps..=config.max_steps).contains(steps) {
        return Err(format!("{steps} steps outside the config"));
    }
    if let Some(wrong) = found.iter().find(|e| !e.holds() || e.result < 1) {
        return Err(format!("bad arithmetic {wrong:?}"));
    }
    if found.last().map(|e| e.result) != Some(*answer) {
        return Err("the answer is not the last result".into());
    }
    if let Some(big) = numbers(question)
        .into_iter()
        .chain(numbers(reasoning))
        .find(|&v| v > config.max_value)
    {
        return Err(format!("{big} exceeds max_value"));
    }
    let last_sentence = question.rsplit(". ").next().unwrap_or(question);
    if !(last_sentence.starts_with("How many ") && last_sentence.ends_with('?')) {
        return Err(format!(
            "last sentence {last_sentence:?} is not a How many question"
        ));
    }
    if question.matches('?').count() != 1 || reasoning.contains(ANSWER_PHRASE) {
        return Err("stray question mark or answer sentence".into());
    }
    Ok(())
}

fn assert_all_hold(problems: &[SyntheticProblem], config: &TaskConfig) {
    for problem in problems {
        if let Err(why) = check(problem, config) {
            panic!("{why}: {problem:#?}");
        }
    }
}

#[test]
fn problems_hold_their_arithmetic_bounds_and_shape() {
    for (index, (min, max, value)) in [
        (1, 4, 100),
        (1, 1, 4),
        (4, 4, 30),
        (2, 8, 1000),
        (8, 8, 1_000_000),
    ]
    .into_iter()
    .enumerate()
    {
        let config = config(min, max, value, index as u64);
        let problems = generate(&config, 500).unwrap();
        assert_eq!(problems.len(), 500);
        assert_all_hold(&problems, &config);
        let steps: HashSet<usize> = problems.iter().map(|p| p.steps).collect();
        assert_eq!(steps, (min..=max).collect(), "every step count occurs");
    }
}

#[test]
fn same_seed_same_problems_other_seed_other_problems() {
    let a = generate(&config(1, 4, 100, 42), 200).unwrap();
    assert_eq!(a, generate(&config(1, 4, 100, 42), 200).unwrap());
    assert_eq!(a[..50], generate(&config(1, 4, 100, 42), 50).unwrap());
    let b = generate(&config(1, 4, 100, 43), 200).unwrap();
    let shared = a.iter().filter(|p| b.contains(p)).count();
    assert!(shared < 5, "{shared} of 200 problems shared between seeds");
}

#[test]
fn no_duplicates_and_no_builtin_exemplar_questions() {
    let problems = generate(&config(1, 1, 20, 3), 3000).unwrap();
    let mut questions: HashSet<&str> = problems.iter().map(|p| p.question.as_str()).collect();
    assert_eq!(questions.len(), problems.len());
    for exemplar in ExemplarSet::builtin().exemplars() {
        assert!(questions.insert(&exemplar.question));
    }
}

#[test]
fn every_operation_and_every_closing_question_occurs() {
    let problems = generate(&TaskConfig::default(), 3000).unwrap();
    let ops: HashSet<char> = problems
        .iter()
        .flat_map(|p| equations(&p.reasoning))
        .map(|e| e.op)
        .collect();
    assert_eq!(ops, HashSet::from(['+', '-', '*', '/']));
    for ending in [
        "have now?",
        "in the end?",
        "have left?",
        "each friend get?",
        "fill?",
        "each box?",
    ] {
        assert!(
            problems.iter().any(|p| p.question.ends_with(ending)),
            "no question ends with {ending:?}"
        );
    }
}

#[test]
fn too_many_problems_for_the_space_is_a_clear_error() {
    // With every name and object the space is far too big to exhaust in a test (over 600,000
    // one-step problems even at the smallest max_value), so use two people and one object.
    let config = config(1, 1, MIN_MAX_VALUE, 0);
    let people = &PEOPLE[..2];
    let objects = &OBJECTS[..1];
    let err = generate_from(&config, 100_000, people, objects).unwrap_err();
    let message = err.to_string();
    let DataError::Exhausted { requested, made } = err else {
        panic!("expected Exhausted, got {message}");
    };
    assert_eq!(requested, 100_000);
    assert!(made > 10 && made < 2_000, "{made}");
    assert_eq!(
        message,
        format!(
            "could only make {made} distinct problems of the 100000 requested; \
             raise max_value or widen the range of steps"
        )
    );
    // Every distinct problem was found before giving up: asking for exactly that many works.
    let all = generate_from(&config, made, people, objects).unwrap();
    assert_all_hold(&all, &config);
}

#[test]
fn out_of_range_configs_are_rejected() {
    for bad in [
        config(0, 2, 100, 0),
        config(3, 2, 100, 0),
        config(1, MAX_STEPS + 1, 100, 0),
        config(1, 4, MIN_MAX_VALUE - 1, 0),
        config(1, 4, MAX_MAX_VALUE + 1, 0),
    ] {
        assert!(
            matches!(generate(&bad, 1), Err(DataError::Config(_))),
            "{bad:?}"
        );
    }
    assert_eq!(generate(&TaskConfig::default(), 0).unwrap(), []);
}

#[test]
fn vocabulary_covers_problems_exemplars_and_prompts() {
    let vocabulary: HashSet<&str> = vocabulary_words().into_iter().collect();
    let allowed = |c: char| {
        c.is_ascii_alphanumeric() || c == ' ' || c == '\n' || c == '\'' || SYMBOLS.contains(&c)
    };
    let check_text = |text: &str| {
        if let Some(word) = words(text).find(|w| !vocabulary.contains(w)) {
            panic!("{word:?} is missing from the vocabulary (in {text:?})");
        }
        if let Some(c) = text.chars().find(|&c| !allowed(c)) {
            panic!("{c:?} is not an allowed character (in {text:?})");
        }
    };
    let builtin = ExemplarSet::builtin();
    for (seed, value) in [4, 12, 100, 1000, 1_000_000].into_iter().enumerate() {
        for problem in generate(&config(1, MAX_STEPS, value, seed as u64), 1000).unwrap() {
            check_text(problem.to_question("1".into()).answer.as_deref().unwrap());
            for format in PromptFormat::ALL {
                check_text(&format.prompt(&builtin, &problem.question).text());
                check_text(&format.completion(&problem.reasoning, &problem.answer.to_string()));
            }
        }
    }
    // The vocabulary is used by everyone; keep it free of repeats and sorted.
    let list = vocabulary_words();
    assert!(list.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn every_template_renders_for_both_pronoun_sets() {
    let she = &PEOPLE[0];
    let he = PEOPLE.iter().find(|p| !p.she).unwrap();
    let numbers = Numbers {
        x: 12,
        k: 3,
        c: 4,
        n: 2,
        m: 5,
        t: 10,
    };
    let render_all = |person: &Person| {
        let scene = Scene {
            person,
            friend: she,
            object: ("shell", "shells"),
            numbers,
        };
        let templates = STEPS
            .iter()
            .flat_map(|s| [Some(s.question), Some(s.reasoning), s.ending])
            .flatten()
            .chain(
                PLAIN_STARTS
                    .iter()
                    .chain(GROUP_STARTS)
                    .flat_map(|(q, r)| [*q, *r]),
            )
            .chain(ENDINGS.iter().copied())
            .chain([ENDING_AFTER_SUB]);
        templates
            .map(|template| render(template, &scene))
            .collect::<Vec<_>>()
    };
    for text in render_all(she).iter().chain(&render_all(he)) {
        assert!(!text.contains('{') && !text.contains('}'), "{text}");
    }
    assert!(render_all(he).iter().any(|t| t.contains(" his ")));
    assert_eq!(
        render(
            "{His} {x:obj} {c:obj} {n:bag|bags}",
            &Scene {
                person: he,
                friend: she,
                object: ("egg", "eggs"),
                numbers: Numbers {
                    x: 1,
                    c: 2,
                    n: 1,
                    ..Numbers::default()
                },
            }
        ),
        "His egg eggs bag"
    );
}

#[test]
fn to_question_and_to_exemplar_keep_the_problem() {
    let problem = &generate(&TaskConfig::default(), 1).unwrap()[0];
    let question = problem.to_question("q1".into());
    assert_eq!(question.id, "q1");
    assert_eq!(question.question, problem.question);
    assert_eq!(
        question.answer.as_deref(),
        Some(format!("{}\n#### {}", problem.reasoning, problem.answer).as_str())
    );
    assert_eq!(question.gold(), Some(problem.answer.to_string().as_str()));
    let exemplar = problem.to_exemplar();
    assert_eq!(exemplar.answer, problem.answer.to_string());
    assert_eq!(exemplar.reasoning, problem.reasoning);
    ExemplarSet::new(vec![exemplar]).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_valid_config_gives_valid_problems(
        min in 1..=MAX_STEPS,
        extra in 0..MAX_STEPS,
        value in MIN_MAX_VALUE..5000,
        seed in any::<u64>(),
    ) {
        let config = config(min, (min + extra).min(MAX_STEPS), value, seed);
        let problems = generate(&config, 20).unwrap();
        prop_assert_eq!(problems.len(), 20);
        for problem in &problems {
            prop_assert!(check(problem, &config).is_ok(), "{:?}: {:#?}", check(problem, &config), problem);
        }
    }
}
