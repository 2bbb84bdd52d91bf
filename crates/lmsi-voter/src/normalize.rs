//! SQuAD-style text normalisation, the key of `text` answers and the way option texts are compared.

/// Words dropped by the normalisation, as in the SQuAD evaluation script.
const ARTICLES: &[&str] = &["a", "an", "the"];

/// Normalises free text the way the SQuAD evaluation script does: lower case, punctuation removed
/// (here: every character that is neither alphanumeric nor whitespace), the articles `a`, `an` and
/// `the` removed, and whitespace collapsed to single spaces.
///
/// ```
/// use lmsi_voter::normalize_text;
///
/// assert_eq!(normalize_text("  The Eiffel-Tower, in Paris!"), "eiffeltower in paris");
/// assert_eq!(normalize_text("An apple a day"), "apple day");
/// ```
pub fn normalize_text(text: &str) -> String {
    normalized_words(text).collect::<Vec<_>>().join(" ")
}

/// The words of [`normalize_text`]'s output, produced lazily.
pub(crate) fn normalized_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_whitespace().filter_map(|word| {
        // Lower-case first, then filter: lower-casing may produce marks that are not alphanumeric,
        // and filtering last keeps the normalisation idempotent.
        let word: String = word
            .chars()
            .flat_map(char::to_lowercase)
            .filter(|c| c.is_alphanumeric())
            .collect();
        (!word.is_empty() && !ARTICLES.contains(&word.as_str())).then_some(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalisation() {
        assert_eq!(normalize_text("The  answer"), "answer");
        assert_eq!(normalize_text("Theory of a thing"), "theory of thing");
        assert_eq!(normalize_text("don't stop."), "dont stop");
        assert_eq!(normalize_text("3.5 km"), "35 km");
        assert_eq!(normalize_text("Übergrößen\tSTRASSE"), "übergrößen strasse");
        assert_eq!(normalize_text(" ... - !"), "");
        assert_eq!(normalize_text("A"), "");
        assert_eq!(normalize_text(""), "");
    }

    #[test]
    fn idempotent_on_awkward_letters() {
        for s in ["İstanbul", "ǅemal", "ΣΑΣ", "ﬁne"] {
            let once = normalize_text(s);
            assert_eq!(normalize_text(&once), once, "{s:?}");
        }
    }
}
