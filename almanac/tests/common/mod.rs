//! Starting the `almanac` server as a child process, and records to give it.
#![allow(dead_code)] // Each test binary uses a different part.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use agent_core::Identity;
use almanac::{Registration, WeightedEndpoint};

/// A running `almanac` server; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub peer_id: libp2p::PeerId,
    pub addr: libp2p::Multiaddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on `port` with its database in `dir`, and reads its address lines.
pub fn start(dir: &std::path::Path, port: u16) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_almanac"))
        .args(["--data-dir", dir.to_str().unwrap(), "--node-seed", "almanac restart test"])
        .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let peer_id = lines.next().unwrap().unwrap().strip_prefix("peer_id ").unwrap().parse().unwrap();
    let addr = lines.next().unwrap().unwrap().strip_prefix("listening ").unwrap().parse().unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, peer_id, addr }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A signed registration of the agent with `seed`, valid for ten minutes.
pub fn record(seed: &str, sequence: u64) -> Registration {
    Registration::sign(
        &Identity::from_seed(seed),
        libp2p::PeerId::random().to_string(),
        vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }],
        vec![],
        BTreeMap::from([("service".to_string(), "test".to_string())]),
        sequence,
        agent_core::envelope::unix_now_ms() + 600_000,
    )
}
