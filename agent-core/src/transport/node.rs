//! The swarm task: owns the libp2p swarm, dials on request, enforces connection limits.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{Endpoint, Network, NetworkConfig, PROTOCOL};
use crate::envelope::ReplayGuard;
use crate::net::NetError;

/// A running node's identity and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// The node's libp2p peer id.
    pub peer_id: PeerId,
    /// The addresses it listens on, with the ports actually bound.
    pub listen_addrs: Vec<Multiaddr>,
}

/// What a running node holds open right now, to tell a leak from a load: each figure
/// should return to its idle value once traffic stops and broken peers are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct NetworkStats {
    /// Established libp2p connections, both ways.
    pub connections: usize,
    /// Outbound links (one per peer sent to, each with its queue and stream task).
    pub links: usize,
    /// Requests sent from here still waiting for a reply from another process.
    pub pending_requests: usize,
}

/// Connections from one peer, at most: one each way, and room for a redial racing the
/// close of a broken one.
const MAX_CONNECTIONS_PER_PEER: u32 = 4;

/// The node's behaviour: envelope streams, under connection limits.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Behaviour {
    limits: connection_limits::Behaviour,
    streams: libp2p_stream::Behaviour,
}

pub(crate) enum Command {
    Dial { peer: PeerId, addrs: Vec<Multiaddr>, reply: oneshot::Sender<Result<(), String>> },
    Disconnect(PeerId),
}

/// Starts the swarm and returns the node.
pub(crate) async fn start(
    config: NetworkConfig,
    state: Option<crate::store::WriteBehind>,
) -> Result<(Arc<Network>, libp2p_stream::IncomingStreams, watch::Receiver<bool>, super::tasks::Ended), NetError> {
    let ceiling = super::ceiling::Ceiling::load(state)
        .map_err(|err| NetError::Transport(format!("cannot read the node's state: {}", crate::error::chain(&err))))?;
    // Restarted right after a crash: let the clock pass what the last run may have
    // accepted, so fresh envelopes are not refused as possibly handled.
    tokio::time::sleep(ceiling.wait_before_accepting()).await;
    let keypair = config.keypair.clone().unwrap_or_else(libp2p::identity::Keypair::generate_ed25519);
    let streams = libp2p_stream::Behaviour::new();
    let mut control = streams.new_control();
    let incoming = control
        .accept(StreamProtocol::new(PROTOCOL))
        .map_err(|_| NetError::Transport("the envelope protocol is already registered".into()))?;
    // Denied before the handshake where possible (pending), else as soon as established.
    let limits = ConnectionLimits::default()
        .with_max_pending_incoming(Some(config.max_connections))
        .with_max_established_incoming(Some(config.max_connections))
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
    let behaviour = Behaviour { limits: connection_limits::Behaviour::new(limits), streams };
    // Streams keep their connections open; this closes the connections nobody uses.
    let unused = config.unused_connection_timeout.min(config.idle_timeout);
    let mut swarm = match &config.memory {
        Some(faults) => crate::net::swarm_over_memory(keypair, behaviour, unused, faults.clone())?,
        None => crate::net::swarm_with_idle_timeout(keypair, behaviour, unused)?,
    };
    let listen_addrs = crate::net::listen(&mut swarm, &config.listen).await?;
    let info = NetworkInfo { peer_id: *swarm.local_peer_id(), listen_addrs };
    let (commands, commands_rx) = mpsc::channel(256);
    let (stop, stop_rx) = watch::channel(false);
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (tasks, ended) = super::tasks::tasks(run(swarm, commands_rx, stop_rx.clone(), Arc::clone(&connections)));
    let network = Arc::new(Network {
        info,
        control,
        commands,
        links: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        replay: Mutex::new(ReplayGuard::with_capacity(config.replay_capacity)),
        awaiting_first: Mutex::new(HashMap::new()),
        awaiting_count: Default::default(),
        lines: Default::default(),
        ceiling,
        bindings: Mutex::new(HashMap::new()),
        learned: Mutex::new(HashMap::new()),
        stop,
        config,
        connections,
        tasks,
    });
    let keeper = Arc::clone(&network);
    let keeper_stop = stop_rx.clone();
    network.tasks.spawn(async move { keeper.ceiling.keep_ahead(keeper_stop).await });
    Ok((network, incoming, stop_rx, ended))
}

async fn run(
    mut swarm: libp2p::Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    let mut waiting: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            command = commands.recv() => match command {
                None => break,
                Some(Command::Dial { peer, addrs, reply }) => {
                    if swarm.is_connected(&peer) {
                        // A dialer that stopped waiting needs no answer.
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    let opts = DialOpts::peer_id(peer).addresses(addrs).condition(PeerCondition::DisconnectedAndNotDialing).build();
                    match swarm.dial(opts) {
                        Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => waiting.entry(peer).or_default().push(reply),
                        Err(err) => {
                            // A dialer that stopped waiting needs no answer.
                            let _ = reply.send(Err(err.to_string()));
                        }
                    }
                }
                Some(Command::Disconnect(peer)) => {
                    // Err means the peer is not connected: already what was asked.
                    let _ = swarm.disconnect_peer_id(peer);
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    connections.fetch_add(1, Ordering::Relaxed);
                    for reply in waiting.remove(&peer_id).unwrap_or_default() {
                        // A caller that stopped waiting needs no answer.
                        let _ = reply.send(Ok(()));
                    }
                }
                SwarmEvent::ConnectionClosed { .. } => {
                    connections.fetch_sub(1, Ordering::Relaxed);
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } if !swarm.is_connected(&peer) => {
                    for reply in waiting.remove(&peer).unwrap_or_default() {
                        // A caller that stopped waiting needs no answer.
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
                SwarmEvent::IncomingConnectionError { error, send_back_addr, .. } => {
                    if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                        tracing::warn!(%send_back_addr, %error, "connection limit reached; refused a connection");
                    } else {
                        tracing::debug!(%send_back_addr, %error, "incoming connection failed");
                    }
                }
                _ => {}
            },
        }
    }
}

/// Connects to `endpoint` and opens an envelope stream, before `deadline`.
pub(crate) async fn connect(net: &Network, endpoint: &Endpoint, deadline: Instant) -> Result<libp2p::Stream, String> {
    let (reply, connected) = oneshot::channel();
    let dial = Command::Dial { peer: endpoint.peer_id, addrs: endpoint.addrs.clone(), reply };
    net.commands.send(dial).await.map_err(|_| "the network node has stopped".to_owned())?;
    match tokio::time::timeout_at(deadline, connected).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(reason))) => return Err(reason),
        Ok(Err(_)) => return Err("the network node has stopped".into()),
        Err(_) => return Err("connecting timed out".into()),
    }
    let mut control = net.control.clone();
    match tokio::time::timeout_at(deadline, control.open_stream(endpoint.peer_id, StreamProtocol::new(PROTOCOL))).await
    {
        Ok(Ok(stream)) => Ok(stream),
        // A node at its connection limit accepts the handshake, then closes the connection.
        Ok(Err(err)) => Err(format!(
            "the connection closed before a stream opened (the peer may be at its connection limit): {err}"
        )),
        Err(_) => {
            // The connection carries nothing the peer answers (dead one way, or black-holed
            // after it opened): close it, so that the next attempt dials a fresh one rather
            // than waiting on this one again. (If the node has stopped, its connections are
            // gone with it: nothing is left to close.)
            let _ = net.commands.send(Command::Disconnect(endpoint.peer_id)).await;
            Err("opening the stream timed out".into())
        }
    }
}
