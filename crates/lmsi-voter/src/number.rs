//! Numbers in free text: recognising them, reading them as exact rationals, and the canonical key.
//!
//! Everything is exact `i128` arithmetic with overflow checks: a number too large (or with too many
//! decimal places) to represent is recognised as a number but has no value, and never panics.

use std::fmt;

/// Currency signs that may stand before a number (`$18`, `-€5`, `\$3` in LaTeX).
const CURRENCIES: &[&str] = &["\\$", "$", "€", "£", "¥"];

/// LaTeX fraction commands whose two arguments form a fraction (`\frac{3}{4}`).
const LATEX_FRACTIONS: &[&str] = &["\\frac{", "\\dfrac{", "\\tfrac{"];

/// Minus signs: ASCII hyphen-minus and U+2212 MINUS SIGN.
const MINUS_SIGNS: &[char] = &['-', '\u{2212}'];

/// An exact rational number in lowest terms with a positive denominator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rational {
    num: i128,
    den: i128,
}

impl Rational {
    /// `num / den` in lowest terms; `None` when `den == 0` or the result does not fit.
    pub(crate) fn new(num: i128, den: i128) -> Option<Self> {
        if den == 0 {
            return None;
        }
        let g = gcd(num.unsigned_abs(), den.unsigned_abs());
        // g <= |den| <= 2^127 fits in i128 unless both are i128::MIN (then: no value).
        let g = i128::try_from(g).ok()?;
        let (mut num, mut den) = (num / g, den / g);
        if den < 0 {
            num = num.checked_neg()?;
            den = den.checked_neg()?;
        }
        Some(Self { num, den })
    }

    fn checked_neg(self) -> Option<Self> {
        Some(Self {
            num: self.num.checked_neg()?,
            den: self.den,
        })
    }

    /// `self / other`; `None` on division by zero or overflow.
    fn checked_div(self, other: Self) -> Option<Self> {
        if other.num == 0 {
            return None;
        }
        // Cancel common factors first so that the products overflow as late as possible.
        let g1 = i128::try_from(gcd(self.num.unsigned_abs(), other.num.unsigned_abs())).ok()?;
        let g2 = i128::try_from(gcd(self.den.unsigned_abs(), other.den.unsigned_abs())).ok()?;
        let num = (self.num / g1).checked_mul(other.den / g2)?;
        let den = (self.den / g2).checked_mul(other.num / g1)?;
        Self::new(num, den)
    }

    fn is_zero(self) -> bool {
        self.num == 0
    }
}

impl fmt::Display for Rational {
    /// The canonical key: a plain decimal when the expansion terminates (`18`, `-0.75`), else `p/q`.
    ///
    /// The choice depends only on the value, so equal values always print the same way.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            return write!(f, "{}", self.num);
        }
        match terminating_decimal(self.num, self.den) {
            Some(decimal) => f.write_str(&decimal),
            None => write!(f, "{}/{}", self.num, self.den),
        }
    }
}

/// The exact decimal expansion of `num / den` (lowest terms, `den > 1`), when it terminates and its
/// long division stays within `u128`.
fn terminating_decimal(num: i128, den: i128) -> Option<String> {
    let den = den.unsigned_abs();
    let mut rest = den;
    for p in [2, 5] {
        while rest.is_multiple_of(p) {
            rest /= p;
        }
    }
    if rest != 1 {
        return None;
    }
    let abs = num.unsigned_abs();
    let mut out = String::new();
    if num < 0 {
        out.push('-');
    }
    out.push_str(&(abs / den).to_string());
    out.push('.');
    let mut remainder = abs % den;
    // A denominator 2^a 5^b ends the expansion after max(a, b) digits.
    while remainder != 0 {
        remainder = remainder.checked_mul(10)?;
        out.push(char::from(b'0' + u8::try_from(remainder / den).ok()?));
        remainder %= den;
    }
    Some(out)
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A number recognised in text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Its exact value, or `None` when it does not fit in `i128` arithmetic.
    pub(crate) value: Option<Rational>,
    /// Byte offset just past the number.
    pub(crate) end: usize,
}

/// The number that starts exactly at the beginning of `s`, if any.
///
/// Grammar: `[sign] [currency [spaces]] [sign] body`, at most one sign, where `body` is a LaTeX
/// fraction `\frac{x}{y}` or `decimal [/ decimal]`. A decimal has optional thousands separators
/// (`1,234,567`: a leading group of 1-3 digits, then groups of exactly three) and an optional
/// fractional part (`.5` needs a digit after the point, so `18.` is 18 and a full stop). A fraction
/// with a zero denominator is not a fraction: `5/0` reads as `5`.
pub(crate) fn number_at(s: &str) -> Option<Found> {
    let mut i = 0;
    let mut negative = None;
    if let Some(len) = sign_len(s) {
        negative = Some(s.starts_with(MINUS_SIGNS));
        i += len;
    }
    if let Some(currency) = CURRENCIES.iter().find(|c| s[i..].starts_with(**c)) {
        i += currency.len();
        i += s[i..].len() - s[i..].trim_start_matches(' ').len();
        if negative.is_none()
            && let Some(len) = sign_len(&s[i..])
        {
            negative = Some(s[i..].starts_with(MINUS_SIGNS));
            i += len;
        }
    }
    let (value, len) = body_at(&s[i..])?;
    let value = match negative {
        Some(true) => value.and_then(Rational::checked_neg),
        _ => value,
    };
    Some(Found {
        value,
        end: i + len,
    })
}

/// The last number in `s` that stands on its own: a number never starts right after a letter,
/// digit or underscore, so `abc123` and `H2O` hold no number, while `5km` and `3rd` do.
pub(crate) fn last_number(s: &str) -> Option<Found> {
    let mut last = None;
    let mut i = 0;
    let mut prev: Option<char> = None;
    while i < s.len() {
        let at_boundary = prev.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if at_boundary && let Some(found) = number_at(&s[i..]) {
            let found = Found {
                value: found.value,
                end: i + found.end,
            };
            last = Some(found);
            prev = s[..found.end].chars().next_back();
            i = found.end;
            continue;
        }
        let c = s[i..]
            .chars()
            .next()
            .expect("i is a char boundary inside s");
        prev = Some(c);
        i += c.len_utf8();
    }
    last
}

fn sign_len(s: &str) -> Option<usize> {
    let c = s.chars().next()?;
    (MINUS_SIGNS.contains(&c) || c == '+').then(|| c.len_utf8())
}

/// An unsigned number body at the start of `s`: its value (if it fits) and its length in bytes.
fn body_at(s: &str) -> Option<(Option<Rational>, usize)> {
    if let Some(command) = LATEX_FRACTIONS.iter().find(|c| s.starts_with(**c)) {
        let (value, len) = latex_fraction(&s[command.len()..])?;
        return Some((value, command.len() + len));
    }
    let (numerator, mut len) = decimal_at(s)?;
    if let Some(rest) = s[len..].strip_prefix('/')
        && let Some((denominator, den_len)) = decimal_at(rest)
        && denominator.is_none_or(|d| !d.is_zero())
    {
        len += 1 + den_len;
        let value = numerator
            .zip(denominator)
            .and_then(|(n, d)| n.checked_div(d));
        return Some((value, len));
    }
    Some((numerator, len))
}

/// `x}{y}` after `\frac{`, where `x` and `y` are signed decimals (spaces allowed around them).
///
/// The arguments are parsed in place rather than searched for a closing brace, so the work stays
/// linear in the length of the number, whatever the text.
fn latex_fraction(s: &str) -> Option<(Option<Rational>, usize)> {
    let (numerator, num_len) = braced_argument(s)?;
    let rest = s[num_len..].strip_prefix('{')?;
    let (denominator, den_len) = braced_argument(rest)?;
    if denominator.is_some_and(Rational::is_zero) {
        return None;
    }
    let value = numerator
        .zip(denominator)
        .and_then(|(n, d)| n.checked_div(d));
    Some((value, num_len + 1 + den_len))
}

/// `[spaces] [sign] decimal [spaces] }` at the start of `s`: the value and the length through `}`.
fn braced_argument(s: &str) -> Option<(Option<Rational>, usize)> {
    let mut i = s.len() - s.trim_start_matches(' ').len();
    let sign = sign_len(&s[i..]);
    let negative = sign.is_some() && s[i..].starts_with(MINUS_SIGNS);
    i += sign.unwrap_or(0);
    let (value, len) = decimal_at(&s[i..])?;
    i += len;
    i += s[i..].len() - s[i..].trim_start_matches(' ').len();
    s[i..].starts_with('}').then_some(())?;
    let value = if negative {
        value.and_then(Rational::checked_neg)
    } else {
        value
    };
    Some((value, i + 1))
}

/// An unsigned decimal at the start of `s`.
fn decimal_at(s: &str) -> Option<(Option<Rational>, usize)> {
    let bytes = s.as_bytes();
    let digits_from = |start: usize| {
        bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };

    let mut integer = String::new();
    let first = digits_from(0);
    integer.push_str(&s[..first]);
    let mut len = first;
    // Commas are thousands separators only in the strict `1,234,567` shape.
    if (1..=3).contains(&first) {
        while bytes.get(len) == Some(&b',') && digits_from(len + 1) == 3 {
            integer.push_str(&s[len + 1..len + 4]);
            len += 4;
        }
    }
    let mut fraction = "";
    if bytes.get(len) == Some(&b'.') {
        let n = digits_from(len + 1);
        if n > 0 {
            fraction = &s[len + 1..len + 1 + n];
            len += 1 + n;
        }
    }
    if integer.is_empty() && fraction.is_empty() {
        return None;
    }
    Some((decimal_value(&integer, fraction), len))
}

/// The exact value of `integer.fraction` (ASCII digits), if it fits.
fn decimal_value(integer: &str, fraction: &str) -> Option<Rational> {
    // Trailing zeros after the point change nothing and would only shrink the range that fits.
    let fraction = fraction.trim_end_matches('0');
    let mut num: i128 = 0;
    for b in integer.bytes().chain(fraction.bytes()) {
        num = num.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    let den = 10i128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    Rational::new(num, den)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<String> {
        let found = number_at(s)?;
        assert_eq!(found.end, s.len(), "{s:?} was not read whole");
        found.value.map(|v| v.to_string())
    }

    #[test]
    fn rationals_are_reduced_with_positive_denominators() {
        assert_eq!(Rational::new(2, 4), Rational::new(1, 2));
        assert_eq!(Rational::new(3, -6), Rational::new(-1, 2));
        assert_eq!(Rational::new(0, -7), Some(Rational { num: 0, den: 1 }));
        assert_eq!(Rational::new(1, 0), None);
        // -i128::MIN does not fit.
        assert_eq!(Rational::new(1, i128::MIN), None);
        // Their gcd 2^127 does not fit in i128 either: no value, but no panic.
        assert_eq!(Rational::new(i128::MIN, i128::MIN), None);
        assert_eq!(
            Rational::new(i128::MIN, 2),
            Some(Rational {
                num: i128::MIN / 2,
                den: 1
            })
        );
    }

    #[test]
    fn canonical_keys() {
        let show = |n, d| Rational::new(n, d).unwrap().to_string();
        assert_eq!(show(18, 1), "18");
        assert_eq!(show(37, 2), "18.5");
        assert_eq!(show(-3, 4), "-0.75");
        assert_eq!(show(1, 3), "1/3");
        assert_eq!(show(-2, 6), "-1/3");
        assert_eq!(show(1, 1024), "0.0009765625");
        assert_eq!(show(0, 5), "0");
        // 2^126 as denominator: the long division overflows u128, so the key is p/q (still unique).
        let big = 1i128 << 126;
        assert_eq!(show(1, big), format!("1/{big}"));
    }

    #[test]
    fn division_cancels_before_multiplying() {
        let a = Rational::new(i128::MAX, 3).unwrap();
        let b = Rational::new(i128::MAX, 5).unwrap();
        assert_eq!(a.checked_div(b), Rational::new(5, 3));
        assert_eq!(a.checked_div(Rational { num: 0, den: 1 }), None);
    }

    #[test]
    fn numbers_read_whole() {
        assert_eq!(key("18").as_deref(), Some("18"));
        assert_eq!(key("18.0").as_deref(), Some("18"));
        assert_eq!(key("18.500").as_deref(), Some("18.5"));
        assert_eq!(key("$18.00").as_deref(), Some("18"));
        assert_eq!(key("$ 18").as_deref(), Some("18"));
        assert_eq!(key("1,234,567").as_deref(), Some("1234567"));
        assert_eq!(key("-5").as_deref(), Some("-5"));
        assert_eq!(key("\u{2212}5").as_deref(), Some("-5"));
        assert_eq!(key("+5").as_deref(), Some("5"));
        assert_eq!(key("-$5").as_deref(), Some("-5"));
        assert_eq!(key("$-5").as_deref(), Some("-5"));
        assert_eq!(key("\\$7").as_deref(), Some("7"));
        assert_eq!(key("€3.50").as_deref(), Some("3.5"));
        assert_eq!(key(".5").as_deref(), Some("0.5"));
        assert_eq!(key("3/4").as_deref(), Some("0.75"));
        assert_eq!(key("2/4").as_deref(), Some("0.5"));
        assert_eq!(key("-1/3").as_deref(), Some("-1/3"));
        assert_eq!(key("1.5/0.5").as_deref(), Some("3"));
        assert_eq!(key("\\frac{3}{4}").as_deref(), Some("0.75"));
        assert_eq!(key("-\\dfrac{ 2 }{ 6 }").as_deref(), Some("-1/3"));
        assert_eq!(key("-0").as_deref(), Some("0"));
    }

    #[test]
    fn where_numbers_end() {
        let end = |s: &str| number_at(s).map(|f| f.end);
        assert_eq!(end("18. Next"), Some(2));
        assert_eq!(end("18 apples"), Some(2));
        assert_eq!(end("50%"), Some(2));
        assert_eq!(end("5/0"), Some(1));
        assert_eq!(end("12,34"), Some(2));
        assert_eq!(end("1234,567"), Some(4));
        assert_eq!(end("1,2345"), Some(1));
        assert_eq!(end("- 5"), None);
        assert_eq!(end("$"), None);
        assert_eq!(end("."), None);
        assert_eq!(end("\\frac{3}{0}"), None);
        assert_eq!(end("\\frac{3}"), None);
    }

    #[test]
    fn too_large_numbers_have_no_value() {
        let huge = "9".repeat(40);
        assert_eq!(
            number_at(&huge),
            Some(Found {
                value: None,
                end: 40
            })
        );
        let tiny = format!("0.{}1", "0".repeat(40));
        assert_eq!(number_at(&tiny).unwrap().value, None);
        // 39 digits still fit (i128::MAX is about 1.7e38).
        let fits = "1".repeat(38);
        assert_eq!(key(&fits), Some(fits.clone()));
        // Trailing zeros after the point do not count against the range.
        let padded = format!("7.{}", "0".repeat(100));
        assert_eq!(key(&padded).as_deref(), Some("7"));
        let min = format!("-{}", i128::MAX);
        assert_eq!(key(&min), Some(min.clone()));
    }

    #[test]
    fn last_number_skips_numbers_inside_words() {
        let last = |s: &str| last_number(s).and_then(|f| f.value).map(|v| v.to_string());
        assert_eq!(last("3 + 4 = 7 pens").as_deref(), Some("7"));
        assert_eq!(last("5 then abc123").as_deref(), Some("5"));
        assert_eq!(last("H2O and 4").as_deref(), Some("4"));
        assert_eq!(last("walk 5km").as_deref(), Some("5"));
        assert_eq!(last("3-5").as_deref(), Some("5"));
        assert_eq!(last("x = -5").as_deref(), Some("-5"));
        assert_eq!(last("1,2,3").as_deref(), Some("3"));
        assert_eq!(last("no digits"), None);
        assert_eq!(last(""), None);
    }
}
