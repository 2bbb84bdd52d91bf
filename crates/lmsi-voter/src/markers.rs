//! Answer markers: the phrases after which a completion states its final answer, and which of
//! them is read first.
//!
//! The markers are `answer is` and `answer:` (any case, `answer` starting a word), `####` (GSM8K;
//! any longer run of `#` too) and `\boxed{`. Each marker owns the text from its end up to the start
//! of the next marker (or the end of the text); a `\boxed{` span also stops at its closing brace.
//! Bounding spans this way keeps every extraction linear in the length of the text.
//!
//! The spans come in the order the extractors try them (the first that holds an answer wins): the
//! *closing* markers `####` and `\boxed{`, which a text writes only for its final answer, before
//! the prose markers, which also occur inside the reasoning ("the answer is 15 gallons * 8 = 120
//! pints"); within each group, the last marker first, so a closing "The answer is 12." beats an
//! earlier "answer is" and a correction beats what it corrects.

/// The span after every answer marker in `text`, in the order they are tried: closing markers
/// (`####`, `\boxed{`) from the last to the first, then prose markers from the last to the first.
pub(crate) fn answer_spans(text: &str) -> Vec<&str> {
    let found = find_markers(text);
    let mut spans: Vec<(bool, &str)> = found
        .iter()
        .enumerate()
        .map(|(n, marker)| {
            let limit = found.get(n + 1).map_or(text.len(), |next| next.start);
            let span = &text[marker.end..limit];
            let span = match marker.kind {
                Kind::Boxed => box_content(span),
                Kind::Hashes | Kind::Prose => span,
            };
            (marker.kind == Kind::Prose, span)
        })
        .collect();
    spans.reverse();
    // A stable sort: closing markers (`false`) first, each group still from the last to the first.
    spans.sort_by_key(|&(prose, _)| prose);
    spans.into_iter().map(|(_, span)| span).collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `####` (or more `#`).
    Hashes,
    /// `\boxed{`.
    Boxed,
    /// `answer is` or `answer:`.
    Prose,
}

struct Marker {
    start: usize,
    end: usize,
    kind: Kind,
}

fn find_markers(text: &str) -> Vec<Marker> {
    const BOXED: &[u8] = b"\\boxed{";
    let bytes = text.as_bytes();
    let mut markers = Vec::new();
    // Every marker begins with an ASCII byte, and ASCII bytes never occur inside a multi-byte UTF-8
    // sequence, so scanning bytes only ever matches at char boundaries.
    let mut i = 0;
    while i < bytes.len() {
        if let Some((end, kind)) = phrase_end(text, i) {
            markers.push(Marker {
                start: i,
                end,
                kind,
            });
            i = end;
        } else if bytes[i..].starts_with(BOXED) {
            markers.push(Marker {
                start: i,
                end: i + BOXED.len(),
                kind: Kind::Boxed,
            });
            i += BOXED.len();
        } else {
            i += 1;
        }
    }
    markers
}

/// The end and kind of the `answer is` / `answer:` / `####` marker starting at byte `i`, if any.
fn phrase_end(text: &str, i: usize) -> Option<(usize, Kind)> {
    let bytes = &text.as_bytes()[i..];
    let hashes = bytes.iter().take_while(|&&b| b == b'#').count();
    if hashes >= 4 {
        return Some((i + hashes, Kind::Hashes));
    }
    let word = bytes.get(..6)?;
    if !word.eq_ignore_ascii_case(b"answer") || text[..i].chars().next_back().is_some_and(is_word) {
        return None;
    }
    let spaces = bytes[6..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let k = 6 + spaces;
    if bytes.get(k) == Some(&b':') {
        return Some((i + k + 1, Kind::Prose));
    }
    // `is` must be a whole word: "the answer isn't 5" states no answer.
    let is_word_is = bytes
        .get(k..k + 2)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"is"))
        && !text[i + k + 2..].chars().next().is_some_and(is_word);
    (spaces > 0 && is_word_is).then_some((i + k + 2, Kind::Prose))
}

/// The start of `span` up to the brace that closes the `\boxed{` before it (all of it if unclosed).
fn box_content(span: &str) -> &str {
    let mut depth = 1usize;
    for (i, b) in span.bytes().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return &span[..i];
                }
            }
            _ => {}
        }
    }
    span
}

/// Characters that continue a word: a marker or an answer never starts right after one.
pub(crate) fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_and_boxes() {
        assert_eq!(answer_spans("The answer is 7."), [" 7."]);
        assert_eq!(answer_spans("ANSWER: 7"), [" 7"]);
        assert_eq!(answer_spans("Final answer :7"), ["7"]);
        assert_eq!(answer_spans("##### 12"), [" 12"]);
        assert_eq!(answer_spans("### 12"), Vec::<&str>::new());
        assert_eq!(answer_spans(r"so \boxed{3/4} is it"), ["3/4"]);
        assert_eq!(answer_spans(r"\boxed{\frac{1}{2}}"), [r"\frac{1}{2}"]);
        assert_eq!(answer_spans(r"\boxed{5"), ["5"]);
    }

    #[test]
    fn spans_end_at_the_next_marker() {
        assert_eq!(answer_spans("answer is 1, answer is 2"), [" 2", " 1, "]);
        assert_eq!(answer_spans(r"The answer is $\boxed{18}$."), ["18", " $"]);
        assert_eq!(answer_spans(r"\boxed{\boxed{4}}"), ["4", ""]);
    }

    #[test]
    fn closing_markers_first_then_prose_each_from_the_last() {
        assert_eq!(
            answer_spans("answer is 1. answer: 2\n#### 3"),
            [" 3", " 2\n", " 1. "]
        );
        assert_eq!(
            answer_spans(r"#### 1 \boxed{2} answer is 3 #### 4"),
            [" 4", "2", " 1 ", " 3 "]
        );
        assert_eq!(answer_spans("The answer is 5."), [" 5."]);
    }

    #[test]
    fn words_that_are_not_markers() {
        assert!(answer_spans("the answers are 5").is_empty());
        assert!(answer_spans("reanswer is 5").is_empty());
        assert!(answer_spans("the answer isn't 5").is_empty());
        assert!(answer_spans("the answeris 5").is_empty());
        assert!(answer_spans("éanswer is 5").is_empty());
        assert_eq!(answer_spans("é answer is 5"), [" 5"]);
    }
}
