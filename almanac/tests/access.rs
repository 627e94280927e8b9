//! Access over the network (issue 16, "Access"): an agent cannot register in another
//! agent's name.
//!
//! A real `almanac` server (the binary, in its own process, on loopback) holds agent A's
//! registration. Agent B sends it, through a `RemoteAlmanac`, registrations for A that it
//! signed itself (naming A with B's key, or with A's key and B's signature), A's genuine
//! registration altered to point at B's node, and an older registration of A's replayed to
//! roll A back. Each is refused with its typed [`AlmanacError`], A's record as the server
//! serves it stays exactly A's, and a query finds A at A's endpoint only. The control: A's
//! own newer registration is accepted through the same client.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent_core::{Identity, ProtocolDigest};
use almanac::{AlmanacError, Query, Registration, RemoteAlmanac, WeightedEndpoint};

/// An `almanac` server process on a loopback port of its choosing; killed when dropped.
struct Server {
    child: Child,
    peer_id: libp2p::PeerId,
    addr: libp2p::Multiaddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_almanac"))
        .args(["--data-dir", dir.to_str().unwrap(), "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Its first two lines name it; read them on a thread so the wait is bounded.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |prefix: &str| -> String {
        let line = lines_rx.recv_timeout(Duration::from_secs(30)).expect("the almanac server starts within 30 s");
        line.strip_prefix(prefix).unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}")).to_owned()
    };
    let peer_id = next("peer_id ").parse().unwrap();
    let addr = next("listening ").parse().unwrap();
    Server { child, peer_id, addr }
}

const QUOTES: ProtocolDigest = ProtocolDigest::from_bytes([0x16; 32]);

/// A registration of `identity` at `endpoint`, signed by `identity`.
fn registration(identity: &Identity, node: &str, endpoint: &str, sequence: u64) -> Registration {
    Registration::sign(
        identity,
        node,
        vec![WeightedEndpoint { addr: endpoint.into(), weight: 1 }],
        vec![QUOTES],
        BTreeMap::from([("service".to_string(), "quotes".to_string())]),
        sequence,
        agent_core::envelope::unix_now_ms() + 600_000,
    )
}

fn bad_signature(result: Result<almanac::Registered, AlmanacError>) -> bool {
    matches!(result, Err(AlmanacError::BadSignature(_)))
}

#[tokio::test]
async fn a_registration_in_another_agents_name_is_refused_by_the_almanac_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let client = RemoteAlmanac::new(server.peer_id, vec![server.addr.clone()]).unwrap();
    let a = Identity::from_seed("almanac access A");
    let b = Identity::from_seed("almanac access B");
    let a_node = libp2p::PeerId::random().to_string();
    let b_node = libp2p::PeerId::random().to_string();
    let (a_at, b_at) = ("/ip4/127.0.0.1/tcp/4101", "/ip4/127.0.0.1/tcp/4102");

    let first = registration(&a, &a_node, a_at, 1);
    client.register(first.clone()).await.unwrap();
    let current = registration(&a, &a_node, a_at, 5);
    client.register(current.clone()).await.unwrap();
    assert_eq!(client.lookup(&a.address()).await.unwrap(), current);

    // Signed by B, naming A: the key is not A's.
    let mut named_a = registration(&b, &b_node, b_at, 6);
    named_a.address = a.address();
    assert!(bad_signature(client.register(named_a).await), "A's address with B's key");
    // A's address and key, B's signature over them.
    let mut with_as_key = registration(&b, &b_node, b_at, 7);
    with_as_key.address = a.address();
    with_as_key.key = a.public_key();
    with_as_key.signature = b.sign(&with_as_key.signing_bytes());
    assert!(bad_signature(client.register(with_as_key).await), "A's key, B's signature");
    // A's genuine registration, pointed at B's node, with a higher sequence.
    let mut redirected = current.clone();
    redirected.peer_id = b_node.clone();
    redirected.endpoints = vec![WeightedEndpoint { addr: b_at.into(), weight: 1 }];
    assert!(bad_signature(client.register(redirected.clone()).await), "redirected");
    redirected.sequence = 8;
    assert!(bad_signature(client.register(redirected).await), "redirected, newer");
    let mut extended = current.clone();
    extended.expires_ms += 3_600_000;
    assert!(bad_signature(client.register(extended).await), "lifetime extended");
    // A's own older registration, replayed to roll A back.
    assert_eq!(client.register(first).await, Err(AlmanacError::StaleSequence { stored: 5, offered: 1 }));

    assert_eq!(client.lookup(&a.address()).await.unwrap(), current, "A's record is unchanged");
    let page = client.query(Query::protocol(QUOTES)).await.unwrap();
    assert_eq!(page.records, vec![current], "A, at A's endpoint, is all a query finds");

    // The control: A's own newer registration, moving A, is accepted.
    let moved = registration(&a, &a_node, "/ip4/127.0.0.1/tcp/4103", 9);
    assert_eq!(client.register(moved.clone()).await.unwrap().sequence, 9);
    assert_eq!(client.lookup(&a.address()).await.unwrap(), moved);
    // B registering itself is fine too: it is only A's name it cannot use.
    client.register(registration(&b, &b_node, b_at, 1)).await.unwrap();
    assert_eq!(client.lookup(&a.address()).await.unwrap(), moved);
}
