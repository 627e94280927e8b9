//! The `almanac` server serves its request latencies with `--metrics-addr`, and a client's
//! latencies are recorded in the client's process (issue 16).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use almanac::RemoteAlmanac;
use common::{record, Server};

/// `GET /metrics` from `addr`: the body of a 200 answer. Bounded: 10 s per read or write.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("the metrics port accepts");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_owned()
}

/// The value of the sample `name` whose labels include each of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = series.split_once('{').unwrap_or((series, ""));
        let wanted = labels.iter().all(|(key, value)| label_text.contains(&format!("{key}=\"{value}\"")));
        (metric == name && wanted).then(|| value.parse::<f64>().expect("a numeric sample"))
    });
    found.unwrap_or_else(|| panic!("no sample {name} with {labels:?} in:\n{text}"))
}

#[tokio::test]
async fn the_almanac_server_and_its_client_record_request_latencies() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_almanac"))
        .args(["--data-dir", dir.path().to_str().unwrap(), "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its first lines: `peer_id`, one `listening` (one address asked for), `metrics`.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().expect("a line").expect("a readable line");
    let peer_id = next().strip_prefix("peer_id ").expect("the peer id first").parse().unwrap();
    let addr = next().strip_prefix("listening ").expect("then its address").parse().unwrap();
    let metrics_line = next();
    let metrics: SocketAddr = metrics_line
        .strip_prefix("metrics http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("then where it serves metrics: {metrics_line:?}"))
        .parse()
        .unwrap();
    let _server = Server { child, peer_id, addr };

    agent_core::metrics::install().unwrap();
    let remote = RemoteAlmanac::new(peer_id, vec![_server.addr.clone()]).unwrap();
    let records: Vec<_> = (0..3).map(|i| record(&format!("metered {i}"), 1)).collect();
    for r in &records {
        remote.register(r.clone()).await.unwrap();
    }
    for r in &records[..2] {
        assert_eq!(&remote.lookup(&r.address).await.unwrap(), r);
    }

    let served = tokio::task::spawn_blocking(move || scrape(metrics)).await.unwrap();
    let server_seconds = "agora_almanac_server_request_seconds_count";
    assert_eq!(value(&served, server_seconds, &[("request", "register")]), 3.0);
    assert_eq!(value(&served, server_seconds, &[("request", "lookup")]), 2.0);
    let here = agent_core::metrics::render().expect("installed above");
    let client_seconds = "agora_almanac_client_request_seconds_count";
    assert_eq!(value(&here, client_seconds, &[("request", "register"), ("result", "ok")]), 3.0);
    assert_eq!(value(&here, client_seconds, &[("request", "lookup"), ("result", "ok")]), 2.0);
}
