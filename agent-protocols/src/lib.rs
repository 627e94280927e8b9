//! Agora's negotiation protocols.
//!
//! [`dialogue`] is the ground they stand on, and how you write your own: declare a
//! dialogue's rules once, and every message in or out is checked against them.
//!
//! ```
//! use agent_core::{Agent, Bureau, Message};
//! use agent_protocols::dialogue::{DialogueError, Dialogues, Rules};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, schemars::JsonSchema, Message)]
//! struct Ask(String);
//! #[derive(Serialize, Deserialize, schemars::JsonSchema, Message)]
//! struct Answer(String);
//! #[derive(Serialize, Deserialize, schemars::JsonSchema, Message)]
//! struct Decline;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // asker: Ask; then the answerer: Answer or Decline, and the dialogue is over.
//! let rules = Rules::builder("ask")
//!     .initial("start")
//!     .step::<Ask>("start", "asker", "asked")
//!     .step::<Answer>("asked", "answerer", "answered")
//!     .step::<Decline>("asked", "answerer", "declined")
//!     .terminal("answered")
//!     .terminal("declined")
//!     .build()?;
//!
//! let bureau = Bureau::new()?;
//! let asker = bureau.add(Agent::builder("asker").build()?)?;
//! let answerer = bureau.add(Agent::builder("answerer").build()?)?;
//! let storage = bureau.context(answerer).unwrap().storage()?;
//! let dialogues = Dialogues::load(rules, "answerer", storage)?;
//!
//! let now = 1_000;
//! dialogues.incoming::<Ask>(7, asker, now)?; // opens dialogue 7
//! dialogues.outgoing::<Decline>(7, now)?; // closes it
//! let late = dialogues.outgoing::<Answer>(7, now);
//! assert!(matches!(late, Err(DialogueError::Closed { .. })), "nothing follows a decline");
//! # bureau.shutdown().await?;
//! # Ok(())
//! # }
//! ```

pub mod auction;
mod bidding;
pub mod contract_net;
pub mod dialogue;
pub mod double_auction;
pub mod dutch;
pub mod english;
mod inbox;
pub mod sealed_bid;
pub mod settlement;
/// Scored subnets: Yuma Consensus as a pure function, and subnets of miners, validators and
/// an owner over messages, with commit-reveal weights and emissions paid through the ledger.
pub mod subnet;
mod work;
