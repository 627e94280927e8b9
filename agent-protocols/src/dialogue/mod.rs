//! Dialogues: conversations with a declared state machine.
//!
//! A dialogue is one conversation between two agents under one kind of [`Rules`]: its id
//! is the session its messages travel in ([`Context::send_in`](agent_core::Context::send_in),
//! [`Context::session`](agent_core::Context::session)), each party plays a role, and the
//! rules say which message may follow which, who may send it, where the dialogue ends and
//! how long each state may last.
//!
//! [`Dialogues`] checks every message in and out against the rules before it counts. A
//! message out of order, from the wrong role, from someone who is not a party, after a
//! deadline or after the dialogue closed is refused with a [`DialogueError`] and changes
//! nothing; [`DialogueError::refusal`] is what to send back, naming the dialogue, its state,
//! what was expected and why, as a [`RefusalCause`] a program can act on. A terminal state closes the dialogue for good. Each step is kept
//! in the agent's storage, so a restarted agent resumes its dialogues; [`Dialogues::expire`]
//! closes dialogues whose deadline passed and forgets old ones.
//!
//! [`Checked`] makes the check impossible to forget: it is the
//! [`Guard`](agent_core::protocol::Guard) of a protocol of one's own
//! ([`Checked::protocol`]), so the runtime checks every step in (before any handler runs;
//! a refusal is answered) and out (whatever send path; a refused send fails with
//! [`SendFailure::Refused`](agent_core::SendFailure::Refused)). Its manifest publishes the
//! rules ([`Rules::state_machine`]), so its digest covers them. The example
//! `examples/own_protocol.rs` declares a protocol of its own this way.

mod book;
mod checked;
mod name;
mod refusal;
mod rules;

pub use book::{Data, Dialogue, DialogueError, Dialogues, Refused, Said, Step, DEFAULT_MAX_OPEN_PER_PEER, EXPIRED};
pub use checked::Checked;
pub use name::Name;
pub use refusal::{RefusalCause, Standing};
pub use rules::{Rules, RulesBuilder, RulesError, Transition, DEFAULT_MAX_AGE};
