//! Two bureaus talking over libp2p on loopback: request/reply in both authentication modes
//! and on TCP and QUIC; forged, replayed and misbound envelopes are refused while the
//! legitimate exchange goes on.

use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::{unix_now_ms, Header};
use agent_core::transport::{Auth, Binding, Endpoint, NetworkConfig, Outcome, StaticResolver};
use agent_core::{Address, Agent, Bureau, Context, Envelope, Identity, Message, ReplyError, RequestError, SendFailure};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
struct Ping(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
struct Pong(u64);

async fn on_ping(ctx: Context, _from: Address, Ping(n): Ping) -> Result<(), ReplyError> {
    ctx.reply(Pong(n)).await
}

struct Pair {
    client: Bureau,
    server: Bureau,
    client_agent: Address,
    server_agent: Address,
    resolver: Arc<StaticResolver>,
}

async fn pair(listen: &str, auth: Auth) -> Pair {
    let resolver = Arc::new(StaticResolver::new());
    let server = Bureau::new().unwrap();
    let mut ponger = Agent::builder("ponger").seed("net ponger").build().unwrap();
    ponger.on_message(on_ping);
    ponger.on_message(|_ctx: Context, _from: Address, _p: Pong| async {});
    let server_agent = server.add(ponger).unwrap();
    let config = |r: Arc<StaticResolver>| NetworkConfig::new(vec![listen.parse().unwrap()], r).with_auth(auth);
    let server_info = server.listen(config(resolver.clone())).await.unwrap();
    resolver.insert(server_agent, Endpoint { peer_id: server_info.peer_id, addrs: server_info.listen_addrs.clone() });

    let client = Bureau::new().unwrap();
    let client_agent = client.add(Agent::builder("pinger").seed("net pinger").build().unwrap()).unwrap();
    let client_info = client.listen(config(resolver.clone())).await.unwrap();
    resolver.insert(client_agent, Endpoint { peer_id: client_info.peer_id, addrs: client_info.listen_addrs });
    Pair { client, server, client_agent, server_agent, resolver }
}

async fn exchange(listen: &str, auth: Auth) {
    let p = pair(listen, auth).await;
    let ctx = p.client.context(p.client_agent).unwrap();
    for n in 0..50 {
        let pong: Pong = ctx.request(p.server_agent, Ping(n), Duration::from_secs(10)).await.unwrap();
        assert_eq!(pong, Pong(n));
    }
    ctx.send(p.server_agent, Ping(99)).await.unwrap();
    p.client.shutdown().await.unwrap();
    p.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_reply_over_tcp_with_session_binding() {
    exchange("/ip4/127.0.0.1/tcp/0", Auth::Bound).await;
}

#[tokio::test]
async fn request_reply_over_quic_with_signatures() {
    exchange("/ip4/127.0.0.1/udp/0/quic-v1", Auth::Signed).await;
}

#[tokio::test]
async fn unroutable_and_rejected_sends_say_why() {
    let p = pair("/ip4/127.0.0.1/tcp/0", Auth::Bound).await;
    let ctx = p.client.context(p.client_agent).unwrap();
    let stranger = Identity::from_seed("stranger").address();
    let err = ctx.send(stranger, Ping(1)).await.unwrap_err();
    assert_eq!(
        err.failure(),
        &SendFailure::Unroutable { to: stranger, reason: agent_core::Unroutable::UnknownAddress }
    );
    // Routed to the server's node, but no such agent lives there.
    let server_peer = p.server.network_info().unwrap();
    p.resolver.insert(stranger, Endpoint { peer_id: server_peer.peer_id, addrs: server_peer.listen_addrs });
    match ctx.send(stranger, Ping(1)).await.unwrap_err().failure() {
        SendFailure::Rejected { reason, .. } => assert!(
            reason.contains("unroutable") || reason.contains("no handler") || reason.contains("unknown"),
            "{reason}"
        ),
        other => panic!("expected Rejected, got {other:?}"),
    }
    // A message type the remote agent does not handle.
    #[derive(Serialize, Deserialize, Message)]
    struct Unhandled;
    match ctx.send(p.server_agent, Unhandled).await.unwrap_err().failure() {
        SendFailure::Rejected { reason, .. } => assert!(reason.contains("schema"), "{reason}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    // A handler error travels back to the remote requester.
    let err = ctx.request::<Ping, Ping>(p.server_agent, Ping(1), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, RequestError::WrongReplyType { .. }), "{err:?}");
    p.client.shutdown().await.unwrap();
    p.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn forged_and_replayed_envelopes_are_rejected_and_the_exchange_goes_on() {
    let p = pair("/ip4/127.0.0.1/tcp/0", Auth::Bound).await;
    let ctx = p.client.context(p.client_agent).unwrap();
    let pinger = Identity::from_seed("net pinger");
    let now = unix_now_ms();
    let header = Header::default();

    // A genuine signed envelope is delivered once; its replay is refused.
    let genuine = Envelope::seal(&pinger, p.server_agent, &Pong(1), header, now, 60_000).unwrap();
    assert_eq!(p.client.forward(&genuine, Duration::from_secs(5)).await.unwrap(), Outcome::Delivered);
    assert_eq!(
        p.client.forward(&genuine, Duration::from_secs(5)).await.unwrap(),
        Outcome::Rejected("replayed envelope".into())
    );

    // Forged: tampered payload, and a signature by another key.
    let mut tampered = Envelope::seal(&pinger, p.server_agent, &Pong(2), header, now, 60_000).unwrap();
    tampered.payload = b"[666]".to_vec();
    let outcome = p.client.forward(&tampered, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(&outcome, Outcome::Rejected(r) if r.contains("signature")), "{outcome:?}");
    let mut impostor =
        Envelope::seal(&Identity::from_seed("mallory"), p.server_agent, &Pong(3), header, now, 60_000).unwrap();
    impostor.sender = pinger.address();
    let outcome = p.client.forward(&impostor, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(&outcome, Outcome::Rejected(r) if r.contains("sender")), "{outcome:?}");

    // The legitimate exchange goes on.
    let pong: Pong = ctx.request(p.server_agent, Ping(7), Duration::from_secs(5)).await.unwrap();
    assert_eq!(pong, Pong(7));
    p.client.shutdown().await.unwrap();
    p.server.shutdown().await.unwrap();
}

#[test]
fn a_session_binding_holds_only_for_its_peer_agent_and_lifetime() {
    let alice = Identity::from_seed("binding alice");
    let node = libp2p::PeerId::random();
    let other_node = libp2p::PeerId::random();
    let now = unix_now_ms();
    let binding = Binding::sign(&alice, &node, now + 60_000);
    binding.verify(&node, now).unwrap();
    // From another peer id.
    assert_eq!(binding.verify(&other_node, now), Err(agent_core::transport::BindingError::BadSignature));
    // For another agent.
    let mut stolen = binding.clone();
    let bob = Identity::from_seed("binding bob");
    stolen.agent = bob.address();
    assert_eq!(stolen.verify(&node, now), Err(agent_core::transport::BindingError::KeyMismatch));
    stolen.agent_key = bob.public_key();
    assert_eq!(stolen.verify(&node, now), Err(agent_core::transport::BindingError::BadSignature));
    // After it expires.
    assert!(matches!(binding.verify(&node, now + 60_001), Err(agent_core::transport::BindingError::Expired { .. })));
}
