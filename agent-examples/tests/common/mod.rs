//! Starting example nodes as child processes and reading what they report.
#![allow(dead_code)] // Each test binary uses a different part.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use agent_core::Address;
use libp2p::{Multiaddr, PeerId};

/// A child node; killed (SIGKILL) when dropped.
pub struct Node {
    pub child: Child,
    pub peer_id: PeerId,
    pub addrs: Vec<Multiaddr>,
    pub agent: Option<Address>,
    /// Every later line the node printed.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `binary` with `args` and reads its `peer_id`, `listening` and `agent` lines.
    pub fn spawn(binary: &str, args: &[String]) -> Node {
        Node::spawn_with_stderr(binary, args, Stdio::null())
    }

    /// [`Node::spawn`], with the node's stderr sent to `stderr` (a log file to search for
    /// panics, say).
    pub fn spawn_with_stderr(binary: &str, args: &[String], stderr: Stdio) -> Node {
        let mut child = Command::new(binary).args(args).stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut peer_id, mut addrs, mut agent) = (None, Vec::new(), None);
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(id) = line.strip_prefix("peer_id ") {
                peer_id = Some(id.parse().unwrap());
            } else if let Some(addr) = line.strip_prefix("listening ") {
                addrs.push(addr.parse().unwrap());
            } else if let Some(address) = line.strip_prefix("agent ") {
                agent = Some(address.parse().unwrap());
                break;
            }
            // The servers print no agent line: their first address is all there is to wait for.
            let server = binary.ends_with("ledger-node") || binary.ends_with("almanac");
            if server && peer_id.is_some() && !addrs.is_empty() {
                break;
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        // Keep the pipe drained for the node's lifetime; remember what it says.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Node { child, peer_id: peer_id.expect("the node printed its peer id"), addrs, agent, lines: seen }
    }

    /// Kills the node with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Waits (at most 10 s) until `ledger` answers again, as after its node restarted.
pub async fn until_ledger_answers(ledger: &agent_core::ledger::RemoteLedger) {
    use agent_core::ledger::Ledger;
    let anyone = agent_core::Identity::from_seed("anyone").address();
    for _ in 0..100 {
        if ledger.balance(anyone).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the ledger node did not answer within 10 s");
}
