//! Builds the embedded seed model (`cargo xtask seed-model` runs this): trains it from its recipe and
//! writes it, as a Hugging Face model directory, to `--out`. The recipe's knobs can be overridden to
//! explore other seed models; the committed model uses the defaults.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use lmsi::seed::{SeedRecipe, build_seed_model};

#[derive(Parser)]
struct Args {
    /// Output model directory.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    problems: Option<usize>,
    #[arg(long)]
    epochs: Option<f64>,
    #[arg(long)]
    hidden: Option<usize>,
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long)]
    intermediate: Option<usize>,
    #[arg(long)]
    lr: Option<f32>,
    #[arg(long)]
    max_value: Option<i64>,
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long)]
    vocab: Option<usize>,
    /// Write each equation by varied routes.
    #[arg(long)]
    varied_reasoning: bool,
    /// Share of training problems worked column by column.
    #[arg(long)]
    column_share: Option<f64>,
    /// Share of training documents in the paper's other three prompt formats.
    #[arg(long)]
    other_formats: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    drill_documents: Option<usize>,
    /// Stop training after this step (with a checkpoint); continue with --resume.
    #[arg(long)]
    stop_after: Option<u64>,
    #[arg(long)]
    resume: bool,
    /// Only evaluate an existing model in --out: greedy and self-consistency on this many new problems.
    #[arg(long)]
    eval: Option<usize>,
}

fn main() -> Result<()> {
    lmsi::allocator::keep_freed_memory();
    let args = Args::parse();
    let mut recipe = SeedRecipe::default();
    if let Some(v) = args.problems {
        recipe.train_problems = v;
    }
    if let Some(v) = args.epochs {
        recipe.train.epochs = v;
    }
    if let Some(v) = args.hidden {
        recipe.hidden_size = v;
    }
    if let Some(v) = args.layers {
        recipe.layers = v;
    }
    if let Some(v) = args.intermediate {
        recipe.intermediate_size = v;
    }
    if let Some(v) = args.lr {
        recipe.train.lr = v;
    }
    if let Some(v) = args.max_value {
        recipe.task.max_value = v;
    }
    if let Some(v) = args.max_steps {
        recipe.task.max_steps = v;
    }
    if let Some(v) = args.column_share {
        recipe.column_share = v;
    }
    if let Some(v) = args.drill_documents {
        recipe.drill_documents = v;
    }
    if let Some(v) = args.seed {
        recipe.task.seed = v;
    }
    if let Some(v) = args.other_formats {
        recipe.other_formats_share = v;
    }
    if args.varied_reasoning {
        recipe.varied_reasoning = true;
    }
    recipe.train.stop_after = args.stop_after;
    recipe.train.resume = args.resume;
    if let Some(v) = args.vocab {
        recipe.vocab_size = v;
    }
    if let Some(n) = args.eval {
        return evaluate_seed(&recipe, &args.out, n);
    }
    let started = std::time::Instant::now();
    let report = build_seed_model(&recipe, &args.out, &mut |log, total| {
        if log.step % 25 == 0 || log.step == total {
            eprintln!(
                "step {}/{total}: loss {:.4}{} ({:.0} tokens/s)",
                log.step,
                log.loss,
                log.eval_loss
                    .map(|l| format!(", held-out {l:.4}"))
                    .unwrap_or_default(),
                log.tokens as f64 / log.seconds
            );
        }
    })?;
    println!(
        "seed model: {} examples, loss {:.4} -> {:.4}, held-out {:?}, {:.0} s -> {}",
        report.train_examples,
        report.first_loss,
        report.last_loss,
        report.eval_loss,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

fn evaluate_seed(recipe: &SeedRecipe, dir: &std::path::Path, n: usize) -> Result<()> {
    use lmsi::eval::{EvalMode, evaluate};
    use lmsi::generate::GenerateOptions;
    let questions =
        lmsi::seed::held_out_questions(recipe, lmsi::embedded::TEST_SEED, n, "test", &[])?;
    let model = lmsi_transformer::Model::load(dir, lmsi_transformer::CpuBackend::new())?;
    let tokenizer = lmsi_transformer::Tokenizer::load(dir, model.config())?;
    let options = GenerateOptions {
        exemplars: recipe.exemplar_set()?,
        paths: 16,
        max_new_tokens: 256,
        max_batch: 64,
        ..GenerateOptions::default()
    };
    for mode in [EvalMode::Greedy, EvalMode::Sc] {
        let started = std::time::Instant::now();
        let report = evaluate(&model, &tokenizer, &questions, mode, &options, &mut |_| {})?;
        println!(
            "{} ({:.1} s)",
            report.summary(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
