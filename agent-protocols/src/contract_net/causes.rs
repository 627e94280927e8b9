//! Why a participant gave no proposal, why the initiator cancelled, and why a winner
//! withdrew: the causes a program acts on. Each is a variant whose serde name is its wire
//! code (stable, pinned in `tests/pinned_digests.rs`); a message's free text is only ever
//! the `detail` next to it. Each may gain causes in a later version (so they are
//! `#[non_exhaustive]`: a program's match keeps a catch-all arm).

use super::*;

/// Why a participant answered a call with no proposal ([`Answer::Refuse`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Declined {
    /// It has nothing to propose for this task ([`Participant::evaluate`] gave none).
    NoProposal,
    /// The task is not one it can read as its task type.
    UnreadableTask,
    /// Its proposal could not be encoded.
    Unencodable,
    /// It is evaluating as many calls as it takes at once ([`MAX_EVALUATING`]): asked
    /// again later, it may propose.
    Busy,
}

/// Why the initiator cancelled a dialogue ([`Cancel`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CancelCause {
    /// It withdrew its call before any award ([`cancel`]): a proposal's hold ends.
    CallWithdrawn,
    /// The winner's report did not come in time: the award is withdrawn, and the winner
    /// should stop.
    NoReport,
}

/// Why a winner withdrew from its award ([`Report::Cancelled`], from
/// [`Unperformed::Cancelled`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Withdrawal {
    /// It can no longer do the task: what it proposed is gone (a truck broke down, a lot
    /// was lost), so the task will not be done by it.
    Unable,
}

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Declined::NoProposal => "no proposal",
            Declined::UnreadableTask => "the task is unreadable",
            Declined::Unencodable => "its proposal could not be encoded",
            Declined::Busy => "it is evaluating as many calls as it takes at once",
        })
    }
}

impl std::fmt::Display for CancelCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CancelCause::CallWithdrawn => "the call was withdrawn",
            CancelCause::NoReport => "no report in time",
        })
    }
}

impl std::fmt::Display for Withdrawal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Withdrawal::Unable => "unable to do the task",
        })
    }
}

/// A cause's optional detail in a message: `": detail"`, or nothing.
pub(super) struct Detail<'a>(pub(super) &'a Option<String>);

impl std::fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(detail) => write!(f, ": {detail}"),
            None => Ok(()),
        }
    }
}
