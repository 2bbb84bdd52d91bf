//! Filling in the placeholders of a template.

use super::templates::{PRONOUNS, Person};

/// Everything a template can refer to.
pub(crate) struct Scene<'a> {
    pub person: &'a Person,
    pub friend: &'a Person,
    /// (singular, plural)
    pub object: (&'static str, &'static str),
    pub numbers: Numbers,
}

/// The numbers of one step (unused ones are 0).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Numbers {
    pub x: i64,
    pub k: i64,
    pub c: i64,
    pub n: i64,
    pub m: i64,
    pub t: i64,
}

impl Numbers {
    fn get(&self, name: &str) -> i64 {
        match name {
            "x" => self.x,
            "k" => self.k,
            "c" => self.c,
            "n" => self.n,
            "m" => self.m,
            "t" => self.t,
            _ => panic!("unknown number {{{name}}} in a synthetic template"),
        }
    }
}

/// Replaces every `{placeholder}` of `template` (the list is in the `templates` module docs).
///
/// Panics on an unknown placeholder: templates are constants, and a test renders every one.
pub(crate) fn render(template: &str, scene: &Scene) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').expect("a placeholder is closed");
        let key = &rest[open + 1..close];
        match key.split_once(':') {
            Some((number, noun)) => out.push_str(noun_for(scene, scene.numbers.get(number), noun)),
            None => push_word(&mut out, scene, key),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

fn push_word(out: &mut String, scene: &Scene, key: &str) {
    let pronouns = &PRONOUNS[usize::from(!scene.person.she)];
    let word = match key {
        "name" => scene.person.name,
        "friend" => scene.friend.name,
        "He" => pronouns[0],
        "he" => pronouns[1],
        "him" => pronouns[2],
        "his" => pronouns[3],
        "His" => pronouns[4],
        "obj" => scene.object.0,
        "objs" => scene.object.1,
        number => {
            out.push_str(&scene.numbers.get(number).to_string());
            return;
        }
    };
    out.push_str(word);
}

/// The form of `noun` (`obj`, or `singular|plural`) that agrees with `count`.
fn noun_for<'a>(scene: &Scene, count: i64, noun: &'a str) -> &'a str {
    let (singular, plural) = match noun {
        "obj" => scene.object,
        forms => forms
            .split_once('|')
            .expect("a noun placeholder is `obj` or `singular|plural`"),
    };
    if count == 1 { singular } else { plural }
}

/// The words a template can produce besides the placeholders' values: its literal text and the
/// noun forms written inside `{v:singular|plural}` placeholders.
pub(crate) fn literal_words(template: &'static str) -> Vec<&'static str> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        pieces.push(&rest[..open]);
        let close = open + rest[open..].find('}').expect("a placeholder is closed");
        if let Some((_, forms)) = rest[open + 1..close].split_once(':') {
            pieces.extend(forms.split('|').filter(|form| *form != "obj"));
        }
        rest = &rest[close + 1..];
    }
    pieces.push(rest);
    pieces.into_iter().flat_map(crate::text::words).collect()
}
