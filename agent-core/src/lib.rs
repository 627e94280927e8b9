//! # agent-core: the Agora agent runtime
//!
//! Agents with ed25519 identities exchange typed messages through handlers that are plain
//! async functions. Inside one process a [`Bureau`] delivers messages as typed values, with
//! no serialisation and no signature; when a message leaves the process it travels in a
//! signed [`Envelope`].
//!
//! ```
//! use std::time::Duration;
//! use agent_core::{Address, Agent, Bureau, Context, Message, ReplyError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
//! struct QuoteRequest { flight: String }
//!
//! #[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
//! struct Quote { flight: String, price_cents: u64 }
//!
//! async fn on_request(ctx: Context, _from: Address, req: QuoteRequest) -> Result<(), ReplyError> {
//!     ctx.reply(Quote { flight: req.flight, price_cents: 12_900 }).await
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bureau = Bureau::new()?;
//! let mut airline = Agent::builder("airline").seed("airline demo seed").build()?;
//! airline.on_message(on_request);
//! let airline_address = bureau.add(airline)?;
//!
//! let traveller = bureau.add(Agent::builder("traveller").build()?)?;
//! let ctx = bureau.context(traveller).expect("traveller runs in this bureau");
//! let quote: Quote = ctx
//!     .request(airline_address, QuoteRequest { flight: "LH123".into() }, Duration::from_secs(1))
//!     .await?;
//! assert_eq!(quote.price_cents, 12_900);
//! bureau.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Modules, one concern each: [`identity`] (keys and addresses), [`message`] (typed
//! messages and schema digests), [`envelope`] (the wire format), [`protocol`] (groups of
//! handlers with reply rules), [`agent`], [`context`], [`bureau`], [`storage`], [`wallet`] and [`ledger`] (payments and escrow), [`net`] and [`transport`] (libp2p), [`metrics`] (Prometheus).

extern crate self as agent_core;

pub mod agent;
pub mod bureau;
pub mod context;
mod delivery;
mod digest_map;
pub mod envelope;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod handler;
pub mod identity;
pub mod ledger;
pub mod message;
pub mod metrics;
pub mod net;
pub mod protocol;
mod remote;
mod router;
mod runtime;
pub mod sim;
pub mod storage;
pub mod store;
mod trace;
pub mod transport;
pub mod wallet;

pub use agent::{Acknowledge, Agent, AgentBuilder, AgentError, MailboxConfig, WhenFull};
pub use agent_core_derive::{Message, WireSchema};
pub use bureau::{AgentInfo, Bureau, BureauError, Config, Discovery};
pub use context::{BroadcastReport, Context, DeferredReply};
pub use envelope::{Envelope, EnvelopeError, Header, ReplayGuard, VerifyPolicy};
pub use error::{Cause, Rejection, ReplyError, RequestError, SendError, SendFailure, Unroutable};
pub use handler::HandlerOutput;
pub use identity::{Address, AddressError, Identity, IdentityError, PublicKey};
pub use message::{Message, MessageSchema, ProtocolDigest, SchemaDigest, WireSchema};
pub use protocol::{Manifest, Protocol};
pub use schemars::JsonSchema;
pub use storage::{Storage, StorageError};
pub use wallet::{Wallet, WalletError};
