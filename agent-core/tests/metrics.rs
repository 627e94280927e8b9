//! Metrics served over HTTP (issue 16): a bureau with real traffic in one process and over
//! libp2p on loopback, scraped from `GET /metrics`, shows each series with the values the
//! traffic must have produced.
//!
//! The recorder is global to a process: every test here shares it, so each uses agent
//! kinds and peers of its own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::metrics::{self, MetricsError};
use agent_core::transport::{Endpoint, NetworkConfig, StaticResolver};
use agent_core::{
    Address, Agent, Bureau, Cause, Context, Identity, MailboxConfig, Message, RequestError, SendFailure, WhenFull,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

mod common;
use common::until;

/// Held by its handler until the test lets it go.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Hold(u32);

/// Its handler fails.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Fail;

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ping(u64);

#[derive(Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Pong(u64);

/// A request whose handler takes a while before it replies.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct SlowPing(u64);

/// Sends one HTTP/1.1 request to `addr` and returns the status code and body. Bounded:
/// 10 s for the whole exchange.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("the metrics port accepts");
        let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("the request is written");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("the response is read");
        String::from_utf8(response).expect("a UTF-8 response")
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange).await.expect("an answer within 10 s");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head and body");
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status code");
    assert!(head.contains("Content-Length: "), "no length in {head}");
    (status, body.to_owned())
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Scrapes until `ready` holds of the text (at most 100 times, 20 ms apart) and returns the
/// last text read, ready or not.
async fn scrape_until(addr: std::net::SocketAddr, ready: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(addr).await;
        if ready(&text) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    text
}

/// The value of the sample `name` whose labels include every one of `labels`, if any.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let wanted = labels.iter().all(|(key, value)| label_text.contains(&format!("{key}=\"{value}\"")));
        (metric == name && wanted).then(|| value.parse().expect("a numeric sample"))
    })
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no sample {name} with {labels:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_mailboxes_handlers_and_outcomes() {
    let server = metrics::serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    // In one process: an agent that refuses when its one-message mailbox is full.
    let bureau = Bureau::new().unwrap();
    let release = Arc::new(Notify::new());
    let started = Arc::new(AtomicU32::new(0));
    let mailbox = MailboxConfig::default().with_capacity(1).with_when_full(WhenFull::Reject);
    let mut keeper = Agent::builder("keeper-1").mailbox(mailbox).build().unwrap();
    let (count, go) = (Arc::clone(&started), Arc::clone(&release));
    keeper.on_message(move |_ctx: Context, _from: Address, Hold(_): Hold| {
        let (count, go) = (Arc::clone(&count), Arc::clone(&go));
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            go.notified().await;
        }
    });
    keeper.on_message(|_ctx: Context, _from: Address, _: Fail| async { Err::<(), _>("refused on purpose") });
    let keeper = bureau.add(keeper).unwrap();
    let sender = bureau.add(Agent::builder("metrics sender").build().unwrap()).unwrap();
    let ctx = bureau.context(sender).unwrap();
    ctx.send(keeper, Hold(1)).await.unwrap();
    until("the keeper holds its first message", || started.load(Ordering::SeqCst) == 1).await;
    ctx.send(keeper, Hold(2)).await.unwrap(); // Fills the mailbox.
    let refused = ctx.send(keeper, Hold(3)).await.expect_err("the mailbox is full");
    assert!(matches!(refused.failure(), SendFailure::MailboxFull { .. }), "{:?}", refused.failure());

    let text = scrape(addr).await;
    let keeper_kind = [("kind", "keeper")];
    assert_eq!(value(&text, "agora_agents", &keeper_kind), 1.0);
    assert_eq!(value(&text, "agora_mailbox_depth", &keeper_kind), 1.0);
    assert_eq!(value(&text, "agora_mailbox_full_total", &keeper_kind), 1.0);

    // Let both held messages through; the failing one is handled after them.
    release.notify_one();
    until("the keeper holds its second message", || started.load(Ordering::SeqCst) == 2).await;
    release.notify_one();
    ctx.send(keeper, Fail).await.unwrap();
    let hold_labels = [("kind", "keeper"), ("message", Hold::NAME)];
    let fail_labels = [("kind", "keeper"), ("message", Fail::NAME)];
    let text = scrape_until(addr, |text| sample(text, "agora_handler_failures_total", &fail_labels).is_some()).await;
    assert!(text.contains("# TYPE agora_handler_seconds histogram"), "{text}");
    assert_eq!(value(&text, "agora_handler_seconds_count", &hold_labels), 2.0);
    assert_eq!(value(&text, "agora_handler_seconds_count", &fail_labels), 1.0);
    assert_eq!(value(&text, "agora_handler_failures_total", &fail_labels), 1.0);
    assert_eq!(
        value(&text, "agora_handler_seconds_bucket", &[("kind", "keeper"), ("message", Hold::NAME), ("le", "+Inf")]),
        2.0
    );
    assert_eq!(value(&text, "agora_mailbox_depth", &keeper_kind), 0.0);
    // The second message waited in the mailbox while the first was held: the two took
    // some time, measured on the wall clock.
    assert!(value(&text, "agora_handler_seconds_sum", &hold_labels) > 0.0);

    // Over the network: a server, and a strict one that takes one request at a time from
    // each peer.
    let resolver = Arc::new(StaticResolver::new());
    let remote = Bureau::new().unwrap();
    let mut ponger = Agent::builder("metrics ponger").build().unwrap();
    ponger.on_message(|ctx: Context, _from: Address, Ping(n): Ping| async move { ctx.reply(Pong(n)).await });
    let ponger = remote.add(ponger).unwrap();
    let listen = || vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let remote_info = remote.listen(NetworkConfig::new(listen(), resolver.clone())).await.unwrap();
    let strict = Bureau::new().unwrap();
    let mut slowpoke = Agent::builder("metrics slowpoke").build().unwrap();
    slowpoke.on_message(|ctx: Context, _from: Address, SlowPing(n): SlowPing| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ctx.reply(Pong(n)).await
    });
    let slowpoke = strict.add(slowpoke).unwrap();
    let strict_config = NetworkConfig::new(listen(), resolver.clone()).with_max_requests_in_flight(1);
    let strict_info = strict.listen(strict_config).await.unwrap();
    resolver.insert(slowpoke, Endpoint { peer_id: strict_info.peer_id, addrs: strict_info.listen_addrs.clone() });
    let remote_endpoint = Endpoint { peer_id: remote_info.peer_id, addrs: remote_info.listen_addrs.clone() };
    resolver.insert(ponger, remote_endpoint.clone());
    let client = Bureau::new().unwrap();
    let pinger = client.add(Agent::builder("metrics pinger").build().unwrap()).unwrap();
    let client_info = client.listen(NetworkConfig::new(listen(), resolver.clone())).await.unwrap();
    resolver.insert(pinger, Endpoint { peer_id: client_info.peer_id, addrs: client_info.listen_addrs.clone() });
    let ctx = client.context(pinger).unwrap();
    for n in 0..5 {
        let pong: Pong = ctx.request(ponger, Ping(n), Duration::from_secs(10)).await.unwrap();
        assert_eq!(pong, Pong(n));
    }
    // A failed delivery: an agent the server does not have (so no handler there).
    let stranger = Identity::generate().address();
    resolver.insert(stranger, remote_endpoint);
    let failed = ctx.send(stranger, Ping(9)).await.expect_err("no such agent at the server");
    assert!(
        matches!(failed.failure(), SendFailure::Rejected { rejection, .. } if rejection.cause == Cause::NoHandler),
        "{:?}",
        failed.failure()
    );
    // An agent no one knows the way to.
    let nowhere = Identity::generate().address();
    let lost = ctx.send(nowhere, Ping(10)).await.expect_err("no route");
    assert!(matches!(lost.failure(), SendFailure::Unroutable { .. }), "{:?}", lost.failure());
    // A second request while the first is in flight exceeds the peer's quota.
    let slow = ctx.request::<_, Pong>(slowpoke, SlowPing(1), Duration::from_secs(10));
    let second = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ctx.request::<_, Pong>(slowpoke, SlowPing(2), Duration::from_secs(10)).await
    };
    let (slow, second) = tokio::join!(slow, second);
    assert_eq!(slow.unwrap(), Pong(1));
    assert!(
        matches!(&second, Err(RequestError::Send(SendFailure::Rejected { rejection, .. })) if rejection.cause == Cause::QuotaExceeded),
        "{second:?}"
    );

    let (server_peer, client_peer) = (remote_info.peer_id.to_string(), client_info.peer_id.to_string());
    // A reply's outcome is known once it is acknowledged, just after the requester has it.
    let replies = [("peer", client_peer.as_str()), ("outcome", "delivered")];
    let text = scrape_until(addr, |text| sample(text, "agora_outcomes_total", &replies) == Some(6.0)).await;
    let strict_peer = strict_info.peer_id.to_string();
    let delivered = [("peer", server_peer.as_str()), ("outcome", "delivered")];
    assert_eq!(value(&text, "agora_outcomes_total", &delivered), 5.0);
    let let_in = [("peer", strict_peer.as_str()), ("outcome", "delivered")];
    assert_eq!(value(&text, "agora_outcomes_total", &let_in), 1.0);
    let unknown = [("peer", server_peer.as_str()), ("outcome", "rejected"), ("cause", "no_handler")];
    assert_eq!(value(&text, "agora_outcomes_total", &unknown), 1.0);
    let over_quota = [("peer", strict_peer.as_str()), ("outcome", "rejected"), ("cause", "quota_exceeded")];
    assert_eq!(value(&text, "agora_outcomes_total", &over_quota), 1.0);
    let unroutable = [("peer", ""), ("outcome", "unroutable"), ("cause", "unknown_address")];
    assert_eq!(value(&text, "agora_outcomes_total", &unroutable), 1.0);
    // The servers' six replies went back on the requests' stream, to the client's node.
    assert_eq!(value(&text, "agora_outcomes_total", &replies), 6.0);
    assert_eq!(value(&text, "agora_quota_refusals_total", &[("quota", "requests_in_flight")]), 1.0);
    assert!(value(&text, "agora_links", &[]) >= 1.0);
    assert_eq!(value(&text, "agora_link_queue_depth", &[("peer", server_peer.as_str())]), 0.0);
    // The last ping's handler ended once its reply was acknowledged: before the reply
    // outcomes waited for above were all counted.
    let pings = [("kind", "metrics ponger"), ("message", Ping::NAME)];
    assert_eq!(value(&text, "agora_handler_seconds_count", &pings), 5.0);

    // Only `GET /metrics` is served.
    assert_eq!(http(addr, "GET", "/elsewhere").await.0, 404);
    assert_eq!(http(addr, "POST", "/metrics").await.0, 405);

    client.shutdown().await.unwrap();
    remote.shutdown().await.unwrap();
    strict.shutdown().await.unwrap();
    bureau.shutdown().await.unwrap();
    // The agents are gone: their gauges read zero.
    let text = scrape(addr).await;
    assert_eq!(value(&text, "agora_agents", &keeper_kind), 0.0);
}

#[tokio::test]
async fn an_address_in_use_is_named_with_its_cause() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let err = metrics::serve(addr).await.expect_err("the port is taken");
    assert!(matches!(err, MetricsError::Bind { addr: bound, .. } if bound == addr), "{err:?}");
    let text = agent_core::error::chain(&err);
    assert!(text.starts_with(&format!("cannot serve metrics on {addr}: ")), "{text}");
    assert!(text.contains("os error"), "{text}");
}

/// Envelopes to a peer that never answers wait in its link's queue, under its own label,
/// and read zero once the link is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_shows_its_waiting_envelopes() {
    let server = metrics::serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr();
    // Accepts connections (the kernel does) and never speaks: every dial hangs.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_peer = libp2p::PeerId::random();
    let resolver = Arc::new(StaticResolver::new());
    let silent = Identity::generate().address();
    let hole: libp2p::Multiaddr =
        format!("/ip4/127.0.0.1/tcp/{}", black_hole.local_addr().unwrap().port()).parse().unwrap();
    resolver.insert(silent, Endpoint { peer_id: silent_peer, addrs: vec![hole] });
    let client = Bureau::new().unwrap();
    let sender = client.add(Agent::builder("metrics queue sender").build().unwrap()).unwrap();
    // The link takes a window of two while it connects; the rest wait in the queue.
    let config = NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver.clone())
        .with_window(2)
        .with_delivery_timeout(Duration::from_secs(2));
    client.listen(config).await.unwrap();
    let ctx = client.context(sender).unwrap();
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..7 {
        let ctx = ctx.clone();
        sends.spawn(async move { ctx.send(silent, Ping(n)).await.is_ok() });
    }
    let peer = silent_peer.to_string();
    let labels = [("peer", peer.as_str())];
    let depth = |text: &str| sample(text, "agora_link_queue_depth", &labels);
    let text = scrape_until(addr, |text| depth(text) == Some(5.0)).await;
    assert_eq!(depth(&text), Some(5.0), "seven sends, two taken by the link while it connects");
    // Every send ends, unreachable, at its deadline; then nothing waits for the peer.
    let mut delivered = 0;
    while let Some(sent) = sends.join_next().await {
        delivered += u32::from(sent.unwrap());
    }
    assert_eq!(delivered, 0, "a black hole delivers nothing");
    let text = scrape_until(addr, |text| depth(text) == Some(0.0)).await;
    assert_eq!(depth(&text), Some(0.0));
    client.shutdown().await.unwrap();
}
