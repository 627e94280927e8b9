//! Networking building blocks over libp2p (TCP + noise + yamux, and QUIC, or libp2p's
//! in-memory transport with injected faults for tests).
//!
//! [`rpc`] is a request/response service and client with JSON bodies, each request
//! correlated by id and bounded by a deadline; the ledger service uses it.

mod memory;
pub mod rpc;

pub use memory::WireFaults;

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::{noise, tcp, yamux, Swarm};

/// Why a network node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The libp2p transport could not be built.
    #[error("cannot build the libp2p transport: {0}")]
    Transport(String),
    /// A listen address is malformed or could not be bound.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The node's task has stopped.
    #[error("the network node has stopped")]
    Stopped,
}

/// A libp2p identity derived from a secret phrase, so a node keeps its peer id across
/// restarts. Keep the phrase secret: it is the node's private key.
pub fn node_keypair(seed: &str) -> libp2p::identity::Keypair {
    use sha2::{Digest, Sha256};
    let mut secret: [u8; 32] =
        Sha256::new().chain_update(b"agora.node.v1").chain_update(seed.as_bytes()).finalize().into();
    // 32 bytes are always a valid ed25519 secret key.
    libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)
        .unwrap_or_else(|_| libp2p::identity::Keypair::generate_ed25519())
}

/// Builds a swarm with TCP (noise, yamux) and QUIC for `behaviour`; a connection with no
/// stream open closes after 60 s.
pub fn swarm<B: NetworkBehaviour>(keypair: libp2p::identity::Keypair, behaviour: B) -> Result<Swarm<B>, NetError> {
    swarm_with_idle_timeout(keypair, behaviour, Duration::from_secs(60))
}

/// [`swarm`], with connections that have no stream open closed after `idle`.
pub fn swarm_with_idle_timeout<B: NetworkBehaviour>(
    keypair: libp2p::identity::Keypair,
    behaviour: B,
    idle: Duration,
) -> Result<Swarm<B>, NetError> {
    let transport_error = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    Ok(libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| transport_error(&e))?
        .with_quic()
        .with_behaviour(|_| behaviour)
        .map_err(|e| transport_error(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build())
}

/// A swarm for `behaviour` over libp2p's in-memory transport (`/memory/N` addresses), with
/// noise and yamux as over TCP, and every raw connection under `faults`; a connection with
/// no stream open closes after `idle`. No socket is opened.
pub fn swarm_over_memory<B: NetworkBehaviour>(
    keypair: libp2p::identity::Keypair,
    behaviour: B,
    idle: Duration,
    faults: WireFaults,
) -> Result<Swarm<B>, NetError> {
    use libp2p::core::transport::MemoryTransport;
    use libp2p::core::upgrade::Version;
    use libp2p::Transport as _;
    let transport_error = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    Ok(libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            Ok(MemoryTransport::default()
                .map(move |connection, _| memory::FaultyConnection::new(connection, faults))
                .upgrade(Version::V1)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .map_err(|e| transport_error(&e))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| transport_error(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build())
}

/// Listens on `addresses` and waits (up to 5 s) to learn the bound addresses.
///
/// An address that cannot be bound gives [`NetError::Listen`] naming it and the operating
/// system's cause (for example `Address already in use (os error 98)`).
pub async fn listen<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    addresses: &[libp2p::Multiaddr],
) -> Result<Vec<libp2p::Multiaddr>, NetError> {
    use futures::StreamExt;
    let mut listeners = Vec::with_capacity(addresses.len());
    for address in addresses {
        // The transport error displays as nothing when the cause is an I/O error; its
        // sources name it.
        let id = swarm
            .listen_on(address.clone())
            .map_err(|e| NetError::Listen { address: address.to_string(), reason: crate::error::chain(&e) })?;
        listeners.push((id, address));
    }
    let address_of = |id: libp2p::core::transport::ListenerId| match listeners.iter().find(|(l, _)| *l == id) {
        Some((_, address)) => address.to_string(),
        None => list(addresses),
    };
    let mut bound = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while bound.len() < addresses.len() {
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(libp2p::swarm::SwarmEvent::NewListenAddr { address, .. }) => bound.push(address),
            Ok(libp2p::swarm::SwarmEvent::ListenerError { listener_id, error }) => {
                return Err(NetError::Listen { address: address_of(listener_id), reason: crate::error::chain(&error) });
            }
            Ok(libp2p::swarm::SwarmEvent::ListenerClosed { listener_id, reason: Err(error), .. }) => {
                return Err(NetError::Listen { address: address_of(listener_id), reason: crate::error::chain(&error) });
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if bound.is_empty() {
        return Err(NetError::Listen { address: list(addresses), reason: "no address was bound within 5 s".into() });
    }
    Ok(bound)
}

/// `addresses` for a message: separated by ", ".
fn list(addresses: &[libp2p::Multiaddr]) -> String {
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
