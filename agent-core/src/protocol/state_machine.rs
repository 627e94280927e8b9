//! A protocol's dialogue state machine as its manifest publishes it: the states, the steps
//! between them (which message, from which role), where a dialogue ends and how long each
//! state may last. Published so that the digest covers the rules and not only the message
//! shapes: two builds that disagree on which message may follow which advertise different
//! digests, and a peer can read the rules it is held to.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Manifest, ManifestError};
use crate::message::SchemaDigest;

/// A dialogue's declared state machine, declared with
/// [`Protocol::state_machine`](super::Protocol::state_machine). A dialogue also ends in the
/// state `expired` when a deadline passes; that state is the runtime's, not declared here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    /// The dialogue kind's name.
    pub name: String,
    /// The state every dialogue starts in.
    pub initial: String,
    /// Every state, sorted.
    pub states: Vec<String>,
    /// The states where a dialogue is closed for good, sorted.
    pub terminal: Vec<String>,
    /// Every allowed step, sorted.
    pub transitions: Vec<TransitionSpec>,
    /// How long a dialogue may stay in a state, in ms, by state (states without a bound
    /// are absent).
    pub deadlines_ms: BTreeMap<String, u64>,
    /// How long a dialogue is remembered after it opened, in ms.
    pub max_age_ms: u64,
}

/// One allowed step: in state `from`, the party playing `sender` may send `message`, and
/// the dialogue moves to `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransitionSpec {
    /// The state the step leaves.
    pub from: String,
    /// The step's message: a message type's name, or the name of one of its variants
    /// (contract-net's `Answer` is a proposal or a refusal, two different steps).
    pub message: String,
    /// The schema digest of the message type carrying the step, where the rules know it.
    /// Without it, `message` must be the name of one of the manifest's messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaDigest>,
    /// The role that may send it.
    pub sender: String,
    /// The state the step enters.
    pub to: String,
    /// Whether the step is allowed after the state's deadline too.
    pub after_deadline: bool,
}

impl StateMachine {
    /// The same machine with its lists sorted and without repeats: what the digest covers.
    pub(super) fn canonical(&self) -> StateMachine {
        let mut out = self.clone();
        for list in [&mut out.states, &mut out.terminal] {
            list.sort();
            list.dedup();
        }
        out.transitions.sort();
        out.transitions.dedup();
        out
    }

    /// Checks that every state it names is one of its states, and every step's message is
    /// one of `manifest`'s.
    pub(super) fn check(&self, manifest: &Manifest) -> Result<(), ManifestError> {
        let states: BTreeSet<&str> = self.states.iter().map(String::as_str).collect();
        let named = [&self.initial]
            .into_iter()
            .chain(&self.terminal)
            .chain(self.deadlines_ms.keys())
            .chain(self.transitions.iter().flat_map(|t| [&t.from, &t.to]));
        for state in named {
            if !states.contains(state.as_str()) {
                return Err(ManifestError::UnknownState { state: state.clone() });
            }
        }
        for t in &self.transitions {
            let known = match t.schema {
                Some(schema) => manifest.messages.iter().any(|m| m.digest == schema),
                None => manifest.messages.iter().any(|m| m.name == t.message),
            };
            if !known {
                return Err(ManifestError::UnknownMessage { message: t.message.clone() });
            }
        }
        Ok(())
    }
}
