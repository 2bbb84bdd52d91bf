//! What the loop trains the model toward from its own votes: the paper's fine-tuning on the
//! majority's paths, or one of the label-free methods that came after it.
//!
//! | objective | data | loss |
//! |---|---|---|
//! | `sft` (LMSI, Huang et al. 2022) | the paths that reach the vote, in the chosen formats | mean likelihood |
//! | `weighted` (the offline form of a majority-vote reward, as RoiRL) | every answered path, weighted by its answer's vote share | weighted likelihood |
//! | `scpo` (Prasad et al. 2024) | pairs: a path with the voted answer against one with a less-voted answer, weighted by the vote margin | DPO, reference = the round's starting model |
//! | `ttrl` (Zuo et al. 2025) | online: each step samples paths with the current model and rewards agreement with their majority | GRPO-style clipped policy gradient, optional KL to the starting model ([`crate::ttrl`]) |
//!
//! ```
//! use lmsi::objective::Objective;
//! assert_eq!("scpo".parse::<Objective>(), Ok(Objective::Scpo));
//! assert!(Objective::Ttrl.is_online());
//! assert!("ppo".parse::<Objective>().unwrap_err().contains("sft, weighted, scpo or ttrl"));
//! ```

use serde::{Deserialize, Serialize};

/// The training objective of a round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Fine-tune on the paths that reach the majority answer (the paper).
    #[default]
    Sft,
    /// Every answered path, its loss weighted by its answer's vote share.
    Weighted,
    /// Self-consistency preference optimisation: DPO on vote-margin-weighted pairs.
    Scpo,
    /// Online RL with a majority-vote reward.
    Ttrl,
}

impl Objective {
    pub fn as_str(self) -> &'static str {
        match self {
            Objective::Sft => "sft",
            Objective::Weighted => "weighted",
            Objective::Scpo => "scpo",
            Objective::Ttrl => "ttrl",
        }
    }

    /// Samples while it trains, instead of training on one round's paths.
    pub fn is_online(self) -> bool {
        self == Objective::Ttrl
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Objective {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            Objective::Sft,
            Objective::Weighted,
            Objective::Scpo,
            Objective::Ttrl,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| format!("unknown objective {s:?} (expected sft, weighted, scpo or ttrl)"))
    }
}
