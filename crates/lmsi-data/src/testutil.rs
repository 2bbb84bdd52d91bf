//! Helpers shared by the unit tests: reading the arithmetic back out of a reasoning text.

/// One `a op b = c` found in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Equation {
    pub lhs: i64,
    pub op: char,
    pub rhs: i64,
    pub result: i64,
}

impl Equation {
    /// Whether the arithmetic is right (division must be exact).
    pub(crate) fn holds(&self) -> bool {
        let value = match self.op {
            '+' => self.lhs.checked_add(self.rhs),
            '-' => self.lhs.checked_sub(self.rhs),
            '*' => self.lhs.checked_mul(self.rhs),
            '/' if self.rhs != 0 && self.lhs % self.rhs == 0 => Some(self.lhs / self.rhs),
            _ => None,
        };
        value == Some(self.result)
    }
}

/// Every `a op b = c` (integers, `op` one of `+ - * /`, separated by spaces) in `text`, in order.
pub(crate) fn equations(text: &str) -> Vec<Equation> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    tokens
        .windows(5)
        .filter_map(|w| {
            let op = match w[1] {
                "+" | "-" | "*" | "/" => w[1].chars().next()?,
                _ => return None,
            };
            if w[3] != "=" {
                return None;
            }
            Some(Equation {
                lhs: w[0].parse().ok()?,
                op,
                rhs: w[2].parse().ok()?,
                result: w[4].trim_end_matches(['.', ',']).parse().ok()?,
            })
        })
        .collect()
}

/// Every run of digits in `text`, as a number.
pub(crate) fn numbers(text: &str) -> Vec<i64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|run| !run.is_empty())
        .map(|run| run.parse().expect("a run of digits is a number"))
        .collect()
}

#[test]
fn equations_are_found_and_checked() {
    let found = equations("so 12 + 7 = 19 shells, and 3 * 4 = 13. Then 8 / 3 = 2 and x - 1 = 0.");
    let held: Vec<bool> = found.iter().map(Equation::holds).collect();
    assert_eq!(found.len(), 3);
    assert_eq!(held, [true, false, false]);
    assert_eq!(numbers("a12b 3, 45."), [12, 3, 45]);
}
