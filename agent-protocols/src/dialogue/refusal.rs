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
    }
}
