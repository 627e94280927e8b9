//! The binaries serve Prometheus metrics with `--metrics-addr` (issue 16): a real
//! `echo-node` and a real `ledger-node` are given traffic over loopback, then scraped.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::ledger::{Ledger, RemoteLedger};
use agent_core::transport::{Endpoint, NetworkConfig, StaticResolver};
use agent_core::{Agent, Bureau, Message};
use agent_examples::{Ping, Pong};
use common::{args, Node};

/// The address a node reported in its `metrics http://ADDR/metrics` line; waits at most
/// 10 s for it.
fn metrics_addr(node: &Node) -> SocketAddr {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let lines = node.lines.lock().unwrap();
        let reported = lines.iter().find_map(|line| line.strip_prefix("metrics http://")?.strip_suffix("/metrics"));
        if let Some(addr) = reported {
            return addr.parse().expect("a socket address");
        }
        drop(lines);
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the node did not report its metrics address");
}

/// `GET /metrics` from `addr`: the body of a 200 answer. Bounded: 10 s per read or write.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("the metrics port accepts");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// Scrapes `addr` until `settled` holds of the text (a handler is counted once it returns,
/// which is after its reply is acknowledged: just after the requester has it); at most 10 s.
fn scrape_until(addr: SocketAddr, settled: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let text = scrape(addr);
        if settled(&text) || started.elapsed() > Duration::from_secs(10) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the sample `name` whose labels include each of `labels`, if there is one.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = series.split_once('{').unwrap_or((series, ""));
        let wanted = labels.iter().all(|(key, value)| label_text.contains(&format!("{key}=\"{value}\"")));
        (metric == name && wanted).then(|| value.parse::<f64>().expect("a numeric sample"))
    })
}

/// The value of the sample `name` whose labels include each of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no sample {name} with {labels:?} in:\n{text}"))
}

#[tokio::test]
async fn echo_node_serves_its_metrics() {
    let node = Node::spawn(
        env!("CARGO_BIN_EXE_echo-node"),
        &args(&["--listen", "/ip4/127.0.0.1/tcp/0", "--metrics-addr", "127.0.0.1:0"]),
    );
    let addr = metrics_addr(&node);
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let resolver = Arc::new(StaticResolver::new());
    let echo = node.agent.expect("the echo node printed its agent");
    resolver.insert(echo, Endpoint { peer_id: node.peer_id, addrs: node.addrs.clone() });
    let bureau = Bureau::new().unwrap();
    let me = bureau.add(Agent::builder("metrics client").build().unwrap()).unwrap();
    let info =
        bureau.listen(NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver)).await.unwrap();
    let ctx = bureau.context(me).unwrap();
    for n in 0..20 {
        let pong: Pong = ctx.request(echo, Ping(n), Duration::from_secs(10)).await.unwrap();
        assert_eq!(pong, Pong(n));
    }

    let pings = [("kind", "echo"), ("message", Ping::NAME)];
    // Each reply went back to this process's node, and was acknowledged.
    let client_peer = info.peer_id.to_string();
    let replies = [("peer", client_peer.clone()), ("outcome", "delivered".to_owned())];
    // Off the runtime: this process's node must go on acknowledging replies meanwhile.
    let text = tokio::task::spawn_blocking(move || {
        let replies = [("peer", replies[0].1.as_str()), ("outcome", replies[1].1.as_str())];
        scrape_until(addr, |text| {
            sample(text, "agora_handler_seconds_count", &pings) == Some(20.0)
                && sample(text, "agora_outcomes_total", &replies) == Some(20.0)
        })
    })
    .await
    .unwrap();
    let replies = [("peer", client_peer.as_str()), ("outcome", "delivered")];
    assert_eq!(value(&text, "agora_agents", &[("kind", "echo")]), 1.0);
    assert_eq!(value(&text, "agora_mailbox_depth", &[("kind", "echo")]), 0.0);
    assert_eq!(value(&text, "agora_handler_seconds_count", &pings), 20.0);
    assert_eq!(value(&text, "agora_outcomes_total", &replies), 20.0, "{text}");
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn ledger_node_serves_its_request_latencies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ledger");
    let node = Node::spawn(
        env!("CARGO_BIN_EXE_ledger-node"),
        &args(&["--data-dir", data.to_str().unwrap(), "--metrics-addr", "127.0.0.1:0"]),
    );
    let addr = metrics_addr(&node);
    let ledger = RemoteLedger::new(node.peer_id, node.addrs.clone()).unwrap();
    let account = agent_core::Identity::from_seed("metrics account").address();
    for _ in 0..3 {
        assert_eq!(ledger.balance(account).await.unwrap(), 0);
    }
    assert_eq!(ledger.next_nonce(account).await.unwrap(), 0);

    let text = tokio::task::spawn_blocking(move || scrape(addr)).await.unwrap();
    assert_eq!(value(&text, "agora_ledger_server_request_seconds_count", &[("request", "balance")]), 3.0);
    assert_eq!(value(&text, "agora_ledger_server_request_seconds_count", &[("request", "next_nonce")]), 1.0);
    assert!(text.contains("# TYPE agora_ledger_server_request_seconds histogram"), "{text}");
}
