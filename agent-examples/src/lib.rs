//! Example Agora agents and the demo markets: flight booking ([`flights`]), DeFi
//! arbitrage ([`defi`]), supply chain ([`supply`]), the energy grid ([`grid`]), and what
//! they share ([`market`]).

pub mod defi;
pub mod flights;
pub mod grid;
pub mod market;
pub mod supply;

/// The request of the echo node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema, agent_core::Message)]
pub struct Ping(pub u64);

/// The echo node's reply.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema, agent_core::Message)]
pub struct Pong(pub u64);
