//! Example Agora agents and the demo markets: flight booking ([`flights`]), DeFi
//! arbitrage ([`defi`]), supply chain ([`supply`]), the energy grid ([`grid`]), and what
//! they share ([`market`]); the soak test's agents ([`soak`]).

pub mod defi;
pub mod flights;
pub mod grid;
pub mod market;
pub mod soak;
pub mod supply;

/// Logs to stderr, so stdout stays the program's output (tables, `--json`): warnings and
/// above unless `RUST_LOG` says otherwise. Every binary here calls it first.
pub fn log_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
}

use std::net::SocketAddr;

use agent_core::metrics::{self, MetricsError, MetricsServer};

/// The `--metrics-addr` flag of every binary here (`docs/metrics.md`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (for example 127.0.0.1:9100; port 0
    /// picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Serves metrics on the runtime this is called in, if an address was given. For a
    /// binary that runs one runtime for its whole life.
    pub async fn serve(&self) -> Result<Option<MetricsServer>, MetricsError> {
        metrics::serve_if(self.metrics_addr).await
    }

    /// Serves metrics on a thread of their own for the rest of the process, if an address
    /// was given; returns the address bound. For a binary that starts and ends runtimes
    /// (the demos run simulations on a paused clock, which must not drive a server).
    pub fn serve_in_background(&self) -> anyhow::Result<Option<SocketAddr>> {
        let Some(addr) = self.metrics_addr else { return Ok(None) };
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("metrics".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    // The caller waits for this answer; if it has gone, no one is left to tell.
                    let _ = bound_tx.send(Err(anyhow::Error::new(err).context("cannot start the metrics runtime")));
                    return;
                }
            };
            runtime.block_on(async move {
                match metrics::serve(addr).await {
                    // As above: a caller that has gone needs no answer.
                    Ok(server) => {
                        let _ = bound_tx.send(Ok(server.local_addr()));
                        // Served until the process ends.
                        std::future::pending::<()>().await;
                        drop(server);
                    }
                    Err(err) => {
                        let _ = bound_tx.send(Err(err.into()));
                    }
                }
            });
        })?;
        match bound_rx.recv() {
            Ok(bound) => bound.map(Some),
            Err(_) => Err(anyhow::anyhow!("the metrics thread ended before it served")),
        }
    }
}

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
