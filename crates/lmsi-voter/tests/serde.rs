//! The `serde` feature: names on the wire are the same as `Display` / `FromStr` use.
#![cfg(feature = "serde")]

use lmsi_voter::{AnswerKind, Ballot, Vote, Weighting, vote};

#[test]
fn kinds_and_weightings_use_their_names() {
    for kind in AnswerKind::ALL {
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{kind}\""));
        assert_eq!(serde_json::from_str::<AnswerKind>(&json).unwrap(), kind);
    }
    for weighting in [Weighting::Uniform, Weighting::LogProb] {
        assert_eq!(
            serde_json::to_string(&weighting).unwrap(),
            format!("\"{weighting}\"")
        );
    }
}

#[test]
fn votes_round_trip() {
    let ballots = [Ballot::new(Some("7".into()), -0.5), Ballot::new(None, -1.0)];
    let result = vote(&ballots, Weighting::Uniform);
    let json = serde_json::to_string(&result).unwrap();
    assert_eq!(
        json,
        r#"{"answer":"7","votes":1,"weight":1.0,"valid":1,"total":2,"confidence":1.0,"paths":[0]}"#
    );
    assert_eq!(serde_json::from_str::<Vote>(&json).unwrap(), result);
}
