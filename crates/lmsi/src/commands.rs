//! The commands: each reads its inputs, runs on the backend `--device` names and writes its
//! output atomically.

use std::path::Path;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lmsi::build_data::build_examples;
use lmsi::eval::{EvalMode, evaluate};
use lmsi::generate::{GenerateOptions, PromptKind, generate_paths};
use lmsi::train::TrainOptions;
use lmsi::vote::{VoteOptions, vote_paths};
use lmsi_data::{
    ExemplarSet, Loaded, PathRecord, Question, TrainExample, VoteRecord, parse_formats, read_jsonl,
    read_questions, write_atomic, write_jsonl_atomic,
};
use lmsi_sampler::SamplingParams;
use lmsi_transformer::{Backend, Model, Storage, Tokenizer};
use lmsi_voter::AnswerKind;

use crate::cli::*;
use crate::device::{on_device, set_threads};

/// Reads a JSONL file, reporting skipped lines on stderr.
fn load<T: serde::de::DeserializeOwned>(path: &Path, input: &InputArgs) -> Result<Vec<T>> {
    let Loaded { items, skipped } = read_jsonl(path, input.bad_lines())?;
    report_skipped(path, &skipped);
    Ok(items)
}

fn load_questions(path: &Path, input: &InputArgs) -> Result<Vec<Question>> {
    let Loaded { items, skipped } = read_questions(path, input.bad_lines())?;
    report_skipped(path, &skipped);
    Ok(items)
}

fn report_skipped(path: &std::path::Path, skipped: &[lmsi_data::SkippedLine]) {
    if !skipped.is_empty() {
        eprintln!(
            "skipped {} malformed line(s) of {}:",
            skipped.len(),
            path.display()
        );
        for line in skipped {
            eprintln!("  {}:{}: {}", path.display(), line.line, line.message);
        }
    }
}

fn progress_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {what} ({{per_sec}}, eta {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    on_device!(&args.model.device, backend => generate_on(&args, backend))
}

fn generate_on<B: Backend>(args: &GenerateArgs, backend: B) -> Result<()> {
    let questions = load_questions(&args.questions, &args.input)?;
    let mut options = args.sampling.options(args.paths)?;
    options.early_stop = args.early_stop;
    let (model, tokenizer) = args.model.load(backend, Storage::Inference)?;
    let bar = progress_bar(questions.len() * args.paths, "paths");
    let (paths, stats) = generate_paths(&model, &tokenizer, &questions, &options, &mut |_| {
        bar.inc(1)
    })?;
    bar.finish_and_clear();
    write_jsonl_atomic(&args.out, &paths)?;
    let mut line = format!(
        "{} questions, {} paths; prompt {:.0} tokens/s, sampled {:.1} tokens/s ({} tokens in {:.1} s)",
        questions.len(),
        paths.len(),
        stats.prompt_tokens_per_second(),
        stats.sampled_tokens_per_second(),
        stats.sampled_tokens,
        stats.seconds
    );
    if args.early_stop.is_some() {
        line += &format!(", early stop saved {} paths", stats.paths_saved);
    }
    println!("{line} -> {}", args.out.display());
    Ok(())
}

pub fn run_loop(args: RunArgs) -> Result<()> {
    use lmsi::run::{Event, RunConfig, VoteSettings};
    set_threads(args.device.threads)?;
    let embedded = args.model.is_none();
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let model = match &args.model {
        Some(dir) => dir.clone(),
        None => lmsi::embedded::seed_model(&args.work_dir.join("seed-model"))?,
    };
    let (questions, eval) = match (&args.questions, &args.eval) {
        (Some(q), Some(e)) => (q.clone(), e.clone()),
        (q, e) => {
            let (pool, test) = lmsi::embedded::default_data(&args.work_dir)?;
            (q.clone().unwrap_or(pool), e.clone().unwrap_or(test))
        }
    };
    let defaults = if embedded {
        lmsi::embedded::settings()
    } else {
        lmsi::embedded::Settings::paper()
    };
    let exemplars = match &args.exemplars {
        Some(path) => ExemplarSet::load(path)?,
        None => ExemplarSet::builtin().first(defaults.exemplars)?,
    };
    let paths = args.paths.unwrap_or(defaults.paths);
    let generate = GenerateOptions {
        prompt: PromptKind::Format(lmsi_data::PromptFormat::CotFewshot),
        exemplars,
        paths,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        max_new_tokens: args.max_new_tokens.unwrap_or(defaults.max_new_tokens),
        stop: None,
        max_batch: defaults.max_batch,
        answer: AnswerKind::Number,
        early_stop: None,
    };
    let train = TrainOptions {
        lr: args.lr.unwrap_or(defaults.train.lr),
        batch_size: args.batch_size.unwrap_or(defaults.train.batch_size),
        steps: args.steps.or(defaults.train.steps),
        epochs: args.epochs.unwrap_or(defaults.train.epochs),
        warmup_steps: args.warmup_steps.unwrap_or(defaults.train.warmup_steps),
        seed: args.seed,
        ..defaults.train.clone()
    };
    let vote = VoteOptions {
        min_confidence: args.min_confidence,
        ..VoteOptions::default()
    };
    let config = RunConfig {
        model,
        questions,
        eval,
        generate_summary: format!("{generate:?}"),
        generate,
        eval_paths: args.eval_paths.unwrap_or(paths),
        eval_temperature: args.eval_temperature.unwrap_or(defaults.eval_temperature),
        vote: VoteSettings::from_options(&vote),
        formats: parse_formats(args.formats.as_deref().unwrap_or(defaults.formats))?,
        train,
        rounds: args.rounds,
        student: args.student.clone(),
        self_questions: args.self_questions,
        self_question_confidence: 0.6,
    };
    let bar = ProgressBar::hidden();
    let mut current = String::new();
    let mut on_event = |event: lmsi::run::Event<'_>| match event {
        Event::Start { stage, work } => {
            current = stage.to_string();
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.reset();
            bar.set_length(work as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:28} {elapsed_precise} [{bar:30}] {pos}/{len}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(current.clone());
        }
        Event::Progress => bar.inc(1),
        Event::Done {
            stage,
            seconds,
            summary,
        } => {
            bar.finish_and_clear();
            println!("{stage:28} {seconds:7.1} s  {summary}");
        }
        Event::Skipped { stage } => println!(
            "{stage:28}    done  (resumed from {})",
            args.work_dir.display()
        ),
    };
    let stop_after = args.stop_after.as_deref();
    let report = on_device!(&args.device, backend => {
        run_on(backend, &config, &args.work_dir, stop_after, &mut on_event)
    })?;
    let Some(report) = report else {
        println!(
            "stopped after {}; run the same command again to continue",
            args.stop_after.unwrap_or_default()
        );
        return Ok(());
    };
    let pct = |x: f64| format!("{:5.1}%", 100.0 * x);
    println!();
    println!("                     greedy   self-consistency");
    println!(
        "before               {}   {}",
        pct(report.before.greedy_accuracy),
        pct(report.before.sc_accuracy)
    );
    println!(
        "after                {}   {}",
        pct(report.after.greedy_accuracy),
        pct(report.after.sc_accuracy)
    );
    if let Some(v) = report.vote_accuracy {
        println!(
            "vote accuracy on the pool (gold read for this report only): {}",
            pct(v)
        );
    }
    println!(
        "{} seconds in all; report: {}",
        report.seconds.values().sum::<f64>().round(),
        args.work_dir.join("report.md").display()
    );
    Ok(())
}

/// Runs the loop with models loaded on `backend` (each model on its own handle of it).
fn run_on<B: Backend + Clone>(
    backend: B,
    config: &lmsi::run::RunConfig,
    work_dir: &Path,
    stop_after: Option<&str>,
    on_event: &mut dyn FnMut(lmsi::run::Event<'_>),
) -> Result<Option<lmsi::run::RunReport>> {
    let load =
        |dir: &Path, storage: Storage| -> std::result::Result<(Model<B>, Tokenizer), lmsi::Error> {
            let model = Model::load_for(dir, backend.clone(), storage)?;
            let tokenizer = Tokenizer::load(dir, model.config())?;
            Ok((model, tokenizer))
        };
    Ok(lmsi::run::run(
        config, work_dir, &load, stop_after, on_event,
    )?)
}

pub fn train(args: TrainArgs) -> Result<()> {
    let examples: Vec<TrainExample> = load(&args.data, &args.input)?;
    if examples.is_empty() {
        bail!("{}: no training examples", args.data.display());
    }
    let options = TrainOptions {
        lr: args.lr,
        batch_size: args.batch_size,
        micro_batch_size: args.micro_batch_size,
        steps: args.steps,
        epochs: args.epochs,
        weight_decay: args.weight_decay,
        warmup_steps: args.warmup_steps,
        schedule: args.schedule,
        grad_clip: args.grad_clip,
        seed: args.seed,
        eval_fraction: args.eval_split,
        eval_every: args.eval_every,
        recompute: args.recompute,
        decay_all: args.decay_all,
        max_tokens: args.max_tokens,
        save_every: args.save_every,
        stop_after: args.stop_after,
        resume: args.resume,
    };
    // A resumed run continues from the checkpoint's weights, not from --model's.
    let mut model_args = args.model;
    if args.resume {
        model_args.model = args.out.clone();
    }
    on_device!(&model_args.device, backend => {
        train_on(&model_args, &examples, &options, &args.out, backend)
    })
}

fn train_on<B: Backend>(
    model_args: &ModelArgs,
    examples: &[TrainExample],
    options: &TrainOptions,
    out: &Path,
    backend: B,
) -> Result<()> {
    let (mut model, tokenizer) = model_args.load(backend, Storage::Training)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let report = lmsi::train::train(
        &mut model,
        &tokenizer,
        &model_args.model,
        examples,
        options,
        out,
        &mut |log, total| {
            bar.set_length(total);
            bar.set_position(log.step);
            bar.set_message(format!(
                "loss {:.4}, lr {:.2e}, {:.0} tokens/s",
                log.loss,
                log.lr,
                log.tokens as f64 / log.seconds.max(1e-9)
            ));
        },
    )?;
    bar.finish_and_clear();
    let mut line = format!(
        "step {}/{}: loss {:.4} -> {:.4}",
        report.step, report.total_steps, report.first_loss, report.last_loss
    );
    if let Some(eval) = report.eval_loss {
        line += &format!(
            ", held-out loss {eval:.4} ({} examples)",
            report.eval_examples
        );
    }
    if report.too_long > 0 {
        line += &format!(", {} examples over --max-tokens left out", report.too_long);
    }
    line += &format!(
        ", {:.0} tokens/s, {:.1} s",
        report.tokens_per_second, report.seconds
    );
    println!("{line} -> {}", out.display());
    Ok(())
}

pub fn eval(args: EvalArgs) -> Result<()> {
    on_device!(&args.model.device, backend => eval_on(&args, backend))
}

fn eval_on<B: Backend>(args: &EvalArgs, backend: B) -> Result<()> {
    let questions = load_questions(&args.dataset, &args.input)?;
    let options = args.sampling.options(args.paths)?;
    let (model, tokenizer) = args.model.load(backend, Storage::Inference)?;
    let paths = if args.mode == EvalMode::Greedy {
        1
    } else {
        args.paths
    };
    let bar = progress_bar(questions.len() * paths, "paths");
    let report = evaluate(
        &model,
        &tokenizer,
        &questions,
        args.mode,
        &options,
        &mut |_| bar.inc(1),
    )?;
    bar.finish_and_clear();
    let json = serde_json::to_string_pretty(&report)?;
    write_atomic(&args.out, json.as_bytes())?;
    println!("{} -> {}", report.summary(), args.out.display());
    Ok(())
}

pub fn vote(args: VoteArgs) -> Result<()> {
    let paths: Vec<PathRecord> = load(&args.paths, &args.input)?;
    let options = VoteOptions {
        kind: args.answer,
        weighting: args.weighting,
        min_confidence: args.min_confidence,
    };
    let (votes, summary) = vote_paths(&paths, &options)
        .with_context(|| format!("voting over {}", args.paths.display()))?;
    write_jsonl_atomic(&args.out, &votes)?;
    let mut line = format!(
        "{} questions, {} voted, mean confidence {:.3}",
        summary.questions, summary.voted, summary.mean_confidence
    );
    if summary.below_confidence > 0 {
        line += &format!(
            ", {} below --min-confidence left out",
            summary.below_confidence
        );
    }
    if let (Some(accuracy), Some((correct, n))) = (summary.accuracy(), summary.gold) {
        line += &format!(", vote accuracy {:.1}% ({correct}/{n})", 100.0 * accuracy);
    }
    println!("{line} -> {}", args.out.display());
    Ok(())
}

pub fn build_data(args: BuildDataArgs) -> Result<()> {
    let formats = parse_formats(&args.formats)?;
    let exemplars = match &args.exemplars {
        Some(path) => ExemplarSet::load(path)?,
        None => ExemplarSet::builtin(),
    };
    let votes: Vec<VoteRecord> = load(&args.votes, &args.input)?;
    let paths: Vec<PathRecord> = load(&args.paths, &args.input)?;
    let (examples, summary) = build_examples(&votes, &paths, &formats, &exemplars)
        .with_context(|| format!("building data from {}", args.votes.display()))?;
    write_jsonl_atomic(&args.out, &examples)?;
    let per_format: Vec<String> = summary
        .per_format
        .iter()
        .map(|(f, n)| format!("{f} {n}"))
        .collect();
    println!(
        "{} examples from {} paths of {} questions ({}) -> {}",
        summary.examples(),
        summary.kept_paths,
        summary.questions,
        per_format.join(", "),
        args.out.display()
    );
    Ok(())
}
