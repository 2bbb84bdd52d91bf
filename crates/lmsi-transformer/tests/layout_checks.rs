//! A step's layout is checked once, before any backend runs it, with one message: token ids and
//! targets against the vocabulary, positions, sequence ranges and logit rows against the step.

use lmsi_transformer::backend::{BatchLayout, SeqLayout};
use lmsi_transformer::testing::{TinyModel, VOCAB};
use lmsi_transformer::{Chunk, Config, CpuBackend, CudaBackend, Logits, Model, TrainSequence};

fn model<B: lmsi_transformer::Backend>(backend: B) -> Model<B> {
    let spec = TinyModel::default();
    let config = Config::from_json(&spec.config_json().to_string()).unwrap();
    Model::from_host(config, &spec.params(), backend).unwrap()
}

/// Three tokens of one sequence, two logit rows with targets.
fn layout() -> BatchLayout {
    BatchLayout {
        token_ids: vec![1, 2, 3],
        positions: vec![0, 1, 2],
        seqs: vec![SeqLayout {
            token_start: 0,
            num_tokens: 3,
            context_len: 3,
            table_start: 0,
        }],
        logit_rows: vec![1, 2],
        targets: vec![3, 4],
        ..BatchLayout::default()
    }
}

fn refused(layout: BatchLayout, says: &str) {
    let err = layout.check(VOCAB).unwrap_err().to_string();
    assert!(err.contains(says), "{err:?} should say {says:?}");
}

#[test]
fn a_layout_that_does_not_fit_its_model_or_itself_is_refused() {
    layout().check(VOCAB).unwrap();
    let big = VOCAB as u32;
    refused(
        BatchLayout {
            token_ids: vec![1, big, 3],
            ..layout()
        },
        &format!("token id {big} is outside the vocabulary ({VOCAB} tokens)"),
    );
    refused(
        BatchLayout {
            targets: vec![3, big + 7],
            ..layout()
        },
        &format!("target token {} is outside the vocabulary", big + 7),
    );
    refused(
        BatchLayout {
            positions: vec![0, 1],
            ..layout()
        },
        "2 positions for 3 tokens",
    );
    let mut long = layout();
    long.seqs[0].num_tokens = 4;
    refused(long, "sequence 0's tokens end past the step's 3");
    refused(
        BatchLayout {
            logit_rows: vec![1, 3],
            ..layout()
        },
        "logit row 3 is not one of its 3 tokens",
    );
    refused(
        BatchLayout {
            targets: vec![3],
            ..layout()
        },
        "1 targets for 2 logit rows",
    );
}

/// Inference and training, on the CPU and the simulated device, give the same message for a token
/// outside the vocabulary, before the backend sees it.
#[test]
fn inference_and_training_refuse_a_bad_token_with_one_message() {
    let bad = VOCAB as u32 + 2;
    let want = format!("token id {bad} is outside the vocabulary ({VOCAB} tokens)");
    fn both<B: lmsi_transformer::Backend>(model: Model<B>, bad: u32) -> [String; 2] {
        let mut cache = model.new_cache(4, 8).unwrap();
        let seq = cache.create();
        let tokens = [1, bad, 3];
        let chunk = Chunk {
            seq,
            tokens: &tokens,
            logits: Logits::Last,
        };
        let inference = model.forward(&mut cache, &[chunk]).unwrap_err().to_string();
        // The cache is as it was: the step was refused before any slot was taken.
        assert_eq!(cache.seq_len(seq).unwrap(), 0);
        let batch = [TrainSequence::completion(vec![1, bad, 3, 4], 1)];
        let training = model.loss(&batch).unwrap_err().to_string();
        [inference, training]
    }
    for got in [
        both(model(CpuBackend::new()), bad),
        both(model(CudaBackend::sim()), bad),
    ] {
        assert_eq!(got, [want.clone(), want.clone()]);
    }
}
