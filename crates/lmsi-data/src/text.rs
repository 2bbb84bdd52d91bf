//! Small text helpers shared by the prompt formats and the vocabulary.

/// Trims `text` and turns every run of whitespace (newlines included) into one space.
///
/// Prompts are built from pieces that may span lines (GSM8K reasoning does); a blank line inside an
/// answer would look like the end of that answer, so every piece is put on one line.
///
/// ```
/// assert_eq!(lmsi_data::normalize_whitespace("  a\n\nb \t c "), "a b c");
/// ```
pub fn normalize_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The words of `text`: maximal runs of ASCII letters and apostrophes (so `Let's` is one word).
///
/// Digits, spaces and punctuation separate words and are not returned. This is the split
/// [`vocabulary_words`](crate::vocabulary_words) is complete for.
///
/// ```
/// let words: Vec<&str> = lmsi_data::words("Mia has 12 + 7 = 19 shells. Let's go!").collect();
/// assert_eq!(words, ["Mia", "has", "shells", "Let's", "go"]);
/// ```
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphabetic() || c == '\''))
        .filter(|word| !word.is_empty())
}
