//! The commands: each reads its inputs, runs on the backend `--device` names and writes its
//! output atomically.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lmsi::build_data::build_for;
use lmsi::eval::{EvalMode, EvalReport, evaluate_with_samples};
use lmsi::generate::generate_paths;
use lmsi::outputs::{Named, check_output};
use lmsi::shard::{self, Shard, ShardArg, ShardManifest};
use lmsi::suite;
use lmsi::train::{TrainData, TrainOptions, train_data};
use lmsi::vote::vote_paths;
use lmsi_data::{
    BadLines, DataError, DatasetFile, ExemplarSet, Loaded, parse_formats, read_dataset, read_jsonl,
    read_paths, read_votes, write_atomic, write_jsonl_atomic,
};
use lmsi_transformer::{Backend, Model, Storage, Tokenizer};
use lmsi_voter::{AnswerKind, Extractor};

use crate::cli::*;
use crate::device::{on_device, set_threads};

/// Reads an input file with `read` (one of lmsi-data's readers), reporting skipped lines on stderr.
fn load<T>(
    path: &Path,
    input: &InputArgs,
    read: fn(&Path, BadLines) -> Result<Loaded<T>, DataError>,
) -> Result<Vec<T>> {
    let Loaded { items, skipped } = read(path, input.bad_lines())?;
    report_skipped(path, &skipped);
    Ok(items)
}

/// Reads a questions file of lmsi's or of a benchmark dataset ([`read_dataset`]), reporting
/// skipped records on stderr.
fn load_dataset(path: &Path, input: &InputArgs) -> Result<DatasetFile> {
    let file = read_dataset(path, input.format, input.bad_lines())?;
    report_skipped(path, &file.questions.skipped);
    Ok(file)
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

/// Refuses the `--out` of a command that samples from a model when it is one of its inputs: the
/// questions, a file of the model, the exemplars.
fn check_sampling_output(
    out: &Path,
    questions: Named<'_>,
    model: &ModelArgs,
    sampling: &SamplingArgs,
) -> Result<()> {
    let mut inputs = vec![questions, Named::dir("--model", &model.model)];
    let exemplars = sampling.exemplars.as_deref();
    inputs.extend(exemplars.map(|e| Named::file("--exemplars", e)));
    Ok(check_output(Named::file("--out", out), &inputs)?)
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    on_device!(&args.model.device, backend => generate_on(&args, backend))
}

fn generate_on<B: Backend>(args: &GenerateArgs, backend: B) -> Result<()> {
    let questions_file = Named::file("--questions", &args.questions);
    check_sampling_output(&args.out, questions_file, &args.model, &args.sampling)?;
    let file = load_dataset(&args.questions, &args.input)?;
    let mut options = args.sampling.options(args.paths, file.dataset)?;
    let questions = file.questions.items;
    options.early_stop = args.early_stop;
    let sharding = Sharding::new("generate", args.shard, questions, &args.out, || {
        let fingerprinted = (&options, args.input.skip_bad);
        let inputs = [
            ("model", args.model.model.as_path()),
            ("questions", &args.questions),
        ];
        shard::fingerprint("generate", &fingerprinted, &inputs)
    })?;
    let questions = &sharding.questions;
    if questions.is_empty() {
        write_atomic(&args.out, b"")?;
        sharding.finish(&args.out, Vec::new(), Vec::new())?;
        println!("no questions in this shard -> {}", args.out.display());
        return Ok(());
    }
    let (model, tokenizer) = args.model.load(backend, Storage::Inference)?;
    let bar = progress_bar(questions.len() * args.paths, "paths");
    let (paths, stats) =
        generate_paths(&model, &tokenizer, questions, &options, &mut |_| bar.inc(1))?;
    bar.finish_and_clear();
    write_jsonl_atomic(&args.out, &paths)?;
    let mut per_question: HashMap<&str, usize> = HashMap::new();
    for path in &paths {
        *per_question.entry(path.id.as_str()).or_default() += 1;
    }
    let lines = questions
        .iter()
        .map(|q| per_question.get(q.id.as_str()).copied().unwrap_or(0))
        .collect();
    sharding.finish(&args.out, lines, Vec::new())?;
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
    set_threads(args.device.threads)?;
    let config = args.config()?;
    let mut on_event = stage_printer(&args.work_dir);
    let control = lmsi::run::RunControl {
        stop_after: args.stop_after.as_deref(),
        redo_changed: args.redo_changed,
    };
    let report = on_device!(&args.device, backend => {
        run_on(backend, &config, &args.work_dir, control, &mut on_event)
    })?;
    match report {
        Some(report) => print_report(&report, &args.work_dir),
        None => println!(
            "stopped after {}; run the same command again to continue",
            args.stop_after.unwrap_or_default()
        ),
    }
    Ok(())
}

/// Prints each stage of a run as it starts (a progress bar), finishes or is found done.
fn stage_printer(work_dir: &Path) -> impl FnMut(lmsi::run::Event<'_>) + '_ {
    use lmsi::run::Event;
    let bar = ProgressBar::hidden();
    move |event: Event<'_>| match event {
        Event::Start { stage, work } => {
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
            bar.set_prefix(stage.to_string());
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
        Event::Skipped { stage } => {
            println!("{stage:28}    done  (resumed from {})", work_dir.display())
        }
    }
}

/// The accuracies before and after, and where the report is.
fn print_report(report: &lmsi::run::RunReport, work_dir: &Path) {
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
    let m = &report.compute_matched;
    let label = format!("before, {} paths", m.paths);
    println!(
        "{label:<30}{}   (compute-matched: the starting model with the loop's samples)",
        pct(m.sc_accuracy)
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
        work_dir.join("report.md").display()
    );
}

/// Runs the loop with models loaded on `backend` (each model on its own handle of it).
fn run_on<B: Backend + Clone>(
    backend: B,
    config: &lmsi::run::RunConfig,
    work_dir: &Path,
    control: lmsi::run::RunControl<'_>,
    on_event: &mut dyn FnMut(lmsi::run::Event<'_>),
) -> Result<Option<lmsi::run::RunReport>> {
    let load =
        |dir: &Path, storage: Storage| -> std::result::Result<(Model<B>, Tokenizer), lmsi::Error> {
            let model = Model::load_for(dir, backend.clone(), storage)?;
            let tokenizer = Tokenizer::load(dir, model.config())?;
            Ok((model, tokenizer))
        };
    Ok(lmsi::run::run(config, work_dir, &load, control, on_event)?)
}

pub fn train(args: TrainArgs) -> Result<()> {
    let (option, path) = match (&args.data, &args.pairs) {
        (Some(data), _) => ("--data", data),
        (None, Some(pairs)) => ("--pairs", pairs),
        (None, None) => bail!("give --data or --pairs"),
    };
    let mut inputs = vec![Named::file(option, path)];
    if !args.resume {
        inputs.push(Named::dir("--model", &args.model.model));
    }
    check_output(Named::dir("--out", &args.out), &inputs)?;
    let data = match args.pairs.is_some() {
        false => TrainData::Examples(load(path, &args.input, read_jsonl)?),
        true => TrainData::Pairs(load(path, &args.input, read_jsonl)?),
    };
    if data.is_empty() {
        bail!("{}: no training examples", path.display());
    }
    let options = args.options();
    // A resumed run continues from the checkpoint's weights, not from --model's.
    let mut model_args = args.model;
    if args.resume {
        model_args.model = args.out.clone();
    }
    on_device!(&model_args.device, backend => {
        train_on(&model_args, &data, &options, &args.out, backend)
    })
}

fn train_on<B: Backend>(
    model_args: &ModelArgs,
    data: &TrainData,
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
    let on_step = &mut |log: &lmsi::train::StepLog, total| {
        bar.set_length(total);
        bar.set_position(log.step);
        bar.set_message(format!(
            "loss {:.4}, lr {:.2e}, {:.0} tokens/s",
            log.loss,
            log.lr,
            log.tokens as f64 / log.seconds.max(1e-9)
        ));
    };
    let source = &model_args.model;
    let report = train_data(&mut model, &tokenizer, source, data, options, out, on_step)?;
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
    let Some(dataset_path) = &args.dataset else {
        let suite = args
            .suite
            .as_ref()
            .expect("clap requires --dataset or --suite");
        return eval_suite(args, suite, backend);
    };
    let dataset = Named::file("--dataset", dataset_path);
    check_sampling_output(&args.out, dataset, &args.model, &args.sampling)?;
    let file = load_dataset(dataset_path, &args.input)?;
    let mut options = args.sampling.options(args.paths, file.dataset)?;
    if args.early_stop.is_some() && args.mode != EvalMode::Sc {
        bail!("--early-stop applies to --mode sc only");
    }
    options.early_stop = args.early_stop;
    let questions = file.questions.items;
    let sharding = Sharding::new("eval", args.shard, questions, &args.out, || {
        let fingerprinted = (&options, args.mode, args.input.skip_bad);
        let inputs = [
            ("model", args.model.model.as_path()),
            ("dataset", dataset_path.as_path()),
        ];
        shard::fingerprint("eval", &fingerprinted, &inputs)
    })?;
    let questions = &sharding.questions;
    let paths = args.mode.paths(args.paths);
    let (report, samples) = if questions.is_empty() {
        let empty = EvalReport::from_items(args.mode, paths, 0.0, 0.0, Vec::new(), &[]);
        (empty, Vec::new())
    } else {
        let (model, tokenizer) = args.model.load(backend, Storage::Inference)?;
        let bar = progress_bar(questions.len() * paths, "paths");
        let evaluated = evaluate_with_samples(
            &model,
            &tokenizer,
            questions,
            args.mode,
            &options,
            &mut |_| bar.inc(1),
        )?;
        bar.finish_and_clear();
        evaluated
    };
    write_report(&args.out, &report)?;
    sharding.finish(&args.out, Vec::new(), samples)
}

/// Writes an eval report, and in `sc` mode its maj@k chart beside it, and prints its summary.
fn write_report(out: &Path, report: &EvalReport) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    write_atomic(out, json.as_bytes())?;
    println!("{} -> {}", report.summary(), out.display());
    if let Some(samples) = &report.samples {
        let chart = out.with_extension("maj-at-k.svg");
        write_atomic(&chart, lmsi::metrics::chart(samples).as_bytes())?;
        let last = samples.at_k.last().map_or(0.0, |a| a.pass);
        println!(
            "mean accuracy of single samples {:.1}%, pass@{} {:.1}%; maj@k and pass@k for every k -> {}",
            100.0 * samples.mean_sample_accuracy,
            samples.at_k.len(),
            100.0 * last,
            chart.display()
        );
    }
    Ok(())
}

pub fn vote(args: VoteArgs) -> Result<()> {
    check_output(
        Named::file("--out", &args.out),
        &[Named::file("--paths", &args.paths)],
    )?;
    let paths = load(&args.paths, &args.input, read_paths)?;
    let options = args.options();
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
    if options.control == lmsi::vote::VoteControl::RandomVote {
        line += "; random-vote control: each question keeps a random sampled answer";
    }
    println!("{line} -> {}", args.out.display());
    Ok(())
}

pub fn build_data(args: BuildDataArgs) -> Result<()> {
    let mut inputs = vec![
        Named::file("--votes", &args.votes),
        Named::file("--paths", &args.paths),
    ];
    inputs.extend(
        args.exemplars
            .as_deref()
            .map(|e| Named::file("--exemplars", e)),
    );
    check_output(Named::file("--out", &args.out), &inputs)?;
    let formats = parse_formats(&args.formats)?;
    let exemplars = match &args.exemplars {
        Some(path) => ExemplarSet::load(path)?,
        None => ExemplarSet::builtin(),
    };
    let votes = load(&args.votes, &args.input, read_votes)?;
    let paths = load(&args.paths, &args.input, read_paths)?;
    let extractor = Extractor::new(AnswerKind::Number);
    let (data, summary) = build_for(
        args.objective,
        &votes,
        &paths,
        &formats,
        &exemplars,
        &extractor,
    )
    .with_context(|| format!("building data from {}", args.votes.display()))?;
    data.write(&args.out)?;
    let what = data.items_name();
    let per_format: Vec<String> = summary
        .per_format
        .iter()
        .map(|(f, n)| format!("{f} {n}"))
        .collect();
    println!(
        "{} {what} from {} paths of {} questions ({}) -> {}",
        summary.examples(),
        summary.kept_paths,
        summary.questions,
        per_format.join(", "),
        args.out.display()
    );
    Ok(())
}

/// A command's questions, cut to its `--shard` when it has one, and what its manifest records.
struct Sharding {
    questions: Vec<lmsi_data::Question>,
    shard: Option<ShardOf>,
}

/// The shard a command works on and where its questions stand in the input.
struct ShardOf {
    command: &'static str,
    shard: Shard,
    fingerprint: String,
    questions: usize,
    positions: Vec<usize>,
}

impl Sharding {
    /// The questions of `shard` (all of them without one); `fingerprint` is computed only for a
    /// shard. Refuses an `out` whose manifest would overwrite an input.
    fn new(
        command: &'static str,
        shard: Option<ShardArg>,
        questions: Vec<lmsi_data::Question>,
        out: &Path,
        fingerprint: impl FnOnce() -> Result<String, lmsi::Error>,
    ) -> Result<Self> {
        let Some(arg) = shard else {
            return Ok(Self {
                questions,
                shard: None,
            });
        };
        let shard = arg.resolve(&|name| std::env::var(name).ok())?;
        check_output(
            Named::file("the shard manifest", &shard::manifest_path(out)),
            &[Named::file("--out", out)],
        )?;
        let total = questions.len();
        let (questions, positions) = shard.select(questions);
        eprintln!("shard {shard}: {} of {total} questions", questions.len());
        Ok(Self {
            questions,
            shard: Some(ShardOf {
                command,
                shard,
                fingerprint: fingerprint()?,
                questions: total,
                positions,
            }),
        })
    }

    /// Writes the manifest beside `out`, for a shard.
    fn finish(
        &self,
        out: &Path,
        lines: Vec<usize>,
        samples: Vec<lmsi::metrics::Samples>,
    ) -> Result<()> {
        let Some(of) = &self.shard else {
            return Ok(());
        };
        let manifest = ShardManifest {
            command: of.command.into(),
            shard: of.shard.index,
            shards: of.shard.count,
            fingerprint: of.fingerprint.clone(),
            questions: of.questions,
            positions: of.positions.clone(),
            lines,
            samples,
        };
        let json = serde_json::to_string_pretty(&manifest)?;
        write_atomic(&shard::manifest_path(out), json.as_bytes())?;
        Ok(())
    }
}

/// `lmsi merge`: joins shard outputs into the unsharded command's output.
pub fn merge(args: MergeArgs) -> Result<()> {
    let manifests: Vec<_> = args
        .shards
        .iter()
        .map(|s| shard::manifest_path(s))
        .collect();
    let inputs: Vec<Named<'_>> = args
        .shards
        .iter()
        .map(|s| Named::file("a shard", s))
        .chain(manifests.iter().map(|m| Named::file("a shard manifest", m)))
        .collect();
    check_output(Named::file("--out", &args.out), &inputs)?;
    let shards = shard::read_shards(&args.shards)?;
    match shards[0].manifest.command.as_str() {
        "generate" => {
            let merged = shard::merge_paths(&shards)?;
            write_atomic(&args.out, merged.as_bytes())?;
            println!(
                "{} shards, {} paths -> {}",
                shards.len(),
                merged.lines().count(),
                args.out.display()
            );
            Ok(())
        }
        "eval" => write_report(&args.out, &shard::merge_reports(&shards)?),
        other => bail!(
            "{}: unknown command {other:?} in its shard manifest",
            manifests[0].display()
        ),
    }
}

/// `lmsi eval --suite`: every dataset of the suite, greedy and by self-consistency, into one table.
fn eval_suite<B: Backend>(args: &EvalArgs, suite_file: &Path, backend: B) -> Result<()> {
    let entries = suite::read_suite(suite_file)?;
    let markdown = args.out.with_extension("md");
    let mut inputs: Vec<Named<'_>> = vec![Named::file("--suite", suite_file)];
    inputs.extend(
        entries
            .iter()
            .map(|e| Named::file("a suite dataset", &e.path)),
    );
    inputs.push(Named::dir("--model", &args.model.model));
    for out in [&args.out, &markdown] {
        check_output(Named::file("--out", out), &inputs)?;
    }
    let (model, tokenizer) = args.model.load(backend, Storage::Inference)?;
    let rows = entries
        .iter()
        .map(|entry| suite_row(args, suite_file, entry, &model, &tokenizer))
        .collect::<Result<Vec<_>>>()?;
    let table = suite::SuiteTable { rows };
    write_atomic(&args.out, serde_json::to_string_pretty(&table)?.as_bytes())?;
    write_atomic(&markdown, table.markdown().as_bytes())?;
    print!("{}", table.markdown());
    println!("-> {} and {}", args.out.display(), markdown.display());
    Ok(())
}

/// One suite dataset evaluated greedy and by self-consistency.
fn suite_row<B: Backend>(
    args: &EvalArgs,
    suite_file: &Path,
    entry: &suite::SuiteEntry,
    model: &Model<B>,
    tokenizer: &Tokenizer,
) -> Result<suite::SuiteRow> {
    let format = entry.format.as_deref().map(str::parse).transpose();
    let input = InputArgs {
        skip_bad: args.input.skip_bad,
        format: format.map_err(anyhow::Error::msg).with_context(|| {
            format!(
                "{}: the \"format\" of {}",
                suite_file.display(),
                entry.path.display()
            )
        })?,
    };
    let file = load_dataset(&entry.path, &input)?;
    let paths = entry.paths.unwrap_or(args.paths);
    let mut options = args.sampling.options(paths, file.dataset)?;
    options.prompt = entry.prompt.unwrap_or(options.prompt);
    let questions = &file.questions.items;
    let name = entry
        .name
        .clone()
        .unwrap_or_else(|| file.dataset.to_string());
    let mut reports = Vec::new();
    for mode in [EvalMode::Greedy, EvalMode::Sc] {
        let paths = questions.len() * mode.paths(options.paths);
        let bar = progress_bar(paths, &format!("{name} paths"));
        let (report, _) =
            evaluate_with_samples(model, tokenizer, questions, mode, &options, &mut |_| {
                bar.inc(1)
            })?;
        bar.finish_and_clear();
        println!("{name}: {}", report.summary());
        reports.push(report);
    }
    Ok(suite::SuiteRow {
        name,
        dataset: file.dataset.to_string(),
        path: entry.path.clone(),
        questions: questions.len(),
        greedy: (&reports[0]).into(),
        self_consistency: (&reports[1]).into(),
        paths: options.paths,
        temperature: options.sampling.temperature,
    })
}
