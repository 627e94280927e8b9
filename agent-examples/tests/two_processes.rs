//! Agents in two OS processes on 127.0.0.1: request/reply over TCP and over QUIC, and the
//! receiving process killed mid-stream and restarted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::{unix_now_ms, Header};
use agent_core::transport::{Endpoint, NetworkConfig, Outcome, StaticResolver};
use agent_core::{Address, Agent, Bureau, Envelope, Identity, SendFailure};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_stream_and_restarted() {
    let port = free_tcp_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let node_args = args(&["--listen", &listen, "--node-seed", "fault test node", "--log-handled"]);
    let mut first = Node::spawn(ECHO, &node_args);
    let (bureau, me, echo) = client(&first, "/ip4/127.0.0.1/tcp/0", Duration::from_millis(1500)).await;
    let ctx = bureau.context(me).unwrap();

    // An envelope the receiver accepts before the kill, to replay after the restart.
    let me_identity = Identity::from_seed("two process client");
    let accepted =
        Envelope::seal(&me_identity, echo, &Ping(1_000_000), Header::default(), unix_now_ms(), 120_000).unwrap();
    assert_eq!(bureau.forward(&accepted, Duration::from_secs(5)).await.unwrap(), Outcome::Delivered);

    let mut outcomes = Vec::new();
    let mut second = None;
    let (mut timeouts_seen, mut delivered_after_restart) = (0, 0);
    for n in 0..400u64 {
        let outcome = ctx.send(echo, Ping(n)).await;
        match &outcome {
            Err(err)
                if matches!(
                    err.failure(),
                    SendFailure::NotAcknowledged { .. }
                        | SendFailure::Unreachable { .. }
                        | SendFailure::Rejected { .. }
                ) =>
            {
                timeouts_seen += 1
            }
            Ok(()) if second.is_some() => delivered_after_restart += 1,
            _ => {}
        }
        outcomes.push(outcome.map_err(|e| e.failure().clone()));
        if n == 100 {
            first.kill();
        }
        if n > 100 && timeouts_seen >= 2 && second.is_none() {
            second = Some(Node::spawn(ECHO, &node_args));
        }
        if delivered_after_restart >= 50 {
            break;
        }
    }
    let second = second.expect("the node was restarted");
    assert!(timeouts_seen >= 2, "the sender saw the receiver go away");
    assert!(delivered_after_restart >= 50, "delivery resumed after the restart");
    let sent = outcomes.len();
    assert_eq!(sent, outcomes.iter().filter(|o| o.is_ok()).count() + outcomes.iter().filter(|o| o.is_err()).count());

    // Replaying what the first process accepted is refused by the second.
    let replayed = bureau.forward(&accepted, Duration::from_secs(5)).await.unwrap();
    assert!(
        matches!(&replayed, Outcome::Rejected(r) if r.cause == agent_core::Cause::MayHaveBeenHandled),
        "{replayed:?}"
    );

    bureau.shutdown().await.unwrap();
    // Every message acknowledged after the restart is handled by the second process; wait
    // (bounded) for the last one's report to come through the pipe.
    let last_ok = outcomes.iter().rposition(|o| o.is_ok()).unwrap() as u64;
    let reported = |node: &Node| -> Vec<u64> {
        node.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("handled ").and_then(|n| n.parse().ok()))
            .collect()
    };
    for _ in 0..100 {
        if reported(&second).contains(&last_ok) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut handled: Vec<u64> = reported(&first).into_iter().chain(reported(&second)).collect();
    let total = handled.len();
    handled.sort_unstable();
    handled.dedup();
    assert_eq!(handled.len(), total, "no message was handled twice");
    assert!(handled.contains(&last_ok), "the last acknowledged message ({last_ok}) was handled");
}
