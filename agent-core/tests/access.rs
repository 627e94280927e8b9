//! Access over the network (issue 16, "Access"): an agent cannot transfer, release an
//! escrow or reply in another agent's name.
//!
//! - Transfers: a ledger served over libp2p on loopback (`ledger::service::serve`, used
//!   through a `RemoteLedger`) refuses a transaction for account A signed by someone else,
//!   and A's genuine transaction with its amount or payee changed, with the typed
//!   [`LedgerError`]; balances and nonces stay as they were, and A's untouched transaction
//!   still applies (the control).
//! - Escrow: a third party cannot release or refund an escrow, in its own name or claiming
//!   the payer's or arbiter's; the funds stay locked until the arbiter or the payer settles.
//! - Replies: a requester B waiting for A's reply is answered by A only. Replies forged by C
//!   (sealed by C, or naming A as their sender) are refused by B's node, whether they come
//!   from C's own node or back on the request's own stream, and B's request gets A's payload
//!   (or times out), never C's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::{unix_now_ms, Header};
use agent_core::ledger::{
    service, Amount, EscrowId, Ledger, LedgerError, LocalLedger, LocalLedgerConfig, Operation, RemoteLedger,
    Transaction,
};
use agent_core::transport::{Endpoint, NetworkConfig, Outcome, StaticResolver};
use agent_core::{
    Address, Agent, Bureau, Cause, Context, Envelope, Identity, Message, RequestError, Wallet, WalletError,
};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use serde::{Deserialize, Serialize};

const T0: u64 = 1_790_000_000_000;

fn loopback() -> Vec<libp2p::Multiaddr> {
    vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]
}

/// A ledger with a clock the test moves, served over libp2p on loopback, and a client of
/// it. The server handle must be kept alive for the service to run.
struct Served {
    local: Arc<LocalLedger>,
    remote: Arc<RemoteLedger>,
    clock: Arc<AtomicU64>,
    faucet: Wallet,
    _server: agent_core::net::rpc::ServerHandle,
}

async fn served_ledger() -> Served {
    let mint = Identity::from_seed("access mint");
    let clock = Arc::new(AtomicU64::new(T0));
    let read = clock.clone();
    let config = LocalLedgerConfig::default()
        .with_authority(mint.address())
        .with_durable(false)
        .with_clock(move || read.load(Ordering::SeqCst));
    let local = Arc::new(LocalLedger::open(config).unwrap());
    let server =
        service::serve(local.clone(), agent_core::net::node_keypair("access ledger node"), &loopback()).await.unwrap();
    let remote = Arc::new(RemoteLedger::new(server.peer_id(), server.listen_addrs().to_vec()).unwrap());
    // The faucet too goes over the network: every submission here crosses loopback.
    let faucet = Wallet::new(mint, remote.clone());
    Served { local, remote, clock, faucet, _server: server }
}

/// Balances and next nonces of `accounts`, read over the network.
async fn books(ledger: &RemoteLedger, accounts: &[Address]) -> Vec<(Amount, u64)> {
    let mut out = Vec::with_capacity(accounts.len());
    for account in accounts {
        out.push((ledger.balance(*account).await.unwrap(), ledger.next_nonce(*account).await.unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_in_another_accounts_name_is_refused_over_the_network() {
    let s = served_ledger().await;
    let alice = Identity::from_seed("access alice").derive("wallet");
    let bob = Identity::from_seed("access bob").derive("wallet");
    let mallory = Identity::from_seed("access mallory").derive("wallet");
    s.faucet.mint(alice.address(), 1_000).await.unwrap();
    s.faucet.mint(mallory.address(), 10).await.unwrap();
    let accounts = [alice.address(), bob.address(), mallory.address()];
    let before = books(&s.remote, &accounts).await;
    assert_eq!(before, [(1_000, 0), (0, 0), (10, 0)]);
    let height = s.local.height().unwrap();

    // Signed by mallory, naming alice as the signer: the key is not alice's.
    let to_mallory = Operation::Transfer { to: mallory.address(), amount: 500 };
    let mut claimed = Transaction::sign(&mallory, 0, to_mallory.clone(), "");
    claimed.signer = alice.address();
    assert_eq!(s.remote.submit(claimed).await, Err(LedgerError::SignerKeyMismatch));

    // Alice's address and public key, mallory's signature over them.
    let mut with_alices_key = Transaction::sign(&mallory, 0, to_mallory.clone(), "");
    with_alices_key.signer = alice.address();
    with_alices_key.signer_key = alice.public_key();
    with_alices_key.signature = mallory.sign(&with_alices_key.signing_bytes());
    assert_eq!(s.remote.submit(with_alices_key).await, Err(LedgerError::BadSignature));

    // Alice's genuine transaction to bob, changed after she signed it.
    let genuine = Transaction::sign(&alice, 0, Operation::Transfer { to: bob.address(), amount: 100 }, "rent");
    let mut more = genuine.clone();
    more.operation = Operation::Transfer { to: bob.address(), amount: 900 };
    assert_eq!(s.remote.submit(more).await, Err(LedgerError::BadSignature));
    let mut redirected = genuine.clone();
    redirected.operation = Operation::Transfer { to: mallory.address(), amount: 100 };
    assert_eq!(s.remote.submit(redirected).await, Err(LedgerError::BadSignature));
    let mut renumbered = genuine.clone();
    renumbered.nonce = 1;
    assert_eq!(s.remote.submit(renumbered).await, Err(LedgerError::BadSignature));

    assert_eq!(books(&s.remote, &accounts).await, before, "no balance moved, no nonce used");
    assert_eq!(s.local.height().unwrap(), height, "nothing was applied");

    // The control: alice's transaction as she signed it applies, whoever hands it in, once.
    let receipt = s.remote.submit(genuine.clone()).await.unwrap();
    assert_eq!(receipt.tx, genuine);
    assert_eq!(books(&s.remote, &accounts).await, [(900, 1), (100, 0), (10, 0)]);
    assert!(matches!(s.remote.submit(genuine).await, Err(LedgerError::NonceMismatch { expected: 1, got: 0, .. })));
    assert_eq!(s.local.audit_total().unwrap(), 1_010);
}

/// `who`'s transaction settling `escrow`, signed by `who` with its next nonce.
async fn settle(ledger: &RemoteLedger, who: &Identity, operation: Operation) -> Result<(), LedgerError> {
    let nonce = ledger.next_nonce(who.address()).await?;
    ledger.submit(Transaction::sign(who, nonce, operation, "")).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_payer_or_the_arbiter_can_settle_an_escrow_over_the_network() {
    let s = served_ledger().await;
    let payer = Identity::from_seed("access payer").derive("wallet");
    let arbiter = Identity::from_seed("access arbiter").derive("wallet");
    let beneficiary = Identity::from_seed("access beneficiary").derive("wallet");
    let thief = Identity::from_seed("access thief").derive("wallet");
    s.faucet.mint(payer.address(), 1_000).await.unwrap();
    let payer_wallet = Wallet::new(payer.clone(), s.remote.clone());
    let thief_wallet = Wallet::new(thief.clone(), s.remote.clone());
    let beneficiary_wallet = Wallet::new(beneficiary.clone(), s.remote.clone());
    let (escrow, _) = payer_wallet.lock(300, beneficiary.address(), T0 + 1_000, arbiter.address(), None).await.unwrap();
    let accounts = [payer.address(), arbiter.address(), beneficiary.address(), thief.address()];
    let locked = books(&s.remote, &accounts).await;
    assert_eq!(locked.iter().map(|(balance, _)| *balance).collect::<Vec<_>>(), [700, 0, 0, 0]);
    let open = s.remote.escrow(escrow).await.unwrap().expect("the escrow is open");

    let unauthorised = |result: Result<(), LedgerError>| matches!(result, Err(LedgerError::Unauthorized(_)));
    let release = Operation::Release { escrow };
    let refund = Operation::Refund { escrow };
    // In its own name: neither a third party nor the beneficiary may settle.
    assert!(unauthorised(settle(&s.remote, &thief, release.clone()).await));
    assert!(matches!(thief_wallet.release(escrow).await, Err(WalletError::Ledger(LedgerError::Unauthorized(_)))));
    assert!(matches!(beneficiary_wallet.release(escrow).await, Err(WalletError::Ledger(LedgerError::Unauthorized(_)))));
    // In the payer's or the arbiter's name, signed by the thief.
    for victim in [&payer, &arbiter] {
        let nonce = s.remote.next_nonce(victim.address()).await.unwrap();
        let mut claimed = Transaction::sign(&thief, nonce, release.clone(), "");
        claimed.signer = victim.address();
        assert_eq!(s.remote.submit(claimed).await, Err(LedgerError::SignerKeyMismatch));
        let mut with_victims_key = Transaction::sign(&thief, nonce, release.clone(), "");
        with_victims_key.signer = victim.address();
        with_victims_key.signer_key = victim.public_key();
        with_victims_key.signature = thief.sign(&with_victims_key.signing_bytes());
        assert_eq!(s.remote.submit(with_victims_key).await, Err(LedgerError::BadSignature));
    }
    // The payer's own release of another escrow, pointed at this one.
    let other = EscrowId::of(&payer.address(), 99);
    let mut repointed = Transaction::sign(&payer, 1, Operation::Release { escrow: other }, "");
    repointed.operation = release.clone();
    assert_eq!(s.remote.submit(repointed).await, Err(LedgerError::BadSignature));
    // After the deadline, a refund by the thief is refused too.
    s.clock.store(T0 + 2_000, Ordering::SeqCst);
    assert!(unauthorised(settle(&s.remote, &thief, refund).await));
    s.clock.store(T0, Ordering::SeqCst);

    assert_eq!(s.remote.escrow(escrow).await.unwrap(), Some(open), "still locked, unchanged");
    let after = books(&s.remote, &accounts).await;
    assert_eq!(after[..3], locked[..3], "payer, arbiter and beneficiary untouched");
    assert_eq!(after[3].0, 0, "the thief got nothing");

    // The controls: the arbiter releases this escrow to the beneficiary; the payer
    // releases a second one.
    settle(&s.remote, &arbiter, release).await.unwrap();
    assert_eq!(s.remote.escrow(escrow).await.unwrap(), None);
    assert_eq!(beneficiary_wallet.balance().await.unwrap(), 300);
    let (second, _) = payer_wallet.lock(200, beneficiary.address(), T0 + 1_000, arbiter.address(), None).await.unwrap();
    assert!(matches!(thief_wallet.release(second).await, Err(WalletError::Ledger(LedgerError::Unauthorized(_)))));
    payer_wallet.release(second).await.unwrap();
    assert_eq!(beneficiary_wallet.balance().await.unwrap(), 500);
    assert_eq!(payer_wallet.balance().await.unwrap(), 500);
    assert_eq!(thief_wallet.balance().await.unwrap(), 0);
    assert_eq!(s.local.audit_total().unwrap(), 1_000);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ask(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Answer(String);

/// How long any one step of the reply test may take.
const STEP: Duration = Duration::from_secs(10);

/// A node hosting A, driven by hand: a libp2p peer that accepts envelope streams and
/// speaks frames (docs/wire-format.md) itself. The test reads B's request off the wire,
/// learns its nonce (which nobody outside B's and A's nodes sees) and hands it to the
/// attacker, then answers as A would.
struct HandHost {
    peer_id: libp2p::PeerId,
    addrs: Vec<libp2p::Multiaddr>,
    incoming: libp2p_stream::IncomingStreams,
    swarm: tokio::task::JoinHandle<()>,
}

async fn hand_host() -> HandHost {
    let behaviour = libp2p_stream::Behaviour::new();
    let mut control = behaviour.new_control();
    let mut swarm = agent_core::net::swarm(libp2p::identity::Keypair::generate_ed25519(), behaviour).unwrap();
    let peer_id = *swarm.local_peer_id();
    let incoming = control.accept(libp2p::StreamProtocol::new(agent_core::transport::PROTOCOL)).unwrap();
    let addrs = agent_core::net::listen(&mut swarm, &loopback()).await.unwrap();
    let swarm = tokio::spawn(async move {
        // Bounded: the test ends well within this, and aborts the task anyway.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::time::timeout_at(deadline, swarm.select_next_some()).await.is_ok() {}
    });
    HandHost { peer_id, addrs, incoming, swarm }
}

/// One frame: its tag and body. Pings from the requester's link are answered on the way.
async fn read_frame(stream: &mut libp2p::Stream) -> (u8, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + STEP;
    for _ in 0..100 {
        let mut len = [0u8; 4];
        tokio::time::timeout_at(deadline, stream.read_exact(&mut len)).await.expect("a frame in time").unwrap();
        let len = u32::from_be_bytes(len) as usize;
        assert!((1..=(2 << 20)).contains(&len), "frame of {len} bytes");
        let mut body = vec![0u8; len];
        tokio::time::timeout_at(deadline, stream.read_exact(&mut body)).await.expect("a frame in time").unwrap();
        let tag = body.remove(0);
        if tag == 4 {
            write_frame(stream, 5, &body).await; // ping → pong
            continue;
        }
        return (tag, body);
    }
    panic!("only pings for 100 frames")
}

async fn write_frame(stream: &mut libp2p::Stream, tag: u8, body: &[u8]) {
    let mut out = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(tag);
    out.extend_from_slice(body);
    tokio::time::timeout(STEP, async {
        stream.write_all(&out).await.unwrap();
        stream.flush().await.unwrap();
    })
    .await
    .expect("written in time");
}

/// Reads frames (skipping session bindings) until an envelope; acknowledges it as
/// delivered and returns it.
async fn take_request(stream: &mut libp2p::Stream) -> Envelope {
    for _ in 0..16 {
        let (tag, body) = read_frame(stream).await;
        match tag {
            1 => continue, // the requester's session binding
            2 => {
                let (seq, bytes) = (&body[..8], &body[9..]);
                let envelope = Envelope::decode(bytes, 1 << 20).unwrap();
                let mut ack = seq.to_vec();
                ack.push(0); // delivered
                write_frame(stream, 3, &ack).await;
                return envelope;
            }
            other => panic!("unexpected frame tag {other} from the requester"),
        }
    }
    panic!("no envelope in 16 frames")
}

/// Writes `reply` back on the request's stream as a signed envelope frame and returns the
/// requester's verdict: `None` if delivered, else the rejection's cause.
async fn reply_on_stream(stream: &mut libp2p::Stream, seq: u64, reply: &Envelope) -> Option<Cause> {
    let mut body = seq.to_be_bytes().to_vec();
    body.push(0); // signed
    body.extend_from_slice(&reply.encode());
    write_frame(stream, 2, &body).await;
    for _ in 0..16 {
        let (tag, body) = read_frame(stream).await;
        if tag != 3 || body[..8] != seq.to_be_bytes() {
            continue;
        }
        return match body[8] {
            0 => None,
            1 => Some(Cause::from_code(body[9])),
            other => panic!("unknown verdict {other}"),
        };
    }
    panic!("no acknowledgement of the reply")
}

/// A reply to `request` carrying `text`, sealed by `by`.
fn reply_to(request: &Envelope, by: &Identity, text: &str) -> Envelope {
    let header = Header {
        session: request.session,
        protocol: None,
        in_reply_to: Some(request.nonce),
        expects_reply: false,
        trace_id: request.trace_id,
    };
    Envelope::seal(by, request.sender, &Answer(text.into()), header, unix_now_ms(), 60_000).unwrap()
}

/// The replies C forges to `request`, each with what B's node must answer: sealed by C
/// (not the agent asked), naming A with C's key, and naming A with A's key but C's
/// signature.
fn forgeries(request: &Envelope, a: &Identity, c: &Identity) -> Vec<(&'static str, Envelope, Cause)> {
    let by_c = reply_to(request, c, "from C");
    let mut claims_a = reply_to(request, c, "from C, claiming A");
    claims_a.sender = a.address();
    let mut with_as_key = reply_to(request, c, "from C, with A's key");
    with_as_key.sender = a.address();
    with_as_key.sender_key = a.public_key();
    with_as_key.signature = c.sign(&with_as_key.signed_bytes());
    vec![
        ("sealed by C", by_c, Cause::NotAwaited),
        ("naming A, C's key", claims_a, Cause::BadSignature),
        ("naming A, A's key, C's signature", with_as_key, Cause::BadSignature),
    ]
}

/// Sends every forgery from C's own node, then (freshly sealed) back on the request's own
/// stream, and checks each is refused for its reason.
async fn forge(c_node: &Bureau, stream: &mut libp2p::Stream, request: &Envelope, a: &Identity, c: &Identity) {
    for (what, forged, cause) in forgeries(request, a, c) {
        match c_node.forward(&forged, STEP).await.unwrap() {
            Outcome::Rejected(rejection) => assert_eq!(rejection.cause, cause, "{what}, from C's node: {rejection}"),
            other => panic!("a forged reply ({what}, from C's node) must be refused, got {other:?}"),
        }
    }
    for (seq, (what, forged, cause)) in (1_000..).zip(forgeries(request, a, c)) {
        assert_eq!(reply_on_stream(stream, seq, &forged).await, Some(cause), "{what}, on the request's stream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_in_another_agents_name_is_refused_over_the_network() {
    let resolver = Arc::new(StaticResolver::new());
    let a = Identity::from_seed("access replier A");
    let c = Identity::from_seed("access impostor C");

    // B, the requester, in a bureau of its own listening on loopback.
    let b_node = Bureau::new().unwrap();
    let b = b_node.add(Agent::builder("requester B").seed("access requester B").build().unwrap()).unwrap();
    let b_info = b_node.listen(NetworkConfig::new(loopback(), resolver.clone())).await.unwrap();
    resolver.insert(b, Endpoint { peer_id: b_info.peer_id, addrs: b_info.listen_addrs });

    // A's node, driven by hand; C's node, a bureau of its own.
    let mut host = hand_host().await;
    resolver.insert(a.address(), Endpoint { peer_id: host.peer_id, addrs: host.addrs.clone() });
    let c_node = Bureau::new().unwrap();
    c_node.add(Agent::builder("impostor C").identity(c.clone()).build().unwrap()).unwrap();
    c_node.listen(NetworkConfig::new(loopback(), resolver.clone())).await.unwrap();

    // B asks A; the request reaches A's node, which learns its nonce.
    let ctx: Context = b_node.context(b).unwrap();
    let (asking, a_address) = (ctx.clone(), a.address());
    let waiting = tokio::spawn(async move { asking.request::<Ask, Answer>(a_address, Ask(1), STEP).await });
    let (_, mut stream) =
        tokio::time::timeout(STEP, host.incoming.next()).await.expect("B's node connects in time").unwrap();
    let request = take_request(&mut stream).await;
    assert_eq!((request.sender, request.target, request.expects_reply), (b, a.address(), true));
    assert_eq!(request.open::<Ask>().unwrap(), Ask(1));

    // C answers in A's stead, every way it can: all refused, and B still waits.
    forge(&c_node, &mut stream, &request, &a, &c).await;
    assert!(!waiting.is_finished(), "B's request is still waiting for A");

    // The control: A's genuine reply, by the same path C's first forgery took, is taken.
    let genuine = reply_to(&request, &a, "from A");
    assert_eq!(c_node.forward(&genuine, STEP).await.unwrap(), Outcome::Delivered);
    let answer = tokio::time::timeout(STEP, waiting).await.expect("B's request ends").unwrap();
    assert_eq!(answer.unwrap(), Answer("from A".into()), "B got A's reply, not C's");

    // A second request that only C answers ends in a timeout, never in C's payload.
    let asking = ctx.clone();
    let waiting =
        tokio::spawn(
            async move { asking.request::<Ask, Answer>(a_address, Ask(2), Duration::from_millis(1_500)).await },
        );
    let request = take_request(&mut stream).await;
    assert_eq!(request.open::<Ask>().unwrap(), Ask(2));
    forge(&c_node, &mut stream, &request, &a, &c).await;
    let answer = tokio::time::timeout(STEP, waiting).await.expect("B's request ends").unwrap();
    assert!(matches!(answer, Err(RequestError::Timeout { .. })), "{answer:?}");
    // Too late now even for A: nobody waits for it any more.
    assert_eq!(reply_on_stream(&mut stream, 2_000, &reply_to(&request, &a, "late")).await, Some(Cause::NotAwaited));

    host.swarm.abort();
    c_node.shutdown().await.unwrap();
    b_node.shutdown().await.unwrap();
}
