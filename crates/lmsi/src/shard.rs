//! Sharded runs: `--shard I/N` gives `generate` and `eval` one part of their questions, and
//! `lmsi merge` joins the parts' outputs into exactly what the unsharded command writes.
//!
//! - A question belongs to shard `1 + h mod N`, where `h` is the first eight bytes (big-endian) of
//!   the SHA-256 of its id: the split depends on the ids alone, not on the order of the file or the
//!   machine, so every job of an array computes the same split.
//! - A path's tokens do not depend on which other questions are generated beside it (the sampler's
//!   RNG is keyed by question id and path index), so a shard's paths are the unsharded command's
//!   paths of its questions, and the merged file is the unsharded file byte for byte. A merged eval
//!   report is the unsharded one but for `seconds`, which is the sum of the shards' times.
//! - Each shard's output `OUT` has a manifest beside it, `OUT.shard.json` ([`ShardManifest`]): the
//!   shard, a fingerprint of the command, its options and the content of its inputs, where its
//!   questions stand in the input, and what the merge needs (each question's line count; for eval,
//!   each path's answer).
//! - `lmsi merge` refuses shards of different commands, options or inputs, a missing or repeated
//!   shard, and an output that disagrees with its manifest.
//! - `--shard auto` reads the shard from the scheduler: a Slurm job array
//!   (`SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_COUNT`; an array without
//!   steps, such as `--array=1-8` or `0-7`) or a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`,
//!   with the job's `completions` given as `LMSI_SHARD_COUNT`, which Kubernetes does not set).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use lmsi_data::Question;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::eval::{EvalItem, EvalReport};
use crate::metrics::Samples;

/// One shard of N, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// `--shard`: a given shard, or the scheduler's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardArg {
    Given(Shard),
    Auto,
}

impl FromStr for ShardArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(ShardArg::Auto);
        }
        let expected = || format!("expected I/N with 1 <= I <= N (such as 2/8) or auto, got {s:?}");
        let (index, count) = s.split_once('/').ok_or_else(expected)?;
        let (index, count) = (
            index.parse().map_err(|_| expected())?,
            count.parse().map_err(|_| expected())?,
        );
        Shard::new(index, count)
            .map(ShardArg::Given)
            .ok_or_else(expected)
    }
}

impl ShardArg {
    /// The shard: the given one, or the one the scheduler's variables (read by `var`) name.
    pub fn resolve(self, var: &dyn Fn(&str) -> Option<String>) -> Result<Shard, Error> {
        match self {
            ShardArg::Given(shard) => Ok(shard),
            ShardArg::Auto => from_scheduler(var),
        }
    }
}

/// The shard of a Slurm array task or a Kubernetes Indexed Job.
fn from_scheduler(var: &dyn Fn(&str) -> Option<String>) -> Result<Shard, Error> {
    let number = |name: &str| -> Result<Option<usize>, Error> {
        var(name)
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    Error::Input(format!("--shard auto: {name} is {v:?}, not a number"))
                })
            })
            .transpose()
    };
    if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let count = number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
            Error::Input(
                "--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not".into(),
            )
        })?;
        return id
            .checked_sub(min)
            .and_then(|i| Shard::new(i + 1, count))
            .ok_or_else(|| {
                Error::Input(format!(
                    "--shard auto: Slurm task {id} of an array from {min} with {count} tasks is not \
                     one of {count} consecutive tasks (an array with steps? give --shard I/N)"
                ))
            });
    }
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count = number("LMSI_SHARD_COUNT")?.ok_or_else(|| {
            Error::Input(
                "--shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but \
                 LMSI_SHARD_COUNT, the job's completions, is not"
                    .into(),
            )
        })?;
        return Shard::new(index + 1, count).ok_or_else(|| {
            Error::Input(format!(
                "--shard auto: JOB_COMPLETION_INDEX {index} is not below LMSI_SHARD_COUNT {count}"
            ))
        });
    }
    Err(Error::Input(
        "--shard auto: neither a Slurm array task (SLURM_ARRAY_TASK_ID) nor a Kubernetes Indexed \
         Job (JOB_COMPLETION_INDEX) is set"
            .into(),
    ))
}

impl Shard {
    /// Shard `index` of `count`, when `1 <= index <= count`.
    pub fn new(index: usize, count: usize) -> Option<Self> {
        (index >= 1 && index <= count).then_some(Self { index, count })
    }

    /// Whether question id `id` belongs to this shard.
    pub fn holds(&self, id: &str) -> bool {
        let digest = Sha256::digest(id.as_bytes());
        let h = u64::from_be_bytes(digest[..8].try_into().expect("eight bytes"));
        (h % self.count as u64) as usize + 1 == self.index
    }

    /// This shard's questions, in input order, and their positions in `questions`.
    pub fn select(&self, questions: Vec<Question>) -> (Vec<Question>, Vec<usize>) {
        questions
            .into_iter()
            .enumerate()
            .filter(|(_, q)| self.holds(&q.id))
            .map(|(i, q)| (q, i))
            .unzip()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The manifest of a shard's output (`OUT.shard.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    /// `generate` or `eval`.
    pub command: String,
    pub shard: usize,
    pub shards: usize,
    /// SHA-256 of the command, its options and its inputs' contents: equal for shards that belong
    /// together ([`fingerprint`]).
    pub fingerprint: String,
    /// Questions in the whole input.
    pub questions: usize,
    /// Positions in the input of this shard's questions, in order.
    pub positions: Vec<usize>,
    /// `generate`: the output's lines (paths) of each of the shard's questions.
    #[serde(default)]
    pub lines: Vec<usize>,
    /// `eval`: each question's path answers and their correctness, for the merged report's
    /// maj@k, pass@k and calibration.
    #[serde(default)]
    pub samples: Vec<Samples>,
}

/// Where the manifest of shard output `out` is written.
pub fn manifest_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".shard.json");
    PathBuf::from(name)
}

/// The fingerprint of a sharded command: SHA-256 over the command's name, its options (as they
/// serialise) and the content hashes of its inputs.
pub fn fingerprint(
    command: &str,
    options: &impl Serialize,
    inputs: &[(&str, &Path)],
) -> Result<String, Error> {
    let mut hashes = serde_json::Map::new();
    for (name, path) in inputs {
        hashes.insert(
            name.to_string(),
            crate::fingerprint::hash_input(path)?.into(),
        );
    }
    let record = serde_json::json!({
        "command": command,
        "options": serde_json::to_value(options).expect("options serialise"),
        "inputs": hashes,
    });
    let digest = Sha256::digest(record.to_string().as_bytes());
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// A shard's output and its manifest, read and checked against each other's sizes.
pub struct ShardOutput {
    pub path: PathBuf,
    pub manifest: ShardManifest,
}

/// Reads the shards of one command, each with its manifest, and checks that they belong together:
/// one command, fingerprint and input size, every shard of `1..=N` exactly once, and positions that
/// cover the input once. Returns them in shard order.
pub fn read_shards(paths: &[PathBuf]) -> Result<Vec<ShardOutput>, Error> {
    let mut shards = Vec::with_capacity(paths.len());
    for path in paths {
        let manifest: ShardManifest =
            crate::read_json(&manifest_path(path)).map_err(|e| match e {
                Error::Io { path: m, source } if source.kind() == std::io::ErrorKind::NotFound => {
                    Error::Input(format!(
                        "{}: no shard manifest {} beside it (was it written with --shard?)",
                        path.display(),
                        m.display()
                    ))
                }
                other => other,
            })?;
        shards.push(ShardOutput {
            path: path.clone(),
            manifest,
        });
    }
    let Some(first) = shards.first() else {
        return Err(Error::Input("no shards to merge".into()));
    };
    let (command, fingerprint, count, questions) = (
        first.manifest.command.clone(),
        first.manifest.fingerprint.clone(),
        first.manifest.shards,
        first.manifest.questions,
    );
    for s in &shards {
        let m = &s.manifest;
        if m.command != command
            || m.fingerprint != fingerprint
            || m.shards != count
            || m.questions != questions
        {
            return Err(Error::Input(format!(
                "{} (shard {}/{} of {}) does not belong with {} (shard {}/{count} of {command}): \
                 a different command, options, model or input",
                s.path.display(),
                m.shard,
                m.shards,
                m.command,
                first.path.display(),
                first.manifest.shard,
            )));
        }
    }
    shards.sort_by_key(|s| s.manifest.shard);
    for pair in shards.windows(2) {
        if pair[0].manifest.shard == pair[1].manifest.shard {
            return Err(Error::Input(format!(
                "shard {}/{count} is given twice: {} and {}",
                pair[0].manifest.shard,
                pair[0].path.display(),
                pair[1].path.display()
            )));
        }
    }
    let missing: Vec<String> = (1..=count)
        .filter(|i| !shards.iter().any(|s| s.manifest.shard == *i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Input(format!(
            "missing shard(s) {}",
            missing.join(", ")
        )));
    }
    let mut seen = vec![false; questions];
    for s in &shards {
        for &p in &s.manifest.positions {
            if p >= questions || std::mem::replace(&mut seen[p], true) {
                return Err(manifest_error(
                    s,
                    format!("question position {p} is out of range or in two shards"),
                ));
            }
        }
    }
    if seen.iter().any(|s| !s) {
        return Err(Error::Input(format!(
            "the shards do not cover all {questions} questions"
        )));
    }
    Ok(shards)
}

fn manifest_error(shard: &ShardOutput, message: String) -> Error {
    Error::Format {
        path: manifest_path(&shard.path),
        line: None,
        message,
    }
}

/// The merged paths file of `generate` shards: each question's lines, in input order.
pub fn merge_paths(shards: &[ShardOutput]) -> Result<String, Error> {
    let mut blocks: Vec<(usize, String)> = Vec::new();
    for s in shards {
        let m = &s.manifest;
        if m.lines.len() != m.positions.len() {
            return Err(manifest_error(
                s,
                "needs one line count per question".into(),
            ));
        }
        let text = std::fs::read_to_string(&s.path).map_err(|e| Error::io(&s.path, e))?;
        let mut lines = text.split_inclusive('\n');
        for (&position, &count) in m.positions.iter().zip(&m.lines) {
            let block: Vec<&str> = lines.by_ref().take(count).collect();
            if block.len() != count {
                return Err(Error::Input(format!(
                    "{} has fewer lines than its manifest says ({})",
                    s.path.display(),
                    m.lines.iter().sum::<usize>()
                )));
            }
            blocks.push((position, block.concat()));
        }
        if lines.next().is_some() {
            return Err(Error::Input(format!(
                "{} has more lines than its manifest says ({})",
                s.path.display(),
                m.lines.iter().sum::<usize>()
            )));
        }
    }
    blocks.sort_by_key(|(position, _)| *position);
    Ok(blocks.into_iter().map(|(_, block)| block).collect())
}

/// The merged report of `eval` shards: the shards' items and samples in input order, summarised
/// as one evaluation; `seconds` is the sum of the shards'.
pub fn merge_reports(shards: &[ShardOutput]) -> Result<EvalReport, Error> {
    let mut items: Vec<(usize, EvalItem, Samples)> = Vec::new();
    let mut seconds = 0.0;
    let mut first: Option<EvalReport> = None;
    for s in shards {
        let report: EvalReport = crate::read_json(&s.path)?;
        let m = &s.manifest;
        if report.items.len() != m.positions.len() || m.samples.len() != m.positions.len() {
            return Err(Error::Input(format!(
                "{} has {} questions, its manifest {}",
                s.path.display(),
                report.items.len(),
                m.positions.len()
            )));
        }
        seconds += report.seconds;
        for ((item, samples), &position) in report.items.iter().zip(&m.samples).zip(&m.positions) {
            items.push((position, item.clone(), samples.clone()));
        }
        first.get_or_insert(report);
    }
    let first = first.expect("read_shards returns at least one shard");
    items.sort_by_key(|(position, ..)| *position);
    let (items, samples): (Vec<EvalItem>, Vec<Samples>) = items
        .into_iter()
        .map(|(_, item, samples)| (item, samples))
        .unzip();
    Ok(EvalReport::from_items(
        first.mode,
        first.paths,
        first.temperature,
        seconds,
        items,
        &samples,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn shards_parse_and_bad_ones_are_refused() {
        assert_eq!(
            "2/3".parse(),
            Ok(ShardArg::Given(Shard { index: 2, count: 3 }))
        );
        assert_eq!("auto".parse(), Ok(ShardArg::Auto));
        for bad in ["0/3", "4/3", "1/0", "3", "a/b", "-1/2", ""] {
            assert!(bad.parse::<ShardArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_reads_slurm_and_kubernetes() {
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(
            ShardArg::Auto.resolve(&slurm).unwrap(),
            Shard { index: 1, count: 4 }
        );
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(
            ShardArg::Auto.resolve(&slurm).unwrap(),
            Shard { index: 3, count: 3 }
        );
        // `--array=1-9:4` (tasks 1, 5, 9): not consecutive.
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert!(ShardArg::Auto.resolve(&stepped).is_err());
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2"), ("LMSI_SHARD_COUNT", "5")]);
        assert_eq!(
            ShardArg::Auto.resolve(&k8s).unwrap(),
            Shard { index: 3, count: 5 }
        );
        let error = ShardArg::Auto.resolve(&env(&[("JOB_COMPLETION_INDEX", "2")]));
        assert!(error.unwrap_err().to_string().contains("LMSI_SHARD_COUNT"));
        assert!(ShardArg::Auto.resolve(&env(&[])).is_err());
    }

    #[test]
    fn every_id_is_in_exactly_one_shard() {
        let ids: Vec<String> = (0..300).map(|i| format!("q{i}")).collect();
        let shards: Vec<Shard> = (1..=3).map(|i| Shard::new(i, 3).unwrap()).collect();
        let mut sizes = [0; 3];
        for id in &ids {
            let owners: Vec<usize> = shards
                .iter()
                .filter(|s| s.holds(id))
                .map(|s| s.index)
                .collect();
            assert_eq!(owners.len(), 1, "{id}");
            sizes[owners[0] - 1] += 1;
        }
        assert!(sizes.iter().all(|&n| n > 70), "an uneven split: {sizes:?}");
    }
}
