//! Why a dialogue refused a peer's message, as a cause a program can act on: the typed part
//! of a [`Refused`](super::Refused), whose text is only its detail.

use serde::{Deserialize, Serialize};

use super::DialogueError;

/// Why a message was refused, as the peer is told it ([`Refused::cause`]). Its serde name
/// (`"out_of_order"`, `"late"`, ...) is its wire code: stable, and what a program matches
/// on; the refusal's text only details it. Causes are added as protocols need them (as
/// `busy` was, for auctions), so a program's match keeps a catch-all arm.
///
/// [`Refused::cause`]: super::Refused::cause
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefusalCause {
    /// No such dialogue here, and the message does not open one ([`DialogueError::Unknown`]).
    UnknownDialogue,
    /// The message would open a dialogue whose id is in use ([`DialogueError::Exists`]).
    Exists,
    /// The dialogue is over ([`DialogueError::Closed`]).
    Closed,
    /// The message may not follow in the dialogue's state, or not from its sender's role
    /// ([`DialogueError::OutOfOrder`]).
    OutOfOrder,
    /// The sender is not a party to the dialogue ([`DialogueError::NotAParty`]).
    NotAParty,
    /// The state's deadline had passed ([`DialogueError::Late`]).
    Late,
    /// The sender has as many dialogues open here as one peer may ([`DialogueError::TooManyOpen`]).
    TooManyOpen,
    /// The receiver was too busy to look at the message (an auction's line was full): it
    /// changed nothing, and may be sent again.
    Busy,
}

/// Where a refused message's dialogue stood when it was refused, as the peer is told it
/// ([`Refused::standing`]). The refusal changed nothing: it still stands there.
///
/// [`Refused::standing`]: super::Refused::standing
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// There is no such dialogue here (and the message did not open one).
    NoSuchDialogue,
    /// The dialogue is open, in `state`.
    Open {
        /// Its state.
        state: String,
    },
    /// The dialogue is closed in `state` (a terminal state, or `expired`): nothing more is
    /// accepted in it.
    Closed {
        /// The state it closed in.
        state: String,
    },
}

impl Standing {
    /// The dialogue's state; `None` if there is no such dialogue.
    pub fn state(&self) -> Option<&str> {
        match self {
            Standing::NoSuchDialogue => None,
            Standing::Open { state } | Standing::Closed { state } => Some(state),
        }
    }
}

impl std::fmt::Display for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Standing::NoSuchDialogue => f.write_str("no such dialogue"),
            Standing::Open { state } => write!(f, "open in state {state}"),
            Standing::Closed { state } => write!(f, "closed in state {state}"),
        }
    }
}

impl DialogueError {
    /// The cause a peer is told, for a refusal that is the peer's doing; `None` for a
    /// failure of this agent's own ([`DialogueError::Storage`]).
    pub fn cause(&self) -> Option<RefusalCause> {
        Some(match self {
            DialogueError::Unknown { .. } => RefusalCause::UnknownDialogue,
            DialogueError::Exists { .. } => RefusalCause::Exists,
            DialogueError::Closed { .. } => RefusalCause::Closed,
            DialogueError::OutOfOrder { .. } => RefusalCause::OutOfOrder,
            DialogueError::NotAParty { .. } => RefusalCause::NotAParty,
            DialogueError::Late { .. } => RefusalCause::Late,
            DialogueError::TooManyOpen { .. } => RefusalCause::TooManyOpen,
            DialogueError::Storage { .. } => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step returns a `Result` carrying a `DialogueError`, contract-net's hot path
    /// among them: what refusals tell (where a dialogue stands, what may follow late) is
    /// boxed so that the error stays as small as it was before they told it.
    #[test]
    fn a_dialogue_error_stays_small() {
        assert!(std::mem::size_of::<DialogueError>() <= 112, "{}", std::mem::size_of::<DialogueError>());
    }

    /// The wire codes are a contract with peers built from other versions: pinned.
    #[test]
    fn wire_codes_are_stable() {
        let codes = [
            (RefusalCause::UnknownDialogue, "unknown_dialogue"),
            (RefusalCause::Exists, "exists"),
            (RefusalCause::Closed, "closed"),
            (RefusalCause::OutOfOrder, "out_of_order"),
            (RefusalCause::NotAParty, "not_a_party"),
            (RefusalCause::Late, "late"),
            (RefusalCause::TooManyOpen, "too_many_open"),
            (RefusalCause::Busy, "busy"),
        ];
        for (cause, code) in codes {
            assert_eq!(serde_json::to_value(cause).ok(), Some(serde_json::Value::from(code)));
        }
        let standings = [
            (Standing::NoSuchDialogue, serde_json::json!("no_such_dialogue")),
            (Standing::Open { state: "s".into() }, serde_json::json!({ "open": { "state": "s" } })),
            (Standing::Closed { state: "s".into() }, serde_json::json!({ "closed": { "state": "s" } })),
        ];
        for (standing, wire) in standings {
            assert_eq!(serde_json::to_value(&standing).ok(), Some(wire.clone()));
            assert_eq!(serde_json::from_value::<Standing>(wire).ok(), Some(standing));
        }
    }
}
