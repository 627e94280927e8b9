//! Example Agora agents and the demo markets: flight booking ([`flights`]), DeFi
//! arbitrage ([`defi`]), supply chain ([`supply`]), the energy grid ([`grid`]), and what
//! they share ([`market`]); the soak test's agents ([`soak`]).

pub mod defi;
pub mod flights;
pub mod grid;
pub mod market;
pub mod soak;
pub mod supply;

/// The code blocks of `docs/guide.md` and of `README.md`, compiled and run as doc-tests
/// (`cargo test -p agent-examples --doc`, part of `cargo test --workspace`). This crate
/// depends on every other one, so the blocks can use them all. Only `cargo test` builds
/// this module.
#[cfg(doctest)]
pub mod doc_blocks {
    /// `docs/guide.md`.
    #[doc = include_str!("../../docs/guide.md")]
    pub struct Guide;

    /// `README.md`.
    #[doc = include_str!("../../README.md")]
    pub struct Readme;
}

/// The request of the echo node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema, agent_core::Message)]
pub struct Ping(pub u64);

/// The echo node's reply.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema, agent_core::Message)]
pub struct Pong(pub u64);
