//! Learning-rate schedules against Hugging Face `transformers`.
//!
//! The expected rates were computed with transformers 5.24.0: for each of
//! `get_constant_schedule_with_warmup(num_warmup_steps=10)`,
//! `get_linear_schedule_with_warmup(num_warmup_steps=10, num_training_steps=110)`,
//! `get_cosine_schedule_with_warmup(num_warmup_steps=10, num_training_steps=110)` and
//! `get_cosine_with_min_lr_schedule_with_warmup(..., min_lr_rate=0.1)` on an optimizer with
//! `lr=1e-3`, printing `1e-3 * scheduler.lr_lambdas[0](k)`. Our `lr(s)` is that value at `k = s`
//! (see the docs of `LrSchedule`), except past the last step, where we hold the final rate.

use lmsi_adamw::{AdamWError, LrSchedule, ScheduleKind};

const BASE: f32 = 1e-3;
const W: u64 = 10;
const T: u64 = 110;

/// Steps: before any (0), warm-up start (1), inside (5, 9), warm-up end (10), first decay step
/// (11), a quarter, the midpoint and three quarters of the decay (35, 60, 85), the last steps
/// (109, 110) and past the end (111, 200).
const STEPS: [u64; 13] = [0, 1, 5, 9, 10, 11, 35, 60, 85, 109, 110, 111, 200];

fn check(schedule: LrSchedule, want: [f64; 13]) {
    for (&step, &w) in STEPS.iter().zip(&want) {
        // The same f64 arithmetic as HF's (base_lr widened to 1e-3), rounded once to f32.
        let got = schedule.lr(step);
        assert_eq!(
            got, w as f32,
            "{} step {step}: got {got}, want {w}",
            schedule.kind
        );
    }
}

const WARMUP: [f64; 5] = [0.0, 0.0001, 0.0005, 0.0009000000000000001, 0.001];

fn with_warmup(after: [f64; 8]) -> [f64; 13] {
    let mut all = [0.0; 13];
    all[..5].copy_from_slice(&WARMUP);
    all[5..].copy_from_slice(&after);
    all
}

#[test]
fn constant_matches_hugging_face() {
    check(
        LrSchedule::new(ScheduleKind::Constant, BASE, W, T),
        with_warmup([0.001; 8]),
    );
}

#[test]
fn linear_matches_hugging_face() {
    let hf = [0.00099, 0.00075, 0.0005, 0.00025, 1e-05, 0.0, 0.0, 0.0];
    check(
        LrSchedule::new(ScheduleKind::Linear, BASE, W, T),
        with_warmup(hf),
    );
}

#[test]
fn cosine_matches_hugging_face_and_holds_past_the_end() {
    // HF's cosine rises again past the end (2.467e-07 at 111, 9.755e-04 at 200); we hold 0.
    let hf = [
        0.0009997532801828658,
        0.0008535533905932737,
        0.0005,
        0.00014644660940672628,
        2.467198171342e-07,
        0.0,
        0.0,
        0.0,
    ];
    check(
        LrSchedule::new(ScheduleKind::Cosine, BASE, W, T),
        with_warmup(hf),
    );
}

#[test]
fn cosine_with_min_lr_matches_hugging_face() {
    let hf = [
        0.0009997779521645793,
        0.0008681980515339464,
        0.00055,
        0.00023180194846605365,
        0.00010022204783542078,
        0.0001,
        0.0001,
        0.0001,
    ];
    let schedule = LrSchedule {
        min_lr_ratio: 0.1,
        ..LrSchedule::new(ScheduleKind::Cosine, BASE, W, T)
    };
    check(schedule, with_warmup(hf));
}

#[test]
fn linear_with_min_lr_decays_to_the_minimum() {
    // min + (base - min)(1 - p) with min = 1e-4, worked by hand.
    let want = [
        0.000991, 0.000775, 0.00055, 0.000325, 0.000109, 0.0001, 0.0001, 0.0001,
    ];
    let schedule = LrSchedule {
        min_lr_ratio: 0.1,
        ..LrSchedule::new(ScheduleKind::Linear, BASE, W, T)
    };
    check(schedule, with_warmup(want));
}

#[test]
fn no_warmup_starts_decaying_at_step_one() {
    // HF's lambda at k = 1 of 100 steps: (100 - 1) / 100.
    let s = LrSchedule::new(ScheduleKind::Linear, 0.5, 0, 100);
    assert_eq!(
        (s.lr(0), s.lr(1), s.lr(50), s.lr(100)),
        (0.5, 0.495, 0.25, 0.0)
    );
    assert_eq!(LrSchedule::constant(0.25).lr(1_000_000), 0.25);
}

#[test]
fn warmup_longer_than_the_run_peaks_then_holds_the_minimum() {
    let s = LrSchedule::new(ScheduleKind::Cosine, 1.0, 10, 5);
    assert_eq!((s.lr(5), s.lr(10), s.lr(11)), (0.5, 1.0, 0.0));
}

#[test]
fn kinds_parse_display_and_serialize() {
    for kind in [
        ScheduleKind::Constant,
        ScheduleKind::Linear,
        ScheduleKind::Cosine,
    ] {
        assert_eq!(kind.to_string().parse::<ScheduleKind>(), Ok(kind));
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
    }
    let err = "Cosine".parse::<ScheduleKind>().unwrap_err();
    assert_eq!(err, AdamWError::UnknownSchedule("Cosine".into()));
    assert!(err.to_string().contains("\"Cosine\""), "{err}");
}

#[test]
fn schedule_deserializes_with_a_default_minimum() {
    let json = r#"{"kind": "linear", "base_lr": 5e-5, "warmup_steps": 3, "total_steps": 30}"#;
    let s: LrSchedule = serde_json::from_str(json).unwrap();
    assert_eq!(s, LrSchedule::new(ScheduleKind::Linear, 5e-5, 3, 30));
    assert_eq!(
        serde_json::from_str::<LrSchedule>(&serde_json::to_string(&s).unwrap()).unwrap(),
        s
    );
}

#[test]
fn validate_rejects_bad_rates() {
    assert!(
        LrSchedule::new(ScheduleKind::Cosine, 1e-3, 0, 10)
            .validate()
            .is_ok()
    );
    let bad = [
        LrSchedule::new(ScheduleKind::Cosine, -1e-3, 0, 10),
        LrSchedule::new(ScheduleKind::Cosine, f32::NAN, 0, 10),
        LrSchedule {
            min_lr_ratio: 1.5,
            ..LrSchedule::constant(1.0)
        },
    ];
    for s in bad {
        assert!(
            matches!(s.validate(), Err(AdamWError::Hyperparameter { .. })),
            "{s:?}"
        );
    }
}
