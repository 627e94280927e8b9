//! A JSON request/response service and its client over libp2p.
//!
//! One task owns each swarm; handles talk to it over bounded channels. Every call has a
//! deadline (libp2p's request timeout) and ends in exactly one outcome: the response, or an
//! [`RpcError`] that says whether the request may have reached the server.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{self, json, OutboundFailure, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::NetError;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Not delivered: the server could not be dialled.
    #[error("cannot reach {peer}: dial failed")]
    Unreachable {
        /// The server.
        peer: PeerId,
    },
    /// Maybe delivered: no response before the deadline.
    #[error("no response from {peer} within {after:?}; the request may have been handled")]
    Timeout {
        /// The server.
        peer: PeerId,
        /// The deadline.
        after: Duration,
    },
    /// Maybe delivered: the connection closed before the response.
    #[error("connection to {peer} closed before the response; the request may have been handled")]
    ConnectionClosed {
        /// The server.
        peer: PeerId,
    },
    /// Not handled: the server does not speak the protocol, or refused the stream.
    #[error("{peer} refused the request: {reason}")]
    Refused {
        /// The server.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// Not sent: the client's task has stopped.
    #[error("the client has stopped")]
    Stopped,
}

type Handler<Req, Resp> = Arc<dyn Fn(PeerId, Req) -> Pin<Box<dyn Future<Output = Resp> + Send>> + Send + Sync>;

/// A running service. Dropping the handle stops it.
#[derive(Debug)]
pub struct ServerHandle {
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    _stop: oneshot::Sender<()>,
}

impl ServerHandle {
    /// The server's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses it listens on (with the ports actually bound).
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }
}

/// Limits of a service.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Requests handled at once across all peers (default 256).
    pub max_in_flight: usize,
    /// Per-request timeout, also the client's deadline (default 10 s).
    pub request_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits { max_in_flight: 256, request_timeout: Duration::from_secs(10) }
    }
}

/// Serves `protocol` on `listen`, answering each request with `handler`.
pub async fn serve<Req, Resp, F, Fut>(
    protocol: &'static str,
    keypair: libp2p::identity::Keypair,
    listen: &[Multiaddr],
    limits: ServerLimits,
    handler: F,
) -> Result<ServerHandle, NetError>
where
    Req: Serialize + DeserializeOwned + Send + 'static,
    Resp: Serialize + DeserializeOwned + Send + 'static,
    F: Fn(PeerId, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let handler: Handler<Req, Resp> = Arc::new(move |peer, req| Box::pin(handler(peer, req)));
    let config = request_response::Config::default()
        .with_request_timeout(limits.request_timeout)
        .with_max_concurrent_streams(limits.max_in_flight);
    let behaviour =
        json::Behaviour::<Req, Resp>::new([(StreamProtocol::new(protocol), ProtocolSupport::Inbound)], config);
    let mut swarm = super::swarm(keypair, behaviour)?;
    let listen_addrs = super::listen(&mut swarm, listen).await?;
    let peer_id = *swarm.local_peer_id();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let (done_tx, mut done_rx) = mpsc::channel::<(request_response::ResponseChannel<Resp>, Resp)>(limits.max_in_flight);
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                Some((channel, response)) = done_rx.recv() => {
                    // The requester may have gone; its loss is already reported to it.
                    let _ = swarm.behaviour_mut().send_response(channel, response);
                }
                event = swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        peer,
                        message: request_response::Message::Request { request, channel, .. },
                        ..
                    }) => {
                        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                            crate::metrics::quota_refused("rpc_in_flight");
                            tracing::warn!(%peer, "too many requests in flight; dropping one (the client sees a closed stream)");
                            continue;
                        };
                        let handler = Arc::clone(&handler);
                        let done_tx = done_tx.clone();
                        tokio::spawn(async move {
                            let response = handler(peer, request).await;
                            // The node loop ends only at shutdown; a response then has no one to go to.
                            let _ = done_tx.send((channel, response)).await;
                            drop(permit);
                        });
                    }
                    SwarmEvent::Behaviour(request_response::Event::InboundFailure { peer, error, .. }) => {
                        tracing::debug!(%peer, %error, "inbound request failed");
                    }
                    SwarmEvent::IncomingConnectionError { error, .. } => {
                        tracing::debug!(%error, "incoming connection failed");
                    }
                    _ => {}
                },
            }
        }
    });
    Ok(ServerHandle { peer_id, listen_addrs, _stop: stop_tx })
}

struct Call<Req, Resp> {
    request: Req,
    reply: oneshot::Sender<Result<Resp, RpcError>>,
}

/// A client of one service. Cloning is cheap; clones share one connection.
pub struct Client<Req, Resp> {
    calls: mpsc::Sender<Call<Req, Resp>>,
    server: PeerId,
}

impl<Req, Resp> Clone for Client<Req, Resp> {
    fn clone(&self) -> Self {
        Client { calls: self.calls.clone(), server: self.server }
    }
}

impl<Req, Resp> Client<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + 'static,
    Resp: Serialize + DeserializeOwned + Send + 'static,
{
    /// A client of `server` at `addresses`, with a fresh network identity. Connects lazily,
    /// on the first call, and reconnects after failures.
    pub fn new(
        protocol: &'static str,
        server: PeerId,
        addresses: Vec<Multiaddr>,
        timeout: Duration,
    ) -> Result<Self, NetError> {
        let config = request_response::Config::default().with_request_timeout(timeout);
        let behaviour =
            json::Behaviour::<Req, Resp>::new([(StreamProtocol::new(protocol), ProtocolSupport::Outbound)], config);
        let mut swarm = super::swarm(libp2p::identity::Keypair::generate_ed25519(), behaviour)?;
        // Addresses are passed with every request: libp2p forgets an address after a
        // failed dial, and a server that was down must be found again when it is back.
        let (calls_tx, mut calls_rx) = mpsc::channel::<Call<Req, Resp>>(1024);
        tokio::spawn(async move {
            let mut pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Resp, RpcError>>> = HashMap::new();
            loop {
                tokio::select! {
                    call = calls_rx.recv() => match call {
                        Some(call) => {
                            let id = swarm.behaviour_mut().send_request_with_addresses(&server, call.request, addresses.clone());
                            pending.insert(id, call.reply);
                        }
                        None => break,
                    },
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::Behaviour(request_response::Event::Message {
                            message: request_response::Message::Response { request_id, response },
                            ..
                        }) => {
                            if let Some(reply) = pending.remove(&request_id) {
                                // The caller may have stopped waiting (timed out or dropped): then no one is told.
                                let _ = reply.send(Ok(response));
                            }
                        }
                        SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, error, .. }) => {
                            if let Some(reply) = pending.remove(&request_id) {
                                // The caller may have stopped waiting (timed out or dropped): then no one is told.
                                let _ = reply.send(Err(classify(server, error, timeout)));
                            }
                        }
                        _ => {}
                    },
                }
            }
        });
        Ok(Client { calls: calls_tx, server })
    }

    /// Sends `request` and waits for its response (correlated by request id).
    pub async fn call(&self, request: Req) -> Result<Resp, RpcError> {
        let (reply, response) = oneshot::channel();
        self.calls.send(Call { request, reply }).await.map_err(|_| RpcError::Stopped)?;
        response.await.map_err(|_| RpcError::Stopped)?
    }

    /// The server's peer id.
    pub fn server(&self) -> PeerId {
        self.server
    }
}

fn classify(peer: PeerId, error: OutboundFailure, timeout: Duration) -> RpcError {
    match error {
        OutboundFailure::DialFailure => RpcError::Unreachable { peer },
        OutboundFailure::Timeout => RpcError::Timeout { peer, after: timeout },
        OutboundFailure::ConnectionClosed => RpcError::ConnectionClosed { peer },
        OutboundFailure::UnsupportedProtocols => RpcError::Refused { peer, reason: "protocol not supported".into() },
        OutboundFailure::Io(e) => RpcError::Refused { peer, reason: e.to_string() },
    }
}
