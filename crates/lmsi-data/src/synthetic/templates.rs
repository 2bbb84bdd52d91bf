//! The sentence templates, names and objects of the synthetic word problems.
//!
//! Placeholders (see [`render`](super::render::render)):
//! `{name}` the person, `{friend}` another person, `{He} {he} {him} {his} {His}` the person's
//! pronouns, `{objs}` / `{obj}` the object's plural / singular, numbers `{x}` (the count before
//! the step), `{k}` (the operand), `{c}` (the count after), `{n}` `{m}` `{t}` (a compound step's
//! `n * m = t`), and `{v:obj}` or `{v:bag|bags}`: the noun form that agrees with number `v`.

/// The four operations; the reasoning writes them as `+ - * /`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    pub(crate) const ALL: [Op; 4] = [Op::Add, Op::Sub, Op::Mul, Op::Div];
}

/// How a step's operand is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operand {
    /// Any operand that keeps the numbers in range.
    Free,
    /// Always this operand (doubling is `* 2`).
    Fixed(i64),
    /// Two equations: `n * m = t`, then `x op t = c` (buying packs of `m`).
    Groups,
}

/// One step: a question sentence and the matching reasoning sentence(s).
pub(crate) struct Step {
    pub op: Op,
    pub operand: Operand,
    pub question: &'static str,
    pub reasoning: &'static str,
    /// For steps that change what is counted: the closing question, so the step must be last.
    pub ending: Option<&'static str>,
}

impl Step {
    /// Number of equations the step adds to the reasoning.
    pub(crate) fn cost(&self) -> usize {
        match self.operand {
            Operand::Groups => 2,
            Operand::Free | Operand::Fixed(_) => 1,
        }
    }
}

const fn step(op: Op, operand: Operand, question: &'static str, reasoning: &'static str) -> Step {
    Step {
        op,
        operand,
        question,
        reasoning,
        ending: None,
    }
}

const fn last_step(
    op: Op,
    question: &'static str,
    reasoning: &'static str,
    ending: &'static str,
) -> Step {
    Step {
        op,
        operand: Operand::Free,
        question,
        reasoning,
        ending: Some(ending),
    }
}

pub(crate) const STEPS: &[Step] = {
    use Op::{Add, Div, Mul, Sub};
    use Operand::{Fixed, Free, Groups};
    &[
        step(
            Add,
            Free,
            "{He} buys {k} more {k:obj}.",
            "{He} buys {k} more, so {he} has {x} + {k} = {c} {c:obj}.",
        ),
        step(
            Add,
            Free,
            "{He} finds {k} more {k:obj}.",
            "{He} finds {k} more, so {he} has {x} + {k} = {c} {c:obj}.",
        ),
        step(
            Add,
            Free,
            "{He} gets {k} {k:obj} from {friend}.",
            "{He} gets {k} from {friend}, so {he} has {x} + {k} = {c} {c:obj}.",
        ),
        step(
            Add,
            Free,
            "{He} earns {k} more {k:obj}.",
            "{He} earns {k} more, so {he} has {x} + {k} = {c} {c:obj}.",
        ),
        step(
            Add,
            Free,
            "{He} collects {k} more {k:obj}.",
            "{He} collects {k} more, so {he} has {x} + {k} = {c} {c:obj}.",
        ),
        step(
            Add,
            Free,
            "{He} wins {k} {k:obj} in a game.",
            "{He} wins {k}, so {he} has {x} + {k} = {c} {c:obj}.",
        ),
        step(
            Add,
            Free,
            "{He} is given {k} more {k:obj}.",
            "{He} is given {k} more, so {he} has {x} + {k} = {c} {c:obj}.",
        ),
        step(
            Add,
            Groups,
            "{He} buys {n} packs of {objs} with {m} in each pack.",
            "{He} buys {n} packs of {m}, which is {n} * {m} = {t} {t:obj}. So {he} has {x} + {t} = {c} {c:obj}.",
        ),
        step(
            Sub,
            Free,
            "{He} gives {k} {k:obj} to {friend}.",
            "{He} gives {k} to {friend}, so {he} has {x} - {k} = {c} {c:obj}.",
        ),
        step(
            Sub,
            Free,
            "{He} loses {k} {k:obj}.",
            "{He} loses {k}, so {he} has {x} - {k} = {c} {c:obj}.",
        ),
        step(
            Sub,
            Free,
            "{He} sells {k} {k:obj}.",
            "{He} sells {k}, so {he} has {x} - {k} = {c} {c:obj}.",
        ),
        step(
            Sub,
            Free,
            "{He} gives away {k} {k:obj}.",
            "{He} gives away {k}, so {he} has {x} - {k} = {c} {c:obj}.",
        ),
        step(
            Sub,
            Free,
            "{He} uses {k} {k:obj}.",
            "{He} uses {k}, so {he} has {x} - {k} = {c} {c:obj}.",
        ),
        step(
            Sub,
            Free,
            "{He} trades {k} {k:obj} to {friend}.",
            "{He} trades {k} to {friend}, so {he} has {x} - {k} = {c} {c:obj}.",
        ),
        step(
            Sub,
            Free,
            "{He} donates {k} {k:obj} to the school.",
            "{He} donates {k}, so {he} has {x} - {k} = {c} {c:obj}.",
        ),
        step(
            Sub,
            Groups,
            "{He} gives {n} bags with {m} {objs} in each bag to {friend}.",
            "{He} gives away {n} bags of {m}, which is {n} * {m} = {t} {t:obj}. So {he} has {x} - {t} = {c} {c:obj}.",
        ),
        step(
            Mul,
            Fixed(2),
            "{He} doubles {his} {objs}.",
            "{He} doubles them, so {he} has {x} * 2 = {c} {c:obj}.",
        ),
        step(
            Mul,
            Fixed(3),
            "{He} triples {his} {objs}.",
            "{He} triples them, so {he} has {x} * 3 = {c} {c:obj}.",
        ),
        step(
            Mul,
            Free,
            "{He} then has {k} times as many {objs}.",
            "{He} has {k} times as many, so {he} has {x} * {k} = {c} {c:obj}.",
        ),
        step(
            Mul,
            Free,
            "Each of {his} {objs} is traded for {k} new ones.",
            "Each one becomes {k}, so {he} has {x} * {k} = {c} {c:obj}.",
        ),
        step(
            Mul,
            Free,
            "{His} pile of {objs} becomes {k} times as big.",
            "The pile becomes {k} times as big, so {he} has {x} * {k} = {c} {c:obj}.",
        ),
        step(
            Div,
            Fixed(2),
            "{He} gives away half of {his} {objs}.",
            "{He} gives away half, so {he} has {x} / 2 = {c} {c:obj}.",
        ),
        step(
            Div,
            Fixed(2),
            "{He} loses half of {his} {objs}.",
            "{He} loses half, so {he} has {x} / 2 = {c} {c:obj}.",
        ),
        step(
            Div,
            Fixed(3),
            "{He} keeps one third of {his} {objs} and sells the rest.",
            "{He} keeps one third, so {he} has {x} / 3 = {c} {c:obj}.",
        ),
        step(
            Div,
            Free,
            "{He} splits {his} {objs} into {k} equal groups and keeps one group.",
            "{He} keeps one of {k} equal groups, so {he} has {x} / {k} = {c} {c:obj}.",
        ),
        step(
            Div,
            Free,
            "{He} trades every {k} {objs} for 1 new {obj}.",
            "Every {k} become 1, so {he} has {x} / {k} = {c} {c:obj}.",
        ),
        last_step(
            Div,
            "{He} shares {his} {objs} equally among {k} friends.",
            "{He} shares them among {k} friends, so each friend gets {x} / {k} = {c} {c:obj}.",
            "How many {objs} does each friend get?",
        ),
        last_step(
            Div,
            "{He} puts {his} {objs} into bags of {k}.",
            "{He} puts {k} in each bag, so {he} fills {x} / {k} = {c} {c:bag|bags}.",
            "How many bags does {name} fill?",
        ),
        last_step(
            Div,
            "{He} packs {his} {objs} into {k} boxes with the same number in each box.",
            "{He} packs them into {k} boxes, so each box has {x} / {k} = {c} {c:obj}.",
            "How many {objs} are in each box?",
        ),
    ]
};

/// Opening sentences with a plain count `{x}` (no equation).
pub(crate) const PLAIN_STARTS: &[(&str, &str)] = &[
    ("{name} has {x} {x:obj}.", "{name} starts with {x} {x:obj}."),
    (
        "{name} starts with {x} {x:obj}.",
        "{name} starts with {x} {x:obj}.",
    ),
];

/// Opening sentences that are themselves a step: `{n} * {m} = {c}`.
pub(crate) const GROUP_STARTS: &[(&str, &str)] = &[
    (
        "{name} has {n} boxes of {objs} with {m} in each box.",
        "{name} has {n} boxes of {m}, so {he} has {n} * {m} = {c} {c:obj}.",
    ),
    (
        "{name} has {n} bags with {m} {objs} in each bag.",
        "{name} has {n} bags of {m}, so {he} has {n} * {m} = {c} {c:obj}.",
    ),
];

/// Closing questions after any step.
pub(crate) const ENDINGS: &[&str] = &[
    "How many {objs} does {name} have now?",
    "How many {objs} does {name} have in the end?",
];

/// An extra closing question after a subtraction.
pub(crate) const ENDING_AFTER_SUB: &str = "How many {objs} does {name} have left?";

/// A person: a name and which pronouns go with it.
pub(crate) struct Person {
    pub name: &'static str,
    pub she: bool,
}

const fn she(name: &'static str) -> Person {
    Person { name, she: true }
}

const fn he(name: &'static str) -> Person {
    Person { name, she: false }
}

pub(crate) const PEOPLE: &[Person] = &[
    she("Mia"),
    she("Ava"),
    she("Zoe"),
    she("Lily"),
    she("Emma"),
    she("Nora"),
    she("Ella"),
    she("Ruby"),
    she("Iris"),
    she("Rosa"),
    she("Anna"),
    she("Maya"),
    he("Leo"),
    he("Max"),
    he("Sam"),
    he("Ben"),
    he("Omar"),
    he("Hugo"),
    he("Finn"),
    he("Owen"),
    he("Luis"),
    he("Ravi"),
    he("Tom"),
    he("Noah"),
];

/// `(She, she, her, her, Her)` and `(He, he, him, his, His)`: subject, object and possessive.
pub(crate) const PRONOUNS: [[&str; 5]; 2] = [
    ["She", "she", "her", "her", "Her"],
    ["He", "he", "him", "his", "His"],
];

/// Objects as (singular, plural).
pub(crate) const OBJECTS: &[(&str, &str)] = &[
    ("shell", "shells"),
    ("sticker", "stickers"),
    ("marble", "marbles"),
    ("apple", "apples"),
    ("pencil", "pencils"),
    ("card", "cards"),
    ("coin", "coins"),
    ("book", "books"),
    ("cookie", "cookies"),
    ("stamp", "stamps"),
    ("button", "buttons"),
    ("bead", "beads"),
    ("rock", "rocks"),
    ("toy", "toys"),
    ("cupcake", "cupcakes"),
    ("balloon", "balloons"),
    ("candle", "candles"),
    ("crayon", "crayons"),
    ("orange", "oranges"),
    ("egg", "eggs"),
    ("flower", "flowers"),
    ("block", "blocks"),
    ("ribbon", "ribbons"),
    ("feather", "feathers"),
];
