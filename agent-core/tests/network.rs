//! Two bureaus talking over libp2p on loopback: request/reply in both authentication modes
//! and on TCP and QUIC; forged, replayed and misbound envelopes are refused while the
//! legitimate exchange goes on.

use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::{unix_now_ms, Header};
use agent_core::transport::{Auth, Binding, Endpoint, NetworkConfig, Outcome, StaticResolver};
use agent_core::{
    Address, Agent, Bureau, Cause, Context, Envelope, Identity, Message, ReplyError, RequestError, SendFailure,
};
use serde::{Deserialize, Serialize};

mod common;
use common::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ping(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Pong(u64);

async fn on_ping(ctx: Context, _from: Address, Ping(n): Ping) -> Result<(), ReplyError> {
    ctx.reply(Pong(n)).await
}

/// Asks the ponger for something its handler refuses with an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Refuse(String);

async fn on_refuse(_ctx: Context, _from: Address, Refuse(what): Refuse) -> Result<(), String> {
    Err(format!("will not {what}"))
}

struct Pair {
    client: Bureau,
    server: Bureau,
    client_agent: Address,
    server_agent: Address,
    resolver: Arc<StaticResolver>,
}

async fn pair(listen: &str, auth: Auth) -> Pair {
    let resolver = Arc::new(StaticResolver::new());
    let server = Bureau::new().unwrap();
    let mut ponger = Agent::builder("ponger").seed("net ponger").build().unwrap();
    ponger.on_message(on_ping);
    ponger.on_message(on_refuse);
    ponger.on_message(|_ctx: Context, _from: Address, _p: Pong| async {});
    let server_agent = server.add(ponger).unwrap();
    let config = |r: Arc<StaticResolver>| NetworkConfig::new(vec![listen.parse().unwrap()], r).with_auth(auth);
    let server_info = server.listen(config(resolver.clone())).await.unwrap();
    resolver.insert(server_agent, Endpoint { peer_id: server_info.peer_id, addrs: server_info.listen_addrs.clone() });

    let client = Bureau::new().unwrap();
    let client_agent = client.add(Agent::builder("pinger").seed("net pinger").build().unwrap()).unwrap();
    let client_info = client.listen(config(resolver.clone())).await.unwrap();
    resolver.insert(client_agent, Endpoint { peer_id: client_info.peer_id, addrs: client_info.listen_addrs });
    Pair { client, server, client_agent, server_agent, resolver }
}

async fn exchange(listen: &str, auth: Auth) {
    let p = pair(listen, auth).await;
    let ctx = p.client.context(p.client_agent).unwrap();
    for n in 0..50 {
        let pong: Pong = ctx.request(p.server_agent, Ping(n), Duration::from_secs(10)).await.unwrap();
        assert_eq!(pong, Pong(n));
    }
    // A plain send, acknowledged once it is in the remote agent's mailbox.
    ctx.send(p.server_agent, Pong(99)).await.unwrap();
    p.client.shutdown().await.unwrap();
    p.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_reply_over_tcp_with_session_binding() {
    exchange("/ip4/127.0.0.1/tcp/0", Auth::Bound).await;
}

#[tokio::test]
async fn request_reply_over_quic_with_signatures() {
    exchange("/ip4/127.0.0.1/udp/0/quic-v1", Auth::Signed).await;
}

#[tokio::test]
async fn unroutable_and_rejected_sends_say_why() {
    let p = pair("/ip4/127.0.0.1/tcp/0", Auth::Bound).await;
    let ctx = p.client.context(p.client_agent).unwrap();
    let stranger = Identity::from_seed("stranger").address();
    let err = ctx.send(stranger, Ping(1)).await.unwrap_err();
    assert_eq!(
        err.failure(),
        &SendFailure::Unroutable { to: stranger, reason: agent_core::Unroutable::UnknownAddress }
    );
    // Routed to the server's node, but no such agent lives there.
    let server_peer = p.server.network_info().unwrap();
    p.resolver.insert(stranger, Endpoint { peer_id: server_peer.peer_id, addrs: server_peer.listen_addrs });
    match ctx.send(stranger, Ping(1)).await.unwrap_err().failure() {
        SendFailure::Rejected { rejection, .. } => assert_eq!(rejection.cause, Cause::NoHandler, "{rejection}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    // A message type the remote agent does not handle.
    #[derive(Serialize, Deserialize, schemars::JsonSchema, Message)]
    struct Unhandled;
    match ctx.send(p.server_agent, Unhandled).await.unwrap_err().failure() {
        SendFailure::Rejected { rejection, .. } => {
            assert_eq!(rejection.cause, Cause::NoHandler);
            assert!(rejection.detail.contains("schema"), "{rejection}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // A handler error travels back to the remote requester, with the handler's words.
    let refused = Refuse("lend money".into());
    match ctx.request::<Refuse, Pong>(p.server_agent, refused, Duration::from_secs(5)).await.unwrap_err() {
        RequestError::HandlerFailed { reason, .. } => assert!(reason.contains("will not lend money"), "{reason}"),
        other => panic!("expected HandlerFailed, got {other:?}"),
    }
    // A reply of another type than the one awaited is reported as such.
    let err = ctx.request::<Ping, Ping>(p.server_agent, Ping(1), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, RequestError::WrongReplyType { .. }), "{err:?}");
    p.client.shutdown().await.unwrap();
    p.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn forged_and_replayed_envelopes_are_rejected_and_the_exchange_goes_on() {
    let p = pair("/ip4/127.0.0.1/tcp/0", Auth::Bound).await;
    let ctx = p.client.context(p.client_agent).unwrap();
    let pinger = Identity::from_seed("net pinger");
    let now = unix_now_ms();
    let header = Header::default();

    // A genuine signed envelope is delivered once; a copy of it is answered with the
    // first copy's verdict (the handler runs once: see `a_resend_gets_the_first_verdict`).
    let genuine = Envelope::seal(&pinger, p.server_agent, &Pong(1), header, now, 60_000).unwrap();
    assert_eq!(p.client.forward(&genuine, Duration::from_secs(5)).await.unwrap(), Outcome::Delivered);
    assert_eq!(p.client.forward(&genuine, Duration::from_secs(5)).await.unwrap(), Outcome::Delivered);

    // Forged: tampered payload, and a signature by another key.
    let mut tampered = Envelope::seal(&pinger, p.server_agent, &Pong(2), header, now, 60_000).unwrap();
    tampered.payload = b"[666]".to_vec();
    let outcome = p.client.forward(&tampered, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(&outcome, Outcome::Rejected(r) if r.cause == Cause::BadSignature), "{outcome:?}");
    let mut impostor =
        Envelope::seal(&Identity::from_seed("mallory"), p.server_agent, &Pong(3), header, now, 60_000).unwrap();
    impostor.sender = pinger.address();
    let outcome = p.client.forward(&impostor, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(&outcome, Outcome::Rejected(r) if r.cause == Cause::BadSignature), "{outcome:?}");

    // The legitimate exchange goes on.
    let pong: Pong = ctx.request(p.server_agent, Ping(7), Duration::from_secs(5)).await.unwrap();
    assert_eq!(pong, Pong(7));
    p.client.shutdown().await.unwrap();
    p.server.shutdown().await.unwrap();
}

#[test]
fn a_session_binding_holds_only_for_its_peer_agent_and_lifetime() {
    let alice = Identity::from_seed("binding alice");
    let node = libp2p::PeerId::random();
    let other_node = libp2p::PeerId::random();
    let now = unix_now_ms();
    let binding = Binding::sign(&alice, &node, now + 60_000);
    binding.verify(&node, now).unwrap();
    // From another peer id.
    assert_eq!(binding.verify(&other_node, now), Err(agent_core::transport::BindingError::BadSignature));
    // For another agent.
    let mut stolen = binding.clone();
    let bob = Identity::from_seed("binding bob");
    stolen.agent = bob.address();
    assert_eq!(stolen.verify(&node, now), Err(agent_core::transport::BindingError::KeyMismatch));
    stolen.agent_key = bob.public_key();
    assert_eq!(stolen.verify(&node, now), Err(agent_core::transport::BindingError::BadSignature));
    // After it expires.
    assert!(matches!(binding.verify(&node, now + 60_001), Err(agent_core::transport::BindingError::Expired { .. })));
}

#[tokio::test]
async fn garbage_and_oversized_frames_disconnect_the_peer_and_others_are_served() {
    use futures::AsyncWriteExt;
    let p = pair("/ip4/127.0.0.1/tcp/0", Auth::Bound).await;
    let info = p.server.network_info().unwrap();
    // A frame claiming 4 GiB: refused before anything is allocated.
    let (mut huge, _) = raw_stream(&info).await;
    huge.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    huge.flush().await.unwrap();
    assert!(closed_within(&mut huge, Duration::from_secs(5)).await, "oversized frame closes the stream");
    // Bytes that are no frame at all.
    let (mut garbage, _) = raw_stream(&info).await;
    garbage.write_all(&frame(0x7f, b"not a frame")).await.unwrap();
    garbage.flush().await.unwrap();
    assert!(closed_within(&mut garbage, Duration::from_secs(5)).await, "garbage closes the stream");
    // The node keeps serving others.
    still_served_then_shut_down(p).await;
}

#[tokio::test]
async fn a_binding_for_another_peer_does_not_authenticate_and_a_silent_peer_is_dropped() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let resolver = Arc::new(StaticResolver::new());
    let server = Bureau::new().unwrap();
    let mut ponger = Agent::builder("ponger").seed("net ponger").build().unwrap();
    ponger.on_message(on_ping);
    let server_agent = server.add(ponger).unwrap();
    let config = NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver)
        .with_heartbeat(Duration::from_millis(200));
    let info = server.listen(config).await.unwrap();

    let (mut stream, my_peer) = raw_stream(&info).await;
    let alice = Identity::from_seed("raw alice");
    let now = unix_now_ms();
    // Alice's binding, but made for a different peer id than this connection's.
    let stolen = Binding::sign(&alice, &libp2p::PeerId::random(), now + 60_000);
    let mut body = Vec::new();
    body.extend_from_slice(stolen.agent.as_bytes());
    body.extend_from_slice(&stolen.agent_key.0);
    body.extend_from_slice(&stolen.expires_ms.to_be_bytes());
    body.extend_from_slice(&stolen.signature);
    let unsigned =
        Envelope::unsigned(&alice, server_agent, Ping::digest(), b"[1]".to_vec(), Header::default(), now, 60_000);
    let mut envelope_body = 7u64.to_be_bytes().to_vec();
    envelope_body.push(1); // bound mode
    envelope_body.extend_from_slice(&unsigned.encode());
    let mut bytes = frame(1, &body);
    bytes.extend(frame(2, &envelope_body));
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();
    let mut ack = vec![0u8; 4];
    stream.read_exact(&mut ack).await.unwrap();
    let len = u32::from_be_bytes(ack[..4].try_into().unwrap()) as usize;
    let mut ack = vec![0u8; len];
    stream.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack[0], 3, "an ack");
    assert_eq!(u64::from_be_bytes(ack[1..9].try_into().unwrap()), 7);
    assert_eq!(ack[9], 1, "rejected: {}", String::from_utf8_lossy(&ack[10..]));
    assert!(String::from_utf8_lossy(&ack[10..]).contains("no session binding"));

    // A binding for this very connection works.
    let good = Binding::sign(&alice, &my_peer, now + 60_000);
    let mut body = Vec::new();
    body.extend_from_slice(good.agent.as_bytes());
    body.extend_from_slice(&good.agent_key.0);
    body.extend_from_slice(&good.expires_ms.to_be_bytes());
    body.extend_from_slice(&good.signature);
    let fresh =
        Envelope::unsigned(&alice, server_agent, Ping::digest(), b"[2]".to_vec(), Header::default(), now, 60_000);
    let mut envelope_body = 8u64.to_be_bytes().to_vec();
    envelope_body.push(1);
    envelope_body.extend_from_slice(&fresh.encode());
    let mut bytes = frame(1, &body);
    bytes.extend(frame(2, &envelope_body));
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await.unwrap();
    let mut ack = vec![0u8; u32::from_be_bytes(head) as usize];
    stream.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack[9], 0, "delivered: {}", String::from_utf8_lossy(&ack[10..]));

    // Then silence: the node closes the stream after three heartbeats (600 ms here).
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await, "a silent peer is dropped");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn messages_to_one_agent_keep_their_order() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut recorder = Agent::builder("recorder").seed("recorder").build().unwrap();
    {
        let seen = seen.clone();
        recorder.on_message(move |_ctx: Context, _from: Address, Ping(n): Ping| {
            let seen = seen.clone();
            async move { seen.lock().push(n) }
        });
    }
    let (server, target, resolver) = serve_one(recorder, |config| config).await;
    let (client, ctx) = client_of(&resolver, "sender").await;
    // 300 sends in flight at once, issued in order.
    let sends: Vec<_> = (0..300).map(|n| ctx.send(target, Ping(n))).collect();
    for result in futures::future::join_all(sends).await {
        result.unwrap();
    }
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
    assert_eq!(*seen.lock(), (0..300).collect::<Vec<u64>>());
}

/// The pair's legitimate exchange still works; then both bureaus shut down.
async fn still_served_then_shut_down(p: Pair) {
    let ctx = p.client.context(p.client_agent).unwrap();
    let pong: Pong = ctx.request(p.server_agent, Ping(5), Duration::from_secs(5)).await.unwrap();
    assert_eq!(pong, Pong(5));
    p.client.shutdown().await.unwrap();
    p.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_at_its_connection_limit_refuses_more_and_keeps_serving() {
    let mut ponger = Agent::builder("ponger").seed("net ponger").build().unwrap();
    ponger.on_message(on_ping);
    let (server, server_agent, resolver) = serve_one(ponger, |config| config.with_max_connections(1)).await;

    let (first, first_ctx) = client_of(&resolver, "first").await;
    let pong: Pong = first_ctx.request(server_agent, Ping(1), Duration::from_secs(10)).await.unwrap();
    assert_eq!(pong, Pong(1));

    // A second peer is refused: its message is never written, and it is told so.
    let (second, second_ctx) = client_of(&resolver, "second").await;
    let err = second_ctx.send(server_agent, Pong(0)).await.unwrap_err();
    match err.failure() {
        SendFailure::Unreachable { reason, .. } => assert!(reason.contains("connection closed"), "{reason}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // The peer already connected is still served.
    let pong: Pong = first_ctx.request(server_agent, Ping(2), Duration::from_secs(10)).await.unwrap();
    assert_eq!(pong, Pong(2));

    // Once the first peer leaves, its place is free.
    first.shutdown().await.unwrap();
    let mut served = None;
    for attempt in 0..20 {
        match second_ctx.request::<Ping, Pong>(server_agent, Ping(3), Duration::from_secs(1)).await {
            Ok(pong) => {
                served = Some(pong);
                break;
            }
            Err(err) => tracing::debug!(attempt, %err, "not yet"),
        }
    }
    assert_eq!(served, Some(Pong(3)), "the second peer is served once a place is free");
    second.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_peer_gets_at_most_its_quota_of_requests_in_flight() {
    let release = Arc::new(tokio::sync::Notify::new());
    let mut slow = Agent::builder("slow").seed("slow ponger").build().unwrap();
    {
        let release = release.clone();
        slow.on_message(move |ctx: Context, _from: Address, Ping(n): Ping| {
            let release = release.clone();
            async move {
                // Hold the first request until the test has seen the quota refuse one.
                if n == 0 {
                    release.notified().await;
                }
                ctx.reply(Pong(n)).await
            }
        });
    }
    let (server, server_agent, resolver) = serve_one(slow, |config| config.with_max_requests_in_flight(2)).await;
    let (client, ctx) = client_of(&resolver, "eager").await;

    let long = Duration::from_secs(10);
    // Three requests leave in this order on the one stream to the server (join! polls them
    // in order). The first two take the two places (the agent holds the first, the second
    // waits behind it), so the third is refused at once, with the reason.
    let third_then_release = async {
        let third = ctx.request::<Ping, Pong>(server_agent, Ping(2), long).await;
        release.notify_one();
        third
    };
    let (first, second, third) = tokio::join!(
        ctx.request::<Ping, Pong>(server_agent, Ping(0), long),
        ctx.request::<Ping, Pong>(server_agent, Ping(1), long),
        third_then_release
    );
    match third {
        Err(RequestError::Send(SendFailure::Rejected { rejection, .. })) => {
            assert_eq!(rejection.cause, Cause::QuotaExceeded, "{rejection}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(first.unwrap(), Pong(0));
    assert_eq!(second.unwrap(), Pong(1));
    // Answered requests give their places back.
    let pong: Pong = ctx.request(server_agent, Ping(3), long).await.unwrap();
    assert_eq!(pong, Pong(3));
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

/// Whether the node answers a heartbeat on `stream` within a second.
async fn answers_ping(stream: &mut libp2p::Stream, n: u64) -> bool {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        stream.write_all(&frame(4, &n.to_be_bytes())).await?;
        stream.flush().await?;
        let mut pong = [0u8; 13];
        stream.read_exact(&mut pong).await?;
        std::io::Result::Ok(pong[4] == 5 && pong[5..] == n.to_be_bytes())
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), exchange).await, Ok(Ok(true)))
}

#[tokio::test]
async fn one_peer_may_open_only_a_few_streams() {
    let p = pair("/ip4/127.0.0.1/tcp/0", Auth::Bound).await;
    let info = p.server.network_info().unwrap();
    let (mut control, _) = raw_peer(&info);
    let mut open = Vec::new();
    for n in 0..4 {
        let mut stream = open_raw(&mut control, &info).await;
        assert!(answers_ping(&mut stream, n).await, "stream {n} is served");
        open.push(stream);
    }
    let mut fifth = open_raw(&mut control, &info).await;
    assert!(!answers_ping(&mut fifth, 4).await, "a fifth stream from the same peer is refused");
    assert!(closed_within(&mut fifth, Duration::from_secs(5)).await);
    // Closing one gives its place back.
    drop(open.remove(0));
    let mut served = false;
    for n in 0..20 {
        let mut stream = open_raw(&mut control, &info).await;
        if answers_ping(&mut stream, 10 + n).await {
            served = true;
            break;
        }
    }
    assert!(served, "a place freed by a closed stream is given to a new one");
    // Other peers were never affected.
    still_served_then_shut_down(p).await;
}

#[tokio::test]
async fn a_fast_sender_is_not_stopped_by_the_replay_guard() {
    // Far more envelopes than the guard can hold, from one sender, all within their
    // lifetime: the guard keeps a window of the sender's recent nonces, not all of them.
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut counter = Agent::builder("counter").seed("counter").build().unwrap();
    {
        let count = count.clone();
        counter.on_message(move |_ctx: Context, _from: Address, _ping: Ping| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async {}
        });
    }
    let (server, target, resolver) = serve_one(counter, |config| config.with_replay_capacity(1_000)).await;
    let (client, ctx) = client_of(&resolver, "fast").await;
    let sent = 20_000u64;
    let mut pending = futures::stream::FuturesUnordered::new();
    for n in 0..sent {
        pending.push(ctx.send(target, Ping(n)));
        if pending.len() >= 256 {
            futures::StreamExt::next(&mut pending).await.unwrap().unwrap();
        }
    }
    while let Some(result) = futures::StreamExt::next(&mut pending).await {
        result.unwrap();
    }
    client.shutdown().await.unwrap();
    // Shutting down drains the mailbox: every delivered message has been handled after.
    server.shutdown().await.unwrap();
    assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), sent);
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Bulk(String);

#[tokio::test]
async fn a_peer_that_stops_reading_cannot_hold_sends_past_their_deadline() {
    use futures::StreamExt;
    // A peer that accepts envelope streams and never reads them.
    let behaviour = libp2p_stream::Behaviour::new();
    let mut control = behaviour.new_control();
    let mut incoming = control.accept(libp2p::StreamProtocol::new(agent_core::transport::PROTOCOL)).unwrap();
    let mut swarm = agent_core::net::swarm(libp2p::identity::Keypair::generate_ed25519(), behaviour).unwrap();
    let addrs = agent_core::net::listen(&mut swarm, &["/ip4/127.0.0.1/tcp/0".parse().unwrap()]).await.unwrap();
    let stuck_peer = *swarm.local_peer_id();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let held = tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Some((_, stream)) = incoming.next().await {
            streams.push(stream);
        }
    });

    let resolver = Arc::new(StaticResolver::new());
    let stuck_agent = Identity::from_seed("stuck").address();
    resolver.insert(stuck_agent, Endpoint { peer_id: stuck_peer, addrs });
    let (client, ctx) = client_of(&resolver, "writer").await; // Deliveries time out after 2 s.
    let started = tokio::time::Instant::now();
    let big = "x".repeat(500_000);
    let sends: Vec<_> = (0..30).map(|_| ctx.send(stuck_agent, Bulk(big.clone()))).collect();
    let outcomes = tokio::time::timeout(Duration::from_secs(15), futures::future::join_all(sends))
        .await
        .expect("every send ends by its deadline, though the peer stopped reading");
    for outcome in outcomes {
        match outcome.unwrap_err().failure() {
            SendFailure::NotAcknowledged { .. } | SendFailure::Unreachable { .. } => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10), "ended near the 2 s deadline: {:?}", started.elapsed());
    client.shutdown().await.unwrap();
    held.abort();
}

#[tokio::test]
async fn network_stats_count_what_is_open_and_fall_back_when_a_peer_goes() {
    let p = pair("/ip4/127.0.0.1/tcp/0", Auth::Bound).await;
    assert_eq!(p.client.network_stats().unwrap(), Default::default(), "nothing open before the first send");
    let ctx = p.client.context(p.client_agent).unwrap();
    for n in 0..5 {
        let pong: Pong = ctx.request(p.server_agent, Ping(n), Duration::from_secs(10)).await.unwrap();
        assert_eq!(pong, Pong(n));
    }
    let client = p.client.network_stats().unwrap();
    assert_eq!((client.connections, client.links, client.pending_requests), (1, 1, 0), "{client:?}");
    assert_eq!(p.server.network_stats().unwrap().connections, 1);
    // The server goes: the client's connection closes (bounded wait).
    p.server.shutdown().await.unwrap();
    let mut connections = usize::MAX;
    for _ in 0..100 {
        connections = p.client.network_stats().unwrap().connections;
        if connections == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(connections, 0, "the connection to a stopped peer is no longer counted");
    assert!(Bureau::new().unwrap().network_stats().is_none(), "no stats without a network");
}
