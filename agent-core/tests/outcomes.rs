//! Every outcome a sender sees means what its docs say: a resend is answered with the
//! verdict its first copy got, a full mailbox does not stall other agents, each envelope
//! keeps its own deadline, and rejections come typed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::{unix_now_ms, Header};
use agent_core::transport::{Endpoint, Outcome};
use agent_core::{Address, Agent, Cause, Context, Envelope, Identity, MailboxConfig, Message, WhenFull};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

mod common;
use common::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Job(u64);

/// An agent whose handler records each job, then waits at `gate` until released.
fn gated_worker(
    name: &str,
    mailbox: MailboxConfig,
    gate: Arc<Notify>,
    handled: Arc<parking_lot::Mutex<Vec<u64>>>,
) -> Agent {
    let mut worker = Agent::builder(name).seed(name).mailbox(mailbox).build().unwrap();
    worker.on_message(move |_ctx: Context, _from: Address, Job(n): Job| {
        let (gate, handled) = (gate.clone(), handled.clone());
        async move {
            handled.lock().push(n);
            gate.notified().await;
        }
    });
    worker
}

fn job(from: &Identity, to: Address, n: u64) -> Envelope {
    Envelope::seal(from, to, &Job(n), Header::default(), unix_now_ms(), 60_000).unwrap()
}

#[tokio::test]
async fn a_resend_gets_the_verdict_its_first_copy_got() {
    let gate = Arc::new(Notify::new());
    let handled = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mailbox = MailboxConfig::default().with_capacity(1).with_when_full(WhenFull::Reject);
    let worker = gated_worker("resend worker", mailbox, gate.clone(), handled.clone());
    let (server, target, _resolver) = serve_one(worker, |config| config).await;
    let info = server.network_info().unwrap();
    let sender = Identity::from_seed("resending sender");
    let (first, second, third) = (job(&sender, target, 1), job(&sender, target, 2), job(&sender, target, 3));

    let (mut stream, _) = raw_stream(&info).await;
    write_envelope(&mut stream, 0, &first).await;
    assert_eq!(read_ack(&mut stream, 0).await, None, "delivered");
    until("the first job is being handled", || handled.lock().len() == 1).await;
    write_envelope(&mut stream, 1, &second).await;
    assert_eq!(read_ack(&mut stream, 1).await, None, "queued in the mailbox");
    write_envelope(&mut stream, 2, &third).await;
    assert_eq!(read_ack(&mut stream, 2).await, Some(Cause::MailboxFull));

    // The acks were "lost": the sender resends all three on a new stream. The refused
    // one stays refused (it was never handled), the delivered ones stay delivered.
    drop(stream);
    let (mut again, _) = raw_stream(&info).await;
    write_envelope(&mut again, 0, &third).await;
    assert_eq!(
        read_ack(&mut again, 0).await,
        Some(Cause::MailboxFull),
        "a refused message is never reported delivered"
    );
    write_envelope(&mut again, 1, &first).await;
    assert_eq!(read_ack(&mut again, 1).await, None);
    write_envelope(&mut again, 2, &second).await;
    assert_eq!(read_ack(&mut again, 2).await, None);

    // Released, the worker handles each delivered job once, and the refused one never.
    for _ in 0..4 {
        gate.notify_one();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until("both jobs are handled", || handled.lock().len() >= 2).await;
    gate.notify_waiters();
    server.shutdown().await.unwrap();
    assert_eq!(*handled.lock(), vec![1, 2]);
}

#[tokio::test]
async fn a_full_mailbox_does_not_stall_other_agents_on_the_connection() {
    let gate = Arc::new(Notify::new());
    let handled = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mailbox = MailboxConfig::default().with_capacity(1).with_when_full(WhenFull::Wait);
    let slow = gated_worker("slow worker", mailbox, gate.clone(), handled.clone());
    let (server, slow_address, resolver) = serve_one(slow, |config| config).await;
    let quick_count = Arc::new(AtomicU64::new(0));
    let mut quick = Agent::builder("quick worker").seed("quick worker").build().unwrap();
    {
        let quick_count = quick_count.clone();
        quick.on_message(move |_ctx: Context, _from: Address, Job(_): Job| {
            quick_count.fetch_add(1, Ordering::SeqCst);
            async {}
        });
    }
    let quick_address = server.add(quick).unwrap();
    let info = server.network_info().unwrap();
    resolver.insert(quick_address, Endpoint { peer_id: info.peer_id, addrs: info.listen_addrs.clone() });
    let (client, ctx) = client_of(&resolver, "mixed sender").await;

    // The slow agent takes job 1 and blocks; job 2 fills its mailbox; jobs 3 and 4 wait.
    ctx.send(slow_address, Job(1)).await.unwrap();
    until("job 1 is being handled", || handled.lock().len() == 1).await;
    ctx.send(slow_address, Job(2)).await.unwrap();
    let waiting = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            (ctx.send(slow_address, Job(3)).await.is_ok(), ctx.send(slow_address, Job(4)).await.is_ok())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Meanwhile the quick agent on the same node, over the same connection, is served.
    for n in 0..10 {
        ctx.send(quick_address, Job(n)).await.unwrap();
    }
    assert_eq!(quick_count.load(Ordering::SeqCst), 10);
    assert!(!waiting.is_finished(), "jobs 3 and 4 still wait for room");

    // Released, the slow agent gets 2, 3 and 4, in order.
    for _ in 0..20 {
        gate.notify_one();
        if handled.lock().len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(waiting.await.unwrap(), (true, true));
    until("all jobs are handled", || handled.lock().len() == 4).await;
    gate.notify_one();
    assert_eq!(*handled.lock(), vec![1, 2, 3, 4]);
    client.shutdown().await.unwrap();
    gate.notify_waiters();
    server.shutdown().await.unwrap();
}

/// A libp2p peer that accepts envelope streams and reads them, but never acknowledges.
async fn silent_peer() -> (libp2p::PeerId, libp2p::Multiaddr) {
    use futures::{AsyncReadExt, StreamExt};
    let behaviour = libp2p_stream::Behaviour::new();
    let mut control = behaviour.new_control();
    let mut incoming = control.accept(libp2p::StreamProtocol::new(agent_core::transport::PROTOCOL)).unwrap();
    let mut swarm = agent_core::net::swarm(libp2p::identity::Keypair::generate_ed25519(), behaviour).unwrap();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let peer = *swarm.local_peer_id();
    let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                let _ = addr_tx.send(address);
            }
        }
    });
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(10), addr_rx.recv()).await.unwrap().unwrap();
    (peer, addr)
}

#[tokio::test]
async fn each_envelope_keeps_its_own_deadline_in_the_link_queue() {
    let (peer, addr) = silent_peer().await;
    let resolver = Arc::new(agent_core::transport::StaticResolver::new());
    let (client, _ctx) = client_of(&resolver, "deadline sender").await;
    let nobody = Identity::from_seed("a silent agent").address();
    resolver.insert(nobody, Endpoint { peer_id: peer, addrs: vec![addr] });
    let sender = Identity::from_seed("deadline sender");
    let long = job(&sender, nobody, 1);
    let short = job(&sender, nobody, 2);
    let started = tokio::time::Instant::now();
    let (long_outcome, short_outcome) = tokio::join!(client.forward(&long, Duration::from_secs(12)), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let outcome = client.forward(&short, Duration::from_millis(500)).await;
        (outcome, started.elapsed())
    });
    let (short_outcome, short_after) = short_outcome;
    assert!(matches!(short_outcome.unwrap(), Outcome::TimedOut { .. }));
    assert!(
        short_after < Duration::from_secs(6),
        "the short deadline is reported at its own time, not the long one's ({short_after:?})"
    );
    assert!(matches!(long_outcome.unwrap(), Outcome::TimedOut { .. }));
    client.shutdown().await.unwrap();
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Blob(String);

#[tokio::test]
async fn an_envelope_too_large_for_a_frame_fails_at_the_sender_and_the_link_goes_on() {
    let got = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut receiver = Agent::builder("blob receiver").seed("blob receiver").build().unwrap();
    {
        let got = got.clone();
        receiver.on_message(move |_ctx: Context, _from: Address, Blob(text): Blob| {
            got.lock().push(text.len());
            async {}
        });
    }
    let (server, target, resolver) = serve_one(receiver, |config| config).await;
    let (client, ctx) = client_of(&resolver, "blob sender").await;
    // The default frame limit is 1 MiB + 4 KiB; an envelope adds 307 bytes with its frame,
    // and the JSON string two quotes.
    let largest = (1 << 20) + 4096 - 307 - 2;
    let err = ctx.send(target, Blob("x".repeat(largest + 1))).await.unwrap_err();
    match err.failure() {
        agent_core::SendFailure::TooLarge { size, limit, .. } => {
            assert_eq!((*size, *limit), (largest + 3, largest + 2))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(!err.failure().may_have_been_delivered());
    // The largest that fits goes through, and so does what follows it.
    ctx.send(target, Blob("y".repeat(largest))).await.unwrap();
    ctx.send(target, Blob("z".into())).await.unwrap();
    until("both blobs arrived", || got.lock().len() == 2).await;
    assert_eq!(*got.lock(), vec![largest, 1]);
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_peer_sending_forged_envelopes_is_disconnected_and_kept_out() {
    let mut worker = Agent::builder("forgery target").seed("forgery target").build().unwrap();
    worker.on_message(|_ctx: Context, _from: Address, Job(_): Job| async {});
    let (server, target, resolver) = serve_one(worker, |config| config).await;
    let info = server.network_info().unwrap();
    let (mut control, _) = raw_peer(&info);
    let mut stream = open_raw(&mut control, &info).await;
    let forger = Identity::from_seed("forger");
    let mut refused = 0;
    for n in 0..20u64 {
        let mut forged = job(&forger, target, n);
        forged.payload = format!("[{}]", n + 1000).into_bytes();
        write_envelope(&mut stream, n, &forged).await;
        match tokio::time::timeout(Duration::from_secs(10), async {
            use futures::AsyncReadExt;
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).await?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            stream.read_exact(&mut body).await.map(|_| body)
        })
        .await
        .unwrap()
        {
            Ok(body) => {
                assert_eq!((body[0], body[9], Cause::from_code(body[10])), (3, 1, Cause::BadSignature));
                refused += 1;
            }
            Err(_) => break, // Disconnected.
        }
    }
    assert!((1..=10).contains(&refused), "disconnected after a few forgeries, not {refused}");
    // While banned, its new streams are refused.
    let reopened = tokio::time::timeout(
        Duration::from_secs(5),
        control.open_stream(info.peer_id, libp2p::StreamProtocol::new(agent_core::transport::PROTOCOL)),
    )
    .await;
    if let Ok(Ok(mut again)) = reopened {
        assert!(closed_within(&mut again, Duration::from_secs(5)).await, "a banned peer's stream is closed");
    }
    // Honest peers are served throughout.
    let (client, ctx) = client_of(&resolver, "honest sender").await;
    ctx.send(target, Job(1)).await.unwrap();
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_peers_give_their_connection_places_back() {
    let mut worker = Agent::builder("popular").seed("popular").build().unwrap();
    worker.on_message(|_ctx: Context, _from: Address, Job(_): Job| async {});
    let idle = Duration::from_millis(300);
    let (server, target, resolver) =
        serve_one(worker, |config| config.with_max_connections(2).with_idle_timeout(idle)).await;
    // Twice the cap of peers, one after another, each staying up after its send.
    let mut peers = Vec::new();
    for n in 0..5 {
        let bureau = agent_core::Bureau::new().unwrap();
        let me = bureau.add(Agent::builder(format!("visitor {n}")).build().unwrap()).unwrap();
        let config =
            agent_core::transport::NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver.clone())
                .with_idle_timeout(idle)
                .with_delivery_timeout(Duration::from_secs(5));
        bureau.listen(config).await.unwrap();
        let ctx = bureau.context(me).unwrap();
        let sent = ctx.send(target, Job(n)).await;
        assert!(sent.is_ok(), "visitor {n} got in: {:?}", sent.err());
        peers.push(bureau);
    }
    for bureau in peers {
        bureau.shutdown().await.unwrap();
    }
    server.shutdown().await.unwrap();
}

/// A bare libp2p peer that connects to `server` (within 10 s) and opens no stream; the
/// receiver reports when the connection closes. Dropping the sender's task is up to the
/// test (it ends with the runtime).
async fn streamless_peer(server: &agent_core::transport::NetworkInfo) -> tokio::sync::oneshot::Receiver<()> {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    let behaviour = libp2p_stream::Behaviour::new();
    let mut swarm = agent_core::net::swarm(libp2p::identity::Keypair::generate_ed25519(), behaviour).unwrap();
    swarm.dial(server.listen_addrs[0].clone().with(libp2p::multiaddr::Protocol::P2p(server.peer_id))).unwrap();
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => return,
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("cannot connect: {error}"),
                _ => {}
            }
        }
    });
    connected.await.expect("connected within 10 s");
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionClosed { .. } = swarm.select_next_some().await {
                let _ = closed_tx.send(());
                return;
            }
        }
    });
    closed
}

#[tokio::test]
async fn peers_that_open_no_stream_give_their_connection_places_back() {
    let mut worker = Agent::builder("crowded").seed("crowded").build().unwrap();
    worker.on_message(|_ctx: Context, _from: Address, Job(_): Job| async {});
    // The idle timeout stays at its 60 s default: only connections without a stream go.
    let unused = Duration::from_millis(500);
    let (server, target, resolver) =
        serve_one(worker, |config| config.with_max_connections(2).with_unused_connection_timeout(unused)).await;
    let info = server.network_info().unwrap();
    // Two peers take both places with a handshake each, and then do nothing.
    let first = streamless_peer(&info).await;
    let second = streamless_peer(&info).await;
    for closed in [first, second] {
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("the node closes a connection with no stream long before the 60 s idle timeout")
            .unwrap();
    }
    // Their places are free: an honest sender gets in, and keeps being served after the
    // unused-connection timeout has passed several times.
    let (client, ctx) = client_of(&resolver, "newcomer").await;
    ctx.send(target, Job(1)).await.unwrap();
    tokio::time::sleep(unused * 3).await;
    let mut again = Vec::new();
    for n in 2..5 {
        again.push(ctx.send(target, Job(n)).await);
    }
    assert!(again.iter().all(Result::is_ok), "later sends are delivered: {again:?}");
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

/// A bureau storing in `dir`, serving a worker that counts what it handles, listening on
/// loopback and entered in `resolver`.
async fn counting_node(
    dir: &std::path::Path,
    resolver: &Arc<agent_core::transport::StaticResolver>,
) -> (agent_core::Bureau, Address, Arc<AtomicU64>) {
    let handled = Arc::new(AtomicU64::new(0));
    let mut worker = Agent::builder("restarting worker").seed("restarting worker").build().unwrap();
    {
        let handled = handled.clone();
        worker.on_message(move |_ctx: Context, _from: Address, Job(_): Job| {
            handled.fetch_add(1, Ordering::SeqCst);
            async {}
        });
    }
    // A node dropped just now lets go of its database once its tasks have ended.
    let mut opened = None;
    for _ in 0..500 {
        match agent_core::Bureau::with_config(agent_core::Config::default().with_storage_dir(dir)) {
            Ok(bureau) => {
                opened = Some(bureau);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let bureau = opened.expect("the database is released within 5 s");
    let address = bureau.add(worker).unwrap();
    let config =
        agent_core::transport::NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver.clone());
    let info = bureau.listen(config).await.unwrap();
    resolver.insert(address, Endpoint { peer_id: info.peer_id, addrs: info.listen_addrs });
    (bureau, address, handled)
}

#[tokio::test]
async fn after_a_restart_no_envelope_is_handled_twice_and_fresh_ones_still_are() {
    let dir = tempfile::tempdir().unwrap();
    let resolver = Arc::new(agent_core::transport::StaticResolver::new());
    let (client, _ctx) = client_of(&resolver, "restart sender").await;
    let sender = Identity::from_seed("restart sender");
    let skewed = Identity::from_seed("a sender whose clock runs ahead");

    let (node, target, handled) = counting_node(dir.path(), &resolver).await;
    // Within the allowed clock skew: stamped 20 s ahead, and one stamped now.
    let ahead = Envelope::seal(&skewed, target, &Job(1), Header::default(), unix_now_ms() + 20_000, 60_000).unwrap();
    let now = job(&sender, target, 2);
    assert_eq!(client.forward(&ahead, Duration::from_secs(5)).await.unwrap(), Outcome::Delivered);
    assert_eq!(client.forward(&now, Duration::from_secs(5)).await.unwrap(), Outcome::Delivered);
    until("both are handled", || handled.load(Ordering::SeqCst) == 2).await;
    drop(node); // Stopped without a graceful shutdown.

    let (node, _, handled) = counting_node(dir.path(), &resolver).await;
    for copy in [&ahead, &now] {
        match client.forward(copy, Duration::from_secs(5)).await.unwrap() {
            Outcome::Rejected(rejection) => {
                assert_eq!(rejection.cause, Cause::MayHaveBeenHandled, "{rejection}");
                assert!(rejection.may_have_been_handled());
            }
            other => panic!("a copy from before the restart was not refused: {other:?}"),
        }
    }
    // Fresh envelopes are accepted at once, even from the sender whose clock is ahead
    // of the others (its own ceiling delays no one else).
    let fresh = job(&sender, target, 3);
    assert_eq!(client.forward(&fresh, Duration::from_secs(5)).await.unwrap(), Outcome::Delivered);
    let later = Envelope::seal(&skewed, target, &Job(4), Header::default(), unix_now_ms() + 25_000, 60_000).unwrap();
    assert_eq!(client.forward(&later, Duration::from_secs(5)).await.unwrap(), Outcome::Delivered);
    until("the fresh ones are handled", || handled.load(Ordering::SeqCst) == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handled.load(Ordering::SeqCst), 2, "nothing from before the restart was handled again");
    node.shutdown().await.unwrap();
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn routes_are_learned_only_from_delivered_envelopes() {
    let gate = Arc::new(Notify::new());
    let handled = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mailbox = MailboxConfig::default().with_capacity(1).with_when_full(WhenFull::Reject);
    let worker = gated_worker("route worker", mailbox, gate.clone(), handled.clone());
    let (server, target, _resolver) =
        serve_one(worker, |config| config.with_delivery_timeout(Duration::from_millis(500))).await;
    let info = server.network_info().unwrap();
    let (delivered_sender, refused_sender) = (Identity::from_seed("delivered sender"), Identity::from_seed("refused"));

    let (mut stream, raw_peer_id) = raw_stream(&info).await;
    write_envelope(&mut stream, 0, &job(&delivered_sender, target, 1)).await;
    assert_eq!(read_ack(&mut stream, 0).await, None);
    until("job 1 is being handled", || handled.lock().len() == 1).await;
    write_envelope(&mut stream, 1, &job(&delivered_sender, target, 2)).await;
    assert_eq!(read_ack(&mut stream, 1).await, None);
    write_envelope(&mut stream, 2, &job(&refused_sender, target, 3)).await;
    assert_eq!(read_ack(&mut stream, 2).await, Some(Cause::MailboxFull));

    // The worker's node knows no endpoint for either sender: only the delivered one's
    // envelope taught it a route (through the peer it came from).
    let ctx = server.context(target).unwrap();
    let refused = ctx.send(refused_sender.address(), Job(9)).await.unwrap_err();
    assert!(
        matches!(refused.failure(), agent_core::SendFailure::Unroutable { .. }),
        "a refused envelope taught a route: {:?}",
        refused.failure()
    );
    let learned = ctx.send(delivered_sender.address(), Job(9)).await.unwrap_err();
    assert!(
        matches!(learned.failure(), agent_core::SendFailure::Unreachable { endpoint, .. } if endpoint.contains(&raw_peer_id.to_string())),
        "the delivered sender is sought through its peer (which speaks no envelopes): {:?}",
        learned.failure()
    );
    gate.notify_waiters();
    for _ in 0..3 {
        gate.notify_one();
    }
    drop(stream);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_short_deadline_behind_a_long_one_is_kept_while_the_peer_cannot_be_reached() {
    // A peer that accepts TCP connections and never speaks: connecting to it never ends.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let connections: Vec<_> = silent.incoming().take(8).flatten().collect();
        std::thread::sleep(Duration::from_secs(10));
        drop(connections);
    });
    let resolver = Arc::new(agent_core::transport::StaticResolver::new());
    let (client, _ctx) = client_of(&resolver, "unreachable sender").await;
    let nobody = Identity::from_seed("a black-holed agent").address();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    resolver.insert(nobody, Endpoint { peer_id: libp2p::PeerId::random(), addrs: vec![addr] });
    let sender = Identity::from_seed("unreachable sender");
    let (long, short) = (job(&sender, nobody, 1), job(&sender, nobody, 2));
    let started = tokio::time::Instant::now();
    let (long_outcome, (short_outcome, short_after)) =
        tokio::join!(client.forward(&long, Duration::from_secs(12)), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let outcome = client.forward(&short, Duration::from_millis(500)).await;
            (outcome, started.elapsed())
        });
    assert!(matches!(short_outcome.unwrap(), Outcome::Unreachable { .. }));
    assert!(
        short_after < Duration::from_secs(6),
        "reported near its own deadline, not the long one's ({short_after:?})"
    );
    assert!(matches!(long_outcome.unwrap(), Outcome::Unreachable { .. }));
    client.shutdown().await.unwrap();
    drop(held);
}
