//! The extraction rules of the crate documentation, case by case, through the public API.

use lmsi_voter::{AnswerKind, DEFAULT_STOP_MARKERS, Extractor};

/// Asserts `extractor.extract(input) == want` for every case, reporting all failures at once.
fn check(extractor: &Extractor, cases: &[(&str, Option<&str>)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(input, want)| {
            let got = extractor.extract(input);
            (got.as_deref() != *want).then(|| format!("{input:?}: got {got:?}, want {want:?}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn number() -> Extractor {
    Extractor::new(AnswerKind::Number)
}

#[test]
fn gsm8k_style_completions() {
    check(
        &number(),
        &[
            (
                "Natalie has 3 + 4 = 7 pens. The answer is 7.\n\nQ: ... The answer is 9.",
                Some("7"),
            ),
            (
                "Natalie sold 48/2 = 24 clips in May.\n#### 1,234",
                Some("1234"),
            ),
            ("So x = \\boxed{3/4}", Some("0.75")),
            (
                "Weng earns 12/60 = $0.2 per minute. She earned 0.2 x 50 = $10.\n#### 10",
                Some("10"),
            ),
            (
                "He has 5 apples and buys 3 more, so 5 + 3 = 8. The answer is 8.",
                Some("8"),
            ),
        ],
    );
}

#[test]
fn answer_markers() {
    check(
        &number(),
        &[
            ("The answer is 18.", Some("18")),
            ("the answer is: 18", Some("18")),
            ("THE ANSWER IS 18", Some("18")),
            ("Final answer: 18", Some("18")),
            ("Answer : 18", Some("18")),
            ("The answer is **18**.", Some("18")),
            ("The answer is = 18", Some("18")),
            ("The answer is (18).", Some("18")),
            ("The answer is \"18\"", Some("18")),
            ("The answer is ~18", Some("18")),
            ("The answer is \\(18\\).", Some("18")),
            ("The answer is $\\boxed{18}$.", Some("18")),
            ("#### 18", Some("18")),
            ("####18", Some("18")),
            ("##### 18 and then 20", Some("18")),
            ("\\boxed{18} so 20 items", Some("18")),
            ("\\boxed{\\frac{3}{4}} of 8 cakes", Some("0.75")),
            ("\\boxed{18 \\text{ apples}}", Some("18")),
        ],
    );
}

#[test]
fn the_last_marker_with_a_number_wins() {
    check(
        &number(),
        &[
            // A correction beats what it corrects.
            (
                "The answer is 7. Double-checking: the answer is 8.",
                Some("8"),
            ),
            ("Answer: 4 + 3 = 7. The answer is 7.", Some("7")),
            ("\\boxed{2} ... \\boxed{3}", Some("3")),
            ("#### 4\n#### 5", Some("5")),
            // Markers without a number are passed over.
            (
                "The answer is unclear. Bob has 5 + 6 = 11. The answer is 11 apples.",
                Some("11"),
            ),
            (
                "The answer is 11 apples. I hope this answer is clear.",
                Some("11"),
            ),
            ("The answer is clear: 4 + 4 = 8.", Some("8")),
            ("\\boxed{} and 9", Some("9")),
            ("the answer isn't 5, it's 6", Some("6")),
        ],
    );
}

#[test]
fn an_explicit_closing_answer_beats_an_answer_inside_the_reasoning() {
    check(
        &number(),
        &[
            (
                "A crate holds 6 boxes, so the answer is 6 boxes * 4 cans / box = 24 cans. \
                 The answer is 24.",
                Some("24"),
            ),
            (
                "Since the answer is 3 per bag, 5 bags hold 3 * 5 = 15.\nThe answer is 15.",
                Some("15"),
            ),
            (
                "The answer is 3 per bag. Over 5 bags that is 3 * 5 = 15. Final answer: 15",
                Some("15"),
            ),
        ],
    );
}

#[test]
fn closing_markers_beat_prose_markers() {
    check(
        &number(),
        &[
            // GSM8K: the `####` line is the answer, whatever the reasoning says before it.
            (
                "Each jar holds 3 cups, so the final answer is 9 jars * 3 cups / jar = 27 cups\n#### 27",
                Some("27"),
            ),
            // ... even with a closing sentence after it.
            (
                "the final answer is 9 jars * 3 cups / jar = 27 cups\n#### 27\nThe answer is 27.",
                Some("27"),
            ),
            ("#### 5\nThe answer is 6", Some("5")),
            ("The answer is 6\n#### 5", Some("5")),
            ("The answer is 4 + 4 = \\boxed{8}.", Some("8")),
            ("\\boxed{8}. The answer is 4 + 4", Some("8")),
            ("The answer is 4.\n#### unknown", Some("4")),
        ],
    );
}

#[test]
fn a_new_few_shot_question_after_the_answer_is_not_read() {
    check(
        &number(),
        &[
            (
                "3 + 4 = 7 pens. The answer is 7.\n\nQ: Tom has 9 pens. The answer is 9.",
                Some("7"),
            ),
            (
                "The answer is 7.\nQ: Tom has 9 pens.\nA: 9 - 1 = 8. The answer is 8.",
                Some("7"),
            ),
            (
                "She has 7 pens.\n\nQuestion: Tom has 9 pens.\nAnswer: The answer is 9.",
                Some("7"),
            ),
            (
                "The first answer is 2, the second answer is 7.\n\nQ: How many? The answer is 9.",
                Some("7"),
            ),
        ],
    );
    let choice = Extractor::new(AnswerKind::Choice);
    check(
        &choice,
        &[(
            "The answer is (A).\n\nQ: Pick one. The answer is (B).",
            Some("A"),
        )],
    );
}

#[test]
fn last_number_without_a_marker() {
    check(
        &number(),
        &[
            ("3 + 4 = 7", Some("7")),
            ("She has 12 pens, gives away 5 and keeps 7 pens.", Some("7")),
            ("So she needs 18.", Some("18")),
            ("There are no numbers here.", None),
            ("", None),
            ("The answer is nothing", None),
        ],
    );
}

#[test]
fn number_formats() {
    check(
        &number(),
        &[
            ("The answer is 1,234.", Some("1234")),
            ("The answer is 1,234,567.89", Some("1234567.89")),
            ("The answer is $18.", Some("18")),
            ("The answer is $18.00", Some("18")),
            ("The answer is 18.0", Some("18")),
            ("The answer is €5.50", Some("5.5")),
            ("The answer is £3", Some("3")),
            ("The answer is \\$4", Some("4")),
            ("The answer is 50%", Some("50")),
            ("The answer is 12.5%.", Some("12.5")),
            ("The answer is -5.", Some("-5")),
            ("The answer is \u{2212}5.", Some("-5")),
            ("The answer is -$5", Some("-5")),
            ("The answer is $-5", Some("-5")),
            ("The answer is 0.25", Some("0.25")),
            ("The answer is .25", Some("0.25")),
            ("The answer is 3/4", Some("0.75")),
            ("The answer is 1/3.", Some("1/3")),
            ("The answer is -2/6", Some("-1/3")),
            ("The answer is 18 apples.", Some("18")),
            ("The answer is 5 km", Some("5")),
            ("The answer is 5km", Some("5")),
            ("The answer is 007", Some("7")),
            ("The answer is 18.", Some("18")),
            ("The answer is 1.50.", Some("1.5")),
        ],
    );
}

#[test]
fn equal_values_share_a_key() {
    let groups: &[&[&str]] = &[
        &[
            "18",
            "18.0",
            "$18",
            "18.00",
            "#### 18",
            "\\boxed{18}",
            "18 apples",
            "+18",
        ],
        &["3/4", "0.75", "6/8", "\\frac{3}{4}", "\\dfrac{6}{8}", ".75"],
        &["1/2", "2/4", "0.5", "0.50"],
        &["1/3", "2/6", "\\frac{1}{3}"],
        &["-0.75", "-3/4", "\u{2212}0.75", "-\\frac{3}{4}"],
        &["1,000", "1000", "1000.0", "$1,000.00"],
        &["0", "-0", "0.0", "0/5"],
    ];
    for group in groups {
        let keys: Vec<Option<String>> = group.iter().map(|s| number().extract(s)).collect();
        assert!(keys[0].is_some(), "{group:?}");
        assert!(keys.iter().all(|k| *k == keys[0]), "{group:?} -> {keys:?}");
    }
    assert_ne!(number().extract("1/3"), number().extract("0.333"));
}

#[test]
fn canonical_number_keys() {
    check(
        &number(),
        &[
            ("18", Some("18")),
            ("18.5", Some("18.5")),
            ("-0.75", Some("-0.75")),
            ("1/3", Some("1/3")),
            ("22/7", Some("22/7")),
            ("1/8", Some("0.125")),
            ("10/4", Some("2.5")),
            ("100/10", Some("10")),
        ],
    );
}

#[test]
fn numbers_inside_words_are_not_numbers() {
    check(
        &number(),
        &[
            ("abc123", None),
            ("The value is 5 for id abc123", Some("5")),
            ("Drink H2O, 4 glasses", Some("4")),
            ("var_2 is set", None),
            ("She came 3rd", Some("3")),
            ("ages 3-5", Some("5")),
            ("x -5", Some("-5")),
        ],
    );
}

#[test]
fn unparsable_shapes() {
    check(
        &number(),
        &[
            // Commas outside the strict thousands shape separate numbers.
            ("1,2,3", Some("3")),
            ("12,34", Some("34")),
            // A zero denominator is no fraction.
            ("The answer is 5/0", Some("5")),
            // Too large for exact i128 arithmetic: no answer rather than a wrong one.
            (
                "The answer is 123456789012345678901234567890123456789012.",
                None,
            ),
            ("#### 0.0000000000000000000000000000000000000000001", None),
            // ... but a large number that fits is exact.
            ("#### 98765432109876543210", Some("98765432109876543210")),
        ],
    );
}

#[test]
fn stop_markers() {
    check(
        &number(),
        &[
            (
                "The answer is 7.\nQ: Next question. The answer is 9.",
                Some("7"),
            ),
            ("7 pens.\nQuestion: how many? 9", Some("7")),
            ("She has 7 pens.\n\nQ: Tom has 9 pens.", Some("7")),
            // A completion that is a new question has no answer of its own.
            ("Q: Tom has 9 pens. The answer is 9.", None),
            ("  Q: Tom has 9 pens.", None),
            ("\nQ: Tom has 9 pens.", None),
            ("Question: Tom has 9 pens.", None),
            // Only exact, case-sensitive markers stop.
            ("She has 7 pens.\nq: 9", Some("9")),
            ("Quite a few: 9", Some("9")),
        ],
    );
    assert!(
        DEFAULT_STOP_MARKERS.contains(&"\nQ:") && DEFAULT_STOP_MARKERS.contains(&"\nQuestion:")
    );
}

#[test]
fn custom_stop_markers() {
    let extractor = number().with_stop_markers(vec!["\n\n".into(), String::new()]);
    check(
        &extractor,
        &[
            ("The answer is 7.\n\nThe answer is 9.", Some("7")),
            // The replaced markers no longer stop at "\nQ:": the whole text counts, and its last
            // answer is read.
            ("The answer is 7.\nQ: The answer is 9.", Some("9")),
            ("7\nQ: 9", Some("9")),
        ],
    );
    let unbounded = number().with_stop_markers(Vec::new());
    check(
        &unbounded,
        &[("Q: Tom has 9 pens.", Some("9")), ("1\nQ: 2", Some("2"))],
    );
    assert_eq!(
        extractor.truncate("a\n\nb"),
        "a",
        "truncate returns the text before the first marker"
    );
}

#[test]
fn choice_letters() {
    let choice = Extractor::new(AnswerKind::Choice);
    check(
        &choice,
        &[
            ("The answer is (B).", Some("B")),
            ("The answer is B.", Some("B")),
            ("The answer is B", Some("B")),
            ("The answer is B)", Some("B")),
            ("The answer is (b).", Some("B")),
            ("The answer is: **C**", Some("C")),
            ("The answer is option D.", Some("D")),
            ("The answer is choice (E)", Some("E")),
            ("Answer: A", Some("A")),
            ("\\boxed{C}", Some("C")),
            ("#### (A)", Some("A")),
            // The last marker with a letter wins.
            ("The answer is (A). Wait, the answer is (B).", Some("B")),
            (
                "The answer is (A), so \\boxed{C}. The answer is (D).",
                Some("C"),
            ),
            ("The answer is unclear. The answer is (C).", Some("C")),
            // Without a marker: the last (X) or X).
            ("Option (A) is wrong, so (C) it is.", Some("C")),
            ("Looking at A) and then B) ...", Some("B")),
            ("So it must be (D)", Some("D")),
            // P(A) is a probability, not a choice.
            ("We know P(A) = 0.5.", None),
            // Only A-E without options.
            ("The answer is (F).", None),
            ("The answer is F.", None),
            // Lower case without parentheses or without a marker is not a letter.
            ("The answer is b.", None),
            ("(b) is right", None),
            // A completion that is only a letter.
            ("B", Some("B")),
            (" (c). ", Some("C")),
            ("No idea.", None),
            ("", None),
        ],
    );
}

#[test]
fn choice_option_texts() {
    let choice = Extractor::new(AnswerKind::Choice).with_choices(vec![
        "London".into(),
        "Paris".into(),
        "New York".into(),
        "New York City".into(),
    ]);
    check(
        &choice,
        &[
            ("The answer is Paris", Some("B")),
            ("the answer is paris.", Some("B")),
            ("The answer is: the city of London", None),
            ("The answer is London, not Paris.", Some("A")),
            ("The answer is New York City.", Some("D")),
            ("The answer is New York.", Some("C")),
            ("The answer is (B) Paris", Some("B")),
            ("The answer is D", Some("D")),
            // Four options: E is not a choice.
            ("The answer is (E)", None),
            // Without a marker, only a completion that is exactly an option's text.
            ("Paris", Some("B")),
            ("  paris! ", Some("B")),
            ("I think Paris", None),
        ],
    );
    assert_eq!(choice.kind(), AnswerKind::Choice);
}

#[test]
fn choice_with_many_options() {
    let options: Vec<String> = (1..=7).map(|n| format!("option number {n}")).collect();
    let choice = Extractor::new(AnswerKind::Choice).with_choices(options);
    check(
        &choice,
        &[
            ("The answer is (G).", Some("G")),
            ("The answer is option number 6.", Some("F")),
            ("The answer is (H).", None),
        ],
    );
}

#[test]
fn yes_no() {
    let yes_no = Extractor::new(AnswerKind::YesNo);
    check(
        &yes_no,
        &[
            ("The answer is yes.", Some("yes")),
            ("The answer is No.", Some("no")),
            ("The answer is: **YES**", Some("yes")),
            ("The answer is true", Some("yes")),
            ("The answer is False.", Some("no")),
            ("\\boxed{no}", Some("no")),
            // The word after the marker beats later words.
            ("The answer is yes. No doubt about it.", Some("yes")),
            (
                "The answer is no. On second thought, the answer is yes.",
                Some("yes"),
            ),
            ("The answer is yes. Is this answer: certain?", Some("yes")),
            // A marker followed by another word: fall back to the last yes/no word.
            ("The answer is probably no, yes.", Some("yes")),
            ("Is water wet? Yes. Is fire cold? No.", Some("no")),
            ("Nobody knows; nothing is certain", None),
            ("yesterday, notably", None),
            ("", None),
        ],
    );
}

#[test]
fn free_text() {
    let text = Extractor::new(AnswerKind::Text);
    check(
        &text,
        &[
            ("The answer is The Eiffel Tower.", Some("eiffel tower")),
            ("The answer is: Paris. It is in France.", Some("paris")),
            ("The answer is Paris\nbecause it is.", Some("paris")),
            ("The answer is 3.5 km.", Some("35 km")),
            ("\\boxed{A cat}", Some("cat")),
            ("The answer is . Really? The answer is Rome.", Some("rome")),
            ("The answer is Paris. No, the answer is Rome.", Some("rome")),
            ("The answer is Paris.\n#### Rome", Some("rome")),
            ("  Paris, France!  ", Some("paris france")),
            ("A", None),
            ("...", None),
            ("", None),
            ("Rome\nQ: What is the capital of France?", Some("rome")),
        ],
    );
}

#[test]
fn non_ascii_text_is_safe() {
    for kind in [
        AnswerKind::Number,
        AnswerKind::Choice,
        AnswerKind::YesNo,
        AnswerKind::Text,
    ] {
        let extractor = Extractor::new(kind);
        for text in [
            "é(D)",
            "ответ: 5",
            "答えは 42 です",
            "½ → €",
            "\u{2212}",
            "🙂answer is🙂",
            "####é",
        ] {
            extractor.extract(text);
        }
    }
    check(
        &number(),
        &[("答えは 42 です", Some("42")), ("ответ 5", Some("5"))],
    );
}
