//! The libp2p transport's reliability over libp2p's in-memory transport, with faults
//! injected under noise and yamux (`agent_core::net::WireFaults`): no socket is opened.
//! Acknowledgements, resends on a new connection, the replay guard and session bindings
//! are the real ones; connections break, go silent and lag on a seeded schedule.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::{unix_now_ms, Header};
use agent_core::net::WireFaults;
use agent_core::transport::{Auth, Endpoint, NetworkConfig, Outcome, StaticResolver};
use agent_core::{Address, Agent, Bureau, Cause, Context, Envelope, Identity, Message, ReplyError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ping(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Pong(u64);

/// How many times the receiver handled each number.
type Handled = Arc<parking_lot::Mutex<BTreeMap<u64, usize>>>;

struct Pair {
    client: Bureau,
    server: Bureau,
    client_agent: Address,
    server_agent: Address,
    handled: Handled,
}

/// A client and a server bureau over the memory transport, each node's connections under
/// its own faults. The server answers requests and counts every message it handles.
async fn pair(auth: Auth, client_faults: WireFaults, server_faults: WireFaults) -> Pair {
    let resolver = Arc::new(StaticResolver::new());
    let handled: Handled = Arc::default();
    let server = Bureau::new().unwrap();
    let mut ponger = Agent::builder("ponger").seed("memory ponger").build().unwrap();
    {
        let handled = handled.clone();
        ponger.on_message(move |ctx: Context, _from: Address, Ping(n): Ping| {
            let handled = handled.clone();
            async move {
                *handled.lock().entry(n).or_default() += 1;
                if ctx.is_request() {
                    ctx.reply(Pong(n)).await?;
                }
                Ok::<_, ReplyError>(())
            }
        });
    }
    ponger.on_message(|_ctx: Context, _from: Address, _pong: Pong| async {});
    let server_agent = server.add(ponger).unwrap();
    // Heartbeats every 100 ms: a silent connection is noticed after 300 ms.
    let config = |faults: WireFaults| {
        NetworkConfig::new(vec!["/memory/0".parse().unwrap()], resolver.clone())
            .with_auth(auth)
            .with_heartbeat(Duration::from_millis(100))
            .with_delivery_timeout(Duration::from_secs(10))
            .over_memory(faults)
    };
    let info = server.listen(config(server_faults)).await.unwrap();
    assert!(info.listen_addrs.iter().all(|a| a.to_string().starts_with("/memory/")), "{:?}", info.listen_addrs);
    resolver.insert(server_agent, Endpoint { peer_id: info.peer_id, addrs: info.listen_addrs });

    let client = Bureau::new().unwrap();
    let client_agent = client.add(Agent::builder("pinger").seed("memory pinger").build().unwrap()).unwrap();
    let info = client.listen(config(client_faults)).await.unwrap();
    resolver.insert(client_agent, Endpoint { peer_id: info.peer_id, addrs: info.listen_addrs });
    Pair { client, server, client_agent, server_agent, handled }
}

impl Pair {
    fn ctx(&self) -> Context {
        self.client.context(self.client_agent).unwrap()
    }

    async fn shutdown(self) {
        self.client.shutdown().await.unwrap();
        self.server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn requests_and_sends_cross_the_memory_transport_in_both_authentication_modes() {
    for auth in [Auth::Bound, Auth::Signed] {
        let faults = WireFaults::none().delay(Duration::from_millis(1));
        let p = pair(auth, faults.clone(), WireFaults::none()).await;
        let ctx = p.ctx();
        for n in 0..20 {
            let pong: Pong = ctx.request(p.server_agent, Ping(n), Duration::from_secs(10)).await.unwrap();
            assert_eq!(pong, Pong(n));
        }
        ctx.send(p.server_agent, Ping(100)).await.unwrap();
        assert!(faults.writes() > 20, "every frame went through the wrapper: {faults:?}");
        p.shutdown().await;
    }
}

/// Connections break on a seeded schedule in both directions, losing frames and
/// acknowledgements with them: every send still ends delivered (resent on a new
/// connection with the same nonce), and the receiver handles each message exactly once
/// (a copy whose first was handled is answered from the replay guard).
#[tokio::test]
async fn sends_over_connections_that_keep_breaking_are_delivered_and_handled_once() {
    let seed = 11;
    let client_faults = WireFaults::seeded(seed).loss(0.04);
    let server_faults = WireFaults::seeded(seed + 1).loss(0.04);
    let p = pair(Auth::Bound, client_faults.clone(), server_faults.clone()).await;
    let ctx = p.ctx();
    for n in 0..150 {
        ctx.send(p.server_agent, Ping(n)).await.unwrap_or_else(|e| panic!("send {n}: {e} ({client_faults:?})"));
    }
    let cuts = client_faults.cuts() + server_faults.cuts();
    assert!(cuts >= 3, "the faults really broke connections: {client_faults:?} {server_faults:?}");
    let handled = p.handled.lock().clone();
    assert_eq!(handled.len(), 150, "each delivered send was handled");
    assert!(handled.values().all(|&times| times == 1), "none twice: {handled:?}");
    p.shutdown().await;
}

/// The server's acknowledgement is lost with its connection right after the message got
/// through: the client resends on a new connection and is answered from the replay guard
/// with the first copy's verdict, so the send ends delivered and the handler ran once.
#[tokio::test]
async fn a_lost_acknowledgement_is_answered_from_the_replay_guard_on_a_new_connection() {
    let server_faults = WireFaults::none();
    let p = pair(Auth::Bound, WireFaults::none(), server_faults.clone()).await;
    let ctx = p.ctx();
    ctx.send(p.server_agent, Ping(1)).await.expect("connected and bound");
    // The server's next write on the wire is the acknowledgement of the next envelope.
    server_faults.cut_next_write();
    ctx.send(p.server_agent, Ping(2)).await.expect("resent after the lost acknowledgement");
    assert_eq!(server_faults.cuts(), 1);
    let pong: Pong = ctx.request(p.server_agent, Ping(3), Duration::from_secs(10)).await.unwrap();
    assert_eq!(pong, Pong(3));
    assert_eq!(*p.handled.lock(), BTreeMap::from([(1, 1), (2, 1), (3, 1)]), "each handled once");
    p.shutdown().await;
}

/// A connection goes silent one way (frames vanish, nothing breaks): heartbeats notice, a
/// new connection is opened, and the envelope that vanished is resent and delivered.
#[tokio::test]
async fn a_frame_lost_on_a_silent_connection_is_resent_on_a_new_one() {
    let client_faults = WireFaults::none();
    let p = pair(Auth::Bound, client_faults.clone(), WireFaults::none()).await;
    let ctx = p.ctx();
    ctx.send(p.server_agent, Ping(1)).await.expect("connected and bound");
    client_faults.silence_next_write();
    let started = tokio::time::Instant::now();
    ctx.send(p.server_agent, Ping(2)).await.expect("resent on a new connection");
    assert_eq!(client_faults.silenced(), 1);
    assert!(started.elapsed() < Duration::from_secs(10), "well within the deadline: {:?}", started.elapsed());
    assert_eq!(*p.handled.lock(), BTreeMap::from([(1, 1), (2, 1)]));
    p.shutdown().await;
}

/// Every connection is cut between requests: the next request reconnects (and binds its
/// session again) without failing.
#[tokio::test]
async fn requests_go_on_after_every_connection_is_cut() {
    let client_faults = WireFaults::none();
    let p = pair(Auth::Bound, client_faults.clone(), WireFaults::none()).await;
    let ctx = p.ctx();
    for n in 0..5 {
        let pong: Pong = ctx.request(p.server_agent, Ping(n), Duration::from_secs(10)).await.unwrap();
        assert_eq!(pong, Pong(n));
        client_faults.cut_all();
    }
    assert!(client_faults.cuts() >= 4, "{client_faults:?}");
    p.shutdown().await;
}

/// Over a lagging link, replayed envelopes are answered with their first verdict and
/// forged ones refused, and the legitimate exchange goes on.
#[tokio::test]
async fn replayed_and_forged_envelopes_are_refused_over_a_lagging_link() {
    let faults = WireFaults::seeded(3).delay(Duration::from_millis(3));
    let p = pair(Auth::Bound, faults, WireFaults::none()).await;
    let pinger = Identity::from_seed("memory pinger");
    let now = unix_now_ms();
    let genuine = Envelope::seal(&pinger, p.server_agent, &Ping(40), Header::default(), now, 60_000).unwrap();
    assert_eq!(p.client.forward(&genuine, Duration::from_secs(5)).await.unwrap(), Outcome::Delivered);
    assert_eq!(p.client.forward(&genuine, Duration::from_secs(5)).await.unwrap(), Outcome::Delivered, "a replay");
    let mut tampered = Envelope::seal(&pinger, p.server_agent, &Ping(41), Header::default(), now, 60_000).unwrap();
    tampered.payload = b"[666]".to_vec();
    let outcome = p.client.forward(&tampered, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(&outcome, Outcome::Rejected(r) if r.cause == Cause::BadSignature), "{outcome:?}");
    let pong: Pong = p.ctx().request(p.server_agent, Ping(42), Duration::from_secs(5)).await.unwrap();
    assert_eq!(pong, Pong(42));
    assert_eq!(*p.handled.lock(), BTreeMap::from([(40, 1), (42, 1)]), "the replay was not handled again");
    p.shutdown().await;
}
