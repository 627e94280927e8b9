//! Agents in two OS processes on 127.0.0.1: request/reply over TCP and over QUIC, and the
//! receiving process killed mid-stream and restarted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::{unix_now_ms, Header};
use agent_core::transport::{Endpoint, NetworkConfig, Outcome, StaticResolver};
use agent_core::{Address, Agent, Bureau, Envelope, Identity};
use agent_examples::{Ping, Pong};
use common::{args, free_tcp_port, Node};

const ECHO: &str = env!("CARGO_BIN_EXE_echo-node");

async fn client(node: &Node, listen: &str, delivery_timeout: Duration) -> (Bureau, Address, Address) {
    let resolver = Arc::new(StaticResolver::new());
    let echo = node.agent.expect("the echo node printed its agent");
    resolver.insert(echo, Endpoint { peer_id: node.peer_id, addrs: node.addrs.clone() });
    let bureau = Bureau::new().unwrap();
    let me = bureau.add(Agent::builder("client").seed("two process client").build().unwrap()).unwrap();
    let config = NetworkConfig::new(vec![listen.parse().unwrap()], resolver).with_delivery_timeout(delivery_timeout);
    bureau.listen(config).await.unwrap();
    (bureau, me, echo)
}

async fn round_trips(listen: &str, extra: &[&str]) {
    let mut node_args = args(&["--listen", listen]);
    node_args.extend(args(extra));
    let node = Node::spawn(ECHO, &node_args);
    let (bureau, me, echo) = client(&node, listen, Duration::from_secs(10)).await;
    let ctx = bureau.context(me).unwrap();
    for n in 0..100 {
        let pong: Pong = ctx.request(echo, Ping(n), Duration::from_secs(10)).await.unwrap();
        assert_eq!(pong, Pong(n));
    }
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_reply_across_processes_over_tcp() {
    round_trips("/ip4/127.0.0.1/tcp/0", &[]).await;
}

#[tokio::test]
async fn request_reply_across_processes_over_quic() {
    round_trips("/ip4/127.0.0.1/udp/0/quic-v1", &[]).await;
}

#[tokio::test]
async fn request_reply_across_processes_with_signed_envelopes() {
    round_trips("/ip4/127.0.0.1/tcp/0", &["--signed"]).await;
}

/// Pings handled by `node`, as it reported them.
fn handled_by(node: &Node) -> Vec<u64> {
    node.lines.lock().unwrap().iter().filter_map(|l| l.strip_prefix("handled ").and_then(|n| n.parse().ok())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_with_sends_in_flight_and_restarted() {
    let port = free_tcp_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let node_args = args(&[
        "--listen",
        &listen,
        "--node-seed",
        "fault test node",
        "--log-handled",
        "--ack-when-handled",
        "--handle-ms",
        "2",
        "--data",
        data_dir,
    ]);
    let mut first = Node::spawn(ECHO, &node_args);
    let (bureau, me, echo) = client(&first, "/ip4/127.0.0.1/tcp/0", Duration::from_millis(1500)).await;
    let ctx = bureau.context(me).unwrap();

    // An envelope the receiver accepts before the kill, to replay after the restart.
    let me_identity = Identity::from_seed("two process client");
    let accepted =
        Envelope::seal(&me_identity, echo, &Ping(1_000_000), Header::default(), unix_now_ms(), 120_000).unwrap();
    assert_eq!(bureau.forward(&accepted, Duration::from_secs(5)).await.unwrap(), Outcome::Delivered);

    // 32 senders, each sending its own numbered pings one after another, to a handler
    // taking 2 ms each: 32 in flight at every moment, when the kill lands too.
    const SENDERS: u64 = 32;
    const EACH: u64 = 40;
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let acknowledged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (ctx, outcomes, acknowledged) = (ctx.clone(), outcomes.clone(), acknowledged.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..EACH {
                let n = sender * 1000 + i;
                let outcome = ctx.send(echo, Ping(n)).await.map_err(|e| e.failure().clone());
                if outcome.is_ok() {
                    acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                outcomes.lock().unwrap().push((n, outcome));
            }
        }));
    }
    for _ in 0..500 {
        if acknowledged.load(std::sync::atomic::Ordering::SeqCst) >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    let acknowledged_before_kill = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Node::spawn(ECHO, &node_args);
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(120), sender).await.expect("the senders finish").unwrap();
    }

    // Replaying what the first process accepted is refused by the second, as possibly
    // handled.
    let replayed = bureau.forward(&accepted, Duration::from_secs(5)).await.unwrap();
    assert!(
        matches!(&replayed, Outcome::Rejected(r) if r.cause == agent_core::Cause::MayHaveBeenHandled),
        "{replayed:?}"
    );
    bureau.shutdown().await.unwrap();

    let outcomes = outcomes.lock().unwrap().clone();
    let acknowledged: Vec<u64> = outcomes.iter().filter(|(_, o)| o.is_ok()).map(|(n, _)| *n).collect();
    let certainly_not: Vec<u64> = outcomes
        .iter()
        .filter(|(_, o)| o.as_ref().is_err_and(|failure| !failure.may_have_been_delivered()))
        .map(|(n, _)| *n)
        .collect();
    let uncertain = outcomes.len() - acknowledged.len() - certainly_not.len();
    let acknowledged_after = acknowledged.len() as u64 - acknowledged_before_kill.min(acknowledged.len() as u64);
    assert!(acknowledged_after >= SENDERS, "delivery resumed after the restart ({acknowledged_after})");
    assert!(uncertain + certainly_not.len() >= 1, "the kill landed while sends were in flight");
    // A ping is acknowledged once handled, and the handler reports it before that: give the
    // pipe reader a moment (bounded) to catch up with the last report.
    let reported = || -> Vec<u64> { handled_by(&first).into_iter().chain(handled_by(&second)).collect() };
    for _ in 0..200 {
        let all = reported();
        if acknowledged.iter().all(|n| all.contains(n)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let handled = reported();
    let mut once = handled.clone();
    once.sort_unstable();
    once.dedup();
    assert_eq!(once.len(), handled.len(), "no ping was handled twice");
    for n in &acknowledged {
        assert!(once.binary_search(n).is_ok(), "ping {n} was acknowledged but never handled");
    }
    for n in &certainly_not {
        assert!(once.binary_search(n).is_err(), "ping {n} was reported not delivered, yet handled");
    }
    drop(second);
}
