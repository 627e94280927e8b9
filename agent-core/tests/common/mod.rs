//! Helpers shared by the network tests: bare libp2p peers speaking frames by hand, and
//! bureaus serving one agent.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use agent_core::transport::{Endpoint, NetworkConfig, StaticResolver};
use agent_core::{Address, Agent, Bureau, Context};

/// A bare libp2p client that opens the envelope stream and writes whatever it is given.
pub async fn raw_stream(server: &agent_core::transport::NetworkInfo) -> (libp2p::Stream, libp2p::PeerId) {
    let (mut control, me) = raw_peer(server);
    (open_raw(&mut control, server).await, me)
}

pub async fn open_raw(
    control: &mut libp2p_stream::Control,
    server: &agent_core::transport::NetworkInfo,
) -> libp2p::Stream {
    let protocol = libp2p::StreamProtocol::new(agent_core::transport::PROTOCOL);
    tokio::time::timeout(Duration::from_secs(10), control.open_stream(server.peer_id, protocol)).await.unwrap().unwrap()
}

/// A bare libp2p peer dialing `server`, for opening envelope streams by hand.
pub fn raw_peer(server: &agent_core::transport::NetworkInfo) -> (libp2p_stream::Control, libp2p::PeerId) {
    use futures::StreamExt;
    let behaviour = libp2p_stream::Behaviour::new();
    let control = behaviour.new_control();
    let mut swarm = agent_core::net::swarm(libp2p::identity::Keypair::generate_ed25519(), behaviour).unwrap();
    let me = *swarm.local_peer_id();
    let addr = server.listen_addrs[0].clone().with(libp2p::multiaddr::Protocol::P2p(server.peer_id));
    swarm.dial(addr).unwrap();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (control, me)
}

pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(tag);
    out.extend_from_slice(body);
    out
}

pub async fn closed_within(stream: &mut libp2p::Stream, limit: Duration) -> bool {
    use futures::AsyncReadExt;
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A bureau listening on TCP loopback with `agent`, configured by `configure`, and a
/// resolver that knows where the agent is.
pub async fn serve_one(
    agent: Agent,
    configure: impl FnOnce(NetworkConfig) -> NetworkConfig,
) -> (Bureau, Address, Arc<StaticResolver>) {
    let resolver = Arc::new(StaticResolver::new());
    let server = Bureau::new().unwrap();
    let address = server.add(agent).unwrap();
    let config = configure(NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver.clone()));
    let info = server.listen(config).await.unwrap();
    resolver.insert(address, Endpoint { peer_id: info.peer_id, addrs: info.listen_addrs });
    (server, address, resolver)
}

/// A bureau with one agent of its own, listening on TCP loopback with `resolver`.
pub async fn client_of(resolver: &Arc<StaticResolver>, name: &str) -> (Bureau, Context) {
    let bureau = Bureau::new().unwrap();
    let me = bureau.add(Agent::builder(name).build().unwrap()).unwrap();
    let config = NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver.clone())
        .with_delivery_timeout(Duration::from_secs(2));
    bureau.listen(config).await.unwrap();
    let ctx = bureau.context(me).unwrap();
    (bureau, ctx)
}

/// Writes `envelope` as a signed envelope frame with sequence number `seq`.
pub async fn write_envelope(stream: &mut libp2p::Stream, seq: u64, envelope: &agent_core::Envelope) {
    use futures::AsyncWriteExt;
    let mut body = seq.to_be_bytes().to_vec();
    body.push(0); // signed
    body.extend_from_slice(&envelope.encode());
    stream.write_all(&frame(2, &body)).await.unwrap();
    stream.flush().await.unwrap();
}

/// A verdict read off the wire: `None` for delivered, else the rejection's cause.
pub type WireVerdict = Option<agent_core::Cause>;

/// Reads frames until the acknowledgement of `seq` (skipping others), for at most 10 s.
pub async fn read_ack(stream: &mut libp2p::Stream, seq: u64) -> WireVerdict {
    use futures::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for _ in 0..1000 {
        let mut len = [0u8; 4];
        tokio::time::timeout_at(deadline, stream.read_exact(&mut len)).await.expect("an ack in time").unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        tokio::time::timeout_at(deadline, stream.read_exact(&mut body)).await.expect("an ack in time").unwrap();
        if body[0] != 3 || body[1..9] != seq.to_be_bytes() {
            continue;
        }
        return match body[9] {
            0 => None,
            1 => Some(agent_core::Cause::from_code(body[10])),
            other => panic!("unknown verdict {other}"),
        };
    }
    panic!("no ack for {seq}")
}

/// Waits (bounded: 10 s) until `condition` holds.
pub async fn until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}
