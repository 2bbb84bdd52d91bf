//! Generation is bounded by what the request can use: a prompt and `max_new_tokens` that cannot fit
//! the model's context are refused naming the question before anything runs, and huge `paths` or
//! `max_batch` cost only what is decoded at once, or are refused with the reason.

use lmsi_sampler::SamplingParams;
use lmsi_transformer::generate::{Control, GenerateConfig, GenerateStats, Request, generate};
use lmsi_transformer::testing::TinyModel;
use lmsi_transformer::{CpuBackend, Error, Model, Tokenizer};

/// The fixture model's context: short, so that filling it exactly is quick.
const CONTEXT: usize = 256;

struct Fixture {
    _dir: tempfile::TempDir,
    model: Model<CpuBackend>,
    tokenizer: Tokenizer,
    prefix: Vec<u32>,
}

/// The tiny model with a context of [`CONTEXT`] positions, its byte tokenizer and a short shared
/// prefix.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinyModel::default();
    spec.write(dir.path()).unwrap();
    let mut config = spec.config_json();
    config["max_position_embeddings"] = CONTEXT.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let model = Model::load(dir.path(), CpuBackend::new()).unwrap();
    let tokenizer = Tokenizer::load(dir.path(), model.config()).unwrap();
    let prefix = tokenizer.encode("Q: 1 + 1?\nA: 2.\n\n", true).unwrap();
    Fixture {
        _dir: dir,
        model,
        tokenizer,
        prefix,
    }
}

impl Fixture {
    fn request(&self, key: &str, text: &str, paths: usize) -> Request {
        Request {
            key: key.into(),
            tokens: self.tokenizer.encode(text, false).unwrap(),
            paths,
        }
    }

    /// Runs generation, answering every path with `control`; returns the stats and the paths seen.
    fn run(
        &self,
        requests: &[Request],
        max_new_tokens: usize,
        max_batch: usize,
        control: Control,
    ) -> (Result<GenerateStats, Error>, usize) {
        let config = GenerateConfig {
            sampling: SamplingParams::greedy(),
            max_new_tokens,
            max_batch,
            block_size: 4,
            stop_at_eos: false,
            ..GenerateConfig::default()
        };
        let mut seen = 0;
        let stats = generate(
            &self.model,
            &self.tokenizer,
            &self.prefix,
            requests,
            &config,
            &mut |_| {
                seen += 1;
                control
            },
        );
        (stats, seen)
    }
}

#[test]
fn a_prompt_and_max_new_tokens_beyond_the_context_are_refused_naming_the_question() {
    let f = fixture();
    let context = f.model.config().max_position_embeddings;
    assert_eq!(context, CONTEXT);
    let long = f.request("q-long", &"How many? ".repeat(20), 2);
    // The first question that cannot fit is named.
    let requests = vec![long.clone(), f.request("q-short", "Q: 2 + 2?\nA:", 2)];
    let prompt = f.prefix.len() + long.tokens.len();
    for max_new_tokens in [context - prompt + 1, context, usize::MAX] {
        let (result, seen) = f.run(&requests, max_new_tokens, 4, Control::Continue);
        let e = result.unwrap_err();
        assert!(
            matches!(&e, Error::ContextTooLong { question, prompt_tokens, context: c, .. }
                if question == "q-long" && *prompt_tokens == prompt && *c == context),
            "{e}"
        );
        let message = e.to_string();
        assert!(
            message.contains("\"q-long\"") && message.contains("max_position_embeddings"),
            "{message}"
        );
        assert_eq!(seen, 0, "nothing is generated before the refusal");
    }
    // Exactly the context fits.
    let (result, seen) = f.run(&requests, context - prompt, 4, Control::Continue);
    result.unwrap();
    assert_eq!(seen, 4);
}

#[test]
fn huge_path_counts_allocate_nothing_per_path() {
    let f = fixture();
    let paths = usize::MAX / 2;
    let requests = vec![
        f.request("a", "Q: 3?\nA:", paths),
        f.request("b", "Q: 4?\nA:", paths),
    ];
    // The first path of each question stops it: the rest are saved at once, not one by one.
    let (result, seen) = f.run(&requests, 3, 4, Control::StopRequest);
    let stats = result.unwrap();
    assert_eq!((seen, stats.paths), (2, 2));
    assert_eq!(stats.paths_saved, 2 * (paths - 1));
}

#[test]
fn a_huge_batch_is_bounded_by_the_paths_or_refused_by_its_size() {
    let f = fixture();
    let requests = vec![f.request("a", "Q: 5?\nA:", 3)];
    let (bounded, seen) = f.run(&requests, 4, usize::MAX, Control::Continue);
    let (batched, _) = f.run(&requests, 4, 3, Control::Continue);
    assert_eq!(
        bounded.unwrap().sampled_tokens,
        batched.unwrap().sampled_tokens
    );
    assert_eq!(seen, 3);

    let requests = vec![f.request("a", "Q: 5?\nA:", usize::MAX)];
    let (result, seen) = f.run(&requests, 4, usize::MAX, Control::Continue);
    let message = result.unwrap_err().to_string();
    assert!(message.contains("lower max_batch"), "{message}");
    assert_eq!(seen, 0);
}

#[test]
fn a_batch_larger_than_the_machine_is_refused_on_the_cpu_before_it_is_allocated() {
    let f = fixture();
    // About 4·10⁹ cache positions: addressable by 32-bit slots, but far more KV cache (hundreds of
    // GiB even for the tiny model) than any machine's RAM and swap.
    let rows = 15_000_000;
    let requests = vec![f.request("a", "Q: 6?\nA:", rows)];
    let (result, seen) = f.run(&requests, 200, rows, Control::Continue);
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("not enough device memory for generation: KV cache")
            && message.contains("the CPU (RAM and swap)"),
        "{message}"
    );
    assert_eq!(seen, 0);
}
