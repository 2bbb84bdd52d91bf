//! Writes a task of synthetic word problems for a model other than the seed model: few-shot
//! exemplars, an unlabelled pool and a labelled test set, all from one generator run, so no
//! question appears in two of them (`cargo xtask experiment smollm2` runs this). The exemplars
//! cover the four operations before any repeats one: a pretrained model leans on the operations
//! its exemplars show (SmolLM2-135M-Instruct answers 61% of 100 one-step problems greedily with one
//! exemplar per operation, 55% with two multiplications and two subtractions).
//!
//! ```text
//! cargo run --release -p lmsi --example synthetic_task -- --out task --max-steps 1 --max-value 20
//! ```
//!
//! writes `task/exemplars.jsonl`, `task/pool.jsonl` (answers included, which `lmsi run` never
//! reads from the pool) and `task/test.jsonl`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use lmsi_data::{SyntheticProblem, TaskConfig, generate, write_jsonl_atomic};

#[derive(Parser)]
struct Args {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Few-shot exemplars.
    #[arg(long, default_value_t = 4)]
    exemplars: usize,
    /// Unlabelled pool questions.
    #[arg(long, default_value_t = 300)]
    pool: usize,
    /// Labelled test questions.
    #[arg(long, default_value_t = 200)]
    test: usize,
    #[arg(long, default_value_t = 1)]
    min_steps: usize,
    #[arg(long, default_value_t = 2)]
    max_steps: usize,
    /// Bound on every number in a problem.
    #[arg(long, default_value_t = 20)]
    max_value: i64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let task = TaskConfig {
        min_steps: args.min_steps,
        max_steps: args.max_steps,
        max_value: args.max_value,
        seed: args.seed,
    };
    let problems = generate(&task, args.exemplars + args.pool + args.test)?;
    let (exemplars, rest) = split_exemplars(problems, args.exemplars);
    let (pool, test) = rest.split_at(args.pool);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_jsonl_atomic(
        &args.out.join("exemplars.jsonl"),
        exemplars.iter().map(|p| p.to_exemplar()),
    )?;
    let questions = |set: &[SyntheticProblem], prefix: &str| {
        set.iter()
            .enumerate()
            .map(|(i, p)| p.to_question(format!("{prefix}-{i}")))
            .collect::<Vec<_>>()
    };
    write_jsonl_atomic(&args.out.join("pool.jsonl"), questions(pool, "pool"))?;
    write_jsonl_atomic(&args.out.join("test.jsonl"), questions(test, "test"))?;
    Ok(())
}

/// Splits `n` exemplars from `problems`: first, in order, each problem that shows an operation no
/// exemplar taken so far shows; then, if more are wanted, the first problems left. The rest keep
/// their order.
fn split_exemplars(
    problems: Vec<SyntheticProblem>,
    n: usize,
) -> (Vec<SyntheticProblem>, Vec<SyntheticProblem>) {
    let mut shown = Vec::new();
    let mut picked = Vec::new();
    for (i, p) in problems.iter().enumerate() {
        let new: Vec<_> = [" + ", " - ", " * ", " / "]
            .into_iter()
            .filter(|op| p.reasoning.contains(op) && !shown.contains(op))
            .collect();
        if !new.is_empty() && picked.len() < n {
            shown.extend(new);
            picked.push(i);
        }
    }
    let others: Vec<usize> = (0..problems.len())
        .filter(|i| !picked.contains(i))
        .collect();
    picked.extend(others.into_iter().take(n - picked.len()));
    let (exemplars, rest): (Vec<_>, Vec<_>) = problems
        .into_iter()
        .enumerate()
        .partition(|(i, _)| picked.contains(i));
    let strip = |v: Vec<(usize, SyntheticProblem)>| v.into_iter().map(|(_, p)| p).collect();
    (strip(exemplars), strip(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(n: usize) -> Vec<SyntheticProblem> {
        let task = TaskConfig {
            min_steps: 1,
            max_steps: 1,
            max_value: 20,
            seed: 0,
        };
        generate(&task, n).unwrap()
    }

    #[test]
    fn exemplars_show_every_operation_and_the_rest_keep_their_order() {
        let all = problems(40);
        let (exemplars, rest) = split_exemplars(all.clone(), 4);
        for op in [" + ", " - ", " * ", " / "] {
            assert!(exemplars.iter().any(|p| p.reasoning.contains(op)), "{op}");
        }
        assert_eq!(rest.len(), 36);
        let kept: Vec<_> = all.into_iter().filter(|p| !exemplars.contains(p)).collect();
        assert_eq!(rest, kept);
    }

    #[test]
    fn more_exemplars_than_operations_take_the_first_problems_left() {
        let all = problems(40);
        let (four, _) = split_exemplars(all.clone(), 4);
        let (six, rest) = split_exemplars(all.clone(), 6);
        assert!(four.iter().all(|p| six.contains(p)));
        let first_two: Vec<_> = all.iter().filter(|p| !four.contains(p)).take(2).collect();
        assert!(first_two.iter().all(|p| six.contains(p)));
        assert_eq!(rest.len(), 34);
    }
}
