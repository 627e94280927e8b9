//! Access over the network (issue 16, "Access"): an agent cannot submit subnet weights,
//! or register in a subnet, in another agent's name.
//!
//! Three nodes on loopback: a ledger node (`ledger::service::serve`), the subnet owner's
//! bureau, and a bureau hosting validators V and W; both bureaus settle on the ledger
//! node through a `RemoteLedger`, and every subnet message crosses libp2p. W, a staked
//! validator itself, tries to act as V:
//!
//! - it sends V's genuine signed [`Commit`] and [`Reveal`] as its own, and commits and
//!   reveals it signed itself naming V (with its own key, or with V's key and its own
//!   signature): the owner refuses each with [`WeightsRefusal::NotTheSender`];
//! - it forwards envelopes claiming V as their sender: V's node-level authentication
//!   refuses them ([`Cause::BadSignature`]) before the owner sees them;
//! - it registers V (as a miner, or with W's wallet as the payee): [`RegisterRefusal::NotTheSender`].
//!
//! The controls: the very commit and reveal W replayed are accepted when V sends them, so
//! nothing was recorded for V before; the weights the owner publishes for V are V's; V's
//! registration names V's wallet.

use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::{unix_now_ms, Header};
use agent_core::ledger::{service, LocalLedger, LocalLedgerConfig, RemoteLedger};
use agent_core::transport::{Endpoint, NetworkConfig, Outcome, StaticResolver};
use agent_core::{Address, Agent, Bureau, Cause, Config, Context, Envelope, Identity, Message, Wallet};
use agent_protocols::subnet::commit_reveal::commitment;
use agent_protocols::subnet::owner::{self, Owner};
use agent_protocols::subnet::validator::{self, Validator};
use agent_protocols::subnet::{
    Commit, Register, RegisterRefusal, Registered, Reveal, RevealedWeights, Role, UidWeight, WeightsAnswer,
    WeightsQuery, WeightsRefusal,
};

/// How long any one exchange may take.
const STEP: Duration = Duration::from_secs(10);
const SUBNET: u16 = 1;

/// A bureau on `ledger` listening on loopback, its agents routed through `resolver`.
async fn node(
    ledger: &Arc<RemoteLedger>,
    resolver: &Arc<StaticResolver>,
    agents: Vec<Agent>,
) -> (Bureau, Vec<Address>) {
    let bureau = Bureau::with_config(Config::default().with_ledger(ledger.clone()).with_request_timeout(STEP)).unwrap();
    let addresses: Vec<Address> = agents.into_iter().map(|agent| bureau.add(agent).unwrap()).collect();
    let config =
        NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver.clone()).with_delivery_timeout(STEP);
    let info = bureau.listen(config).await.unwrap();
    for address in &addresses {
        resolver.insert(*address, Endpoint { peer_id: info.peer_id, addrs: info.listen_addrs.clone() });
    }
    (bureau, addresses)
}

async fn ask<M: Message>(ctx: &Context, owner: Address, message: M) -> WeightsAnswer {
    ctx.request::<M, WeightsAnswer>(owner, message, STEP).await.unwrap()
}

fn not_the_sender() -> WeightsAnswer {
    WeightsAnswer::Refused(WeightsRefusal::NotTheSender)
}

/// Forwards `message` from W's node to the owner in an envelope that names `victim` as its
/// sender, sealed with W's key (as is, and with the victim's key put in); both must be
/// refused by the owner's node as badly signed.
async fn forward_as<M: Message>(w_node: &Bureau, w: &Identity, victim: &Identity, owner: Address, message: &M) {
    let header = Header { expects_reply: true, ..Header::default() };
    let mut claims = Envelope::seal(w, owner, message, header, unix_now_ms(), 60_000).unwrap();
    claims.sender = victim.address();
    let mut with_key = Envelope::seal(w, owner, message, header, unix_now_ms(), 60_000).unwrap();
    with_key.sender = victim.address();
    with_key.sender_key = victim.public_key();
    with_key.signature = w.sign(&with_key.signed_bytes());
    for (what, forged) in [("the victim's address", claims), ("the victim's address and key", with_key)] {
        match w_node.forward(&forged, STEP).await.unwrap() {
            Outcome::Rejected(rejection) => assert_eq!(rejection.cause, Cause::BadSignature, "{what}: {rejection}"),
            other => panic!("an envelope with {what}, sealed by W, must be refused: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_and_registrations_in_another_validators_name_are_refused_over_the_network() {
    // The ledger node.
    let mint = Identity::from_seed("subnet access mint");
    let local = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap());
    let listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let ledger_server =
        service::serve(local.clone(), agent_core::net::node_keypair("subnet access ledger"), &listen).await.unwrap();
    let ledger = Arc::new(RemoteLedger::new(ledger_server.peer_id(), ledger_server.listen_addrs().to_vec()).unwrap());
    let faucet = Wallet::new(mint, ledger.clone());
    let resolver = Arc::new(StaticResolver::new());

    // The owner's node.
    let mut agent = Agent::builder("subnet owner").seed("subnet access owner").build().unwrap();
    // A reveal delay of one epoch: weights committed in epoch 0 are scored, and published,
    // at the close of epoch 1.
    let subnet = Owner::serve(&mut agent, owner::Config::default().with_subnet(SUBNET).with_reveal_delay(1));
    let (owner_node, addresses) = node(&ledger, &resolver, vec![agent]).await;
    let owner = addresses[0];
    let owner_ctx = owner_node.context(owner).unwrap();

    // The validators' node: W, then V.
    let (w_id, v_id) = (Identity::from_seed("subnet access W"), Identity::from_seed("subnet access V"));
    let mut agents = Vec::new();
    let mut handles = Vec::new();
    for id in [&w_id, &v_id] {
        let mut agent = Agent::builder("validator").identity(id.clone()).build().unwrap();
        handles.push(Validator::serve(&mut agent, id.clone(), owner, validator::Config::default()));
        agents.push(agent);
    }
    let (validators_node, addresses) = node(&ledger, &resolver, agents).await;
    let (wc, vc) = (validators_node.context(addresses[0]).unwrap(), validators_node.context(addresses[1]).unwrap());
    let (w, v) = (&handles[0], &handles[1]);
    let (w_wallet, v_wallet) = (wc.wallet().unwrap().address(), vc.wallet().unwrap().address());
    // Each locks 1 000 as stake and pays the registration fee.
    let fee = subnet.config().registration_fee();
    faucet.mint(w_wallet, 1_000 + fee).await.unwrap();
    faucet.mint(v_wallet, 1_000 + fee).await.unwrap();
    let w_uid = w.register(&wc, 1_000).await.unwrap();

    // Registering V, as W.
    let register = |r: Register| {
        let wc = wc.clone();
        async move { wc.request::<Register, Registered>(owner, r, STEP).await.unwrap() }
    };
    let vs_own = Register::sign(&v_id, SUBNET, Role::Miner, v_wallet, None);
    assert_eq!(register(vs_own).await, Registered::Refused(RegisterRefusal::NotTheSender), "V's, sent by W");
    let mut paying_w = Register::sign(&w_id, SUBNET, Role::Miner, w_wallet, None);
    paying_w.agent = v_id.address();
    paying_w.key = v_id.public_key();
    paying_w.signature = w_id.sign(&paying_w.signing_bytes());
    assert_eq!(register(paying_w).await, Registered::Refused(RegisterRefusal::NotTheSender), "V paying W");
    assert_eq!(subnet.members().len(), 1, "only W is registered");
    // The control: V registers itself, paid to its own wallet.
    let v_uid = v.register(&vc, 1_000).await.unwrap();
    let v_member = subnet.members().into_iter().find(|m| m.uid == v_uid).unwrap();
    assert_eq!((v_member.agent, v_member.wallet, v_member.role), (v_id.address(), v_wallet, Role::Validator));

    // Epoch 0: commits in V's name.
    let vs_weights = vec![UidWeight { uid: v_uid, weight: 40 }, UidWeight { uid: w_uid, weight: 60 }];
    let all_to_w = vec![UidWeight { uid: w_uid, weight: u16::MAX }];
    let salt = [0x16; 32];
    let vs_commit = Commit::sign(&v_id, SUBNET, 0, commitment(SUBNET, 0, &v_id.address(), &vs_weights, &salt));
    assert_eq!(ask(&wc, owner, vs_commit.clone()).await, not_the_sender(), "V's commit, sent by W");
    let ws_hash_for_v = commitment(SUBNET, 0, &v_id.address(), &all_to_w, &salt);
    let mut named_v = Commit::sign(&w_id, SUBNET, 0, ws_hash_for_v);
    named_v.validator = v_id.address();
    named_v.signature = w_id.sign(&named_v.signing_bytes());
    assert_eq!(ask(&wc, owner, named_v.clone()).await, not_the_sender(), "naming V, W's key");
    let mut with_vs_key = named_v.clone();
    with_vs_key.key = v_id.public_key();
    with_vs_key.signature = w_id.sign(&with_vs_key.signing_bytes());
    assert_eq!(ask(&wc, owner, with_vs_key.clone()).await, not_the_sender(), "naming V, V's key, W's signature");
    forward_as(&validators_node, &w_id, &v_id, owner, &with_vs_key).await;
    // The control: the commit W replayed is V's to make, and nothing was recorded for V.
    assert_eq!(ask(&vc, owner, vs_commit).await, WeightsAnswer::Committed { epoch: 0, reveal_in: 1, scored_at: 1 });
    subnet.close_epoch(&owner_ctx).await.unwrap();

    // Epoch 1: reveals in V's name.
    let vs_reveal = Reveal::sign(&v_id, SUBNET, 0, vs_weights.clone(), salt);
    assert_eq!(ask(&wc, owner, vs_reveal.clone()).await, not_the_sender(), "V's reveal, sent by W");
    let mut rewritten = vs_reveal.clone();
    rewritten.weights = all_to_w.clone();
    rewritten.key = w_id.public_key();
    rewritten.signature = w_id.sign(&rewritten.signing_bytes());
    assert_eq!(ask(&wc, owner, rewritten).await, not_the_sender(), "naming V, W's key");
    let mut with_vs_key = vs_reveal.clone();
    with_vs_key.weights = all_to_w.clone();
    with_vs_key.signature = w_id.sign(&with_vs_key.signing_bytes());
    assert_eq!(ask(&wc, owner, with_vs_key.clone()).await, not_the_sender(), "naming V, V's key, W's signature");
    forward_as(&validators_node, &w_id, &v_id, owner, &with_vs_key).await;
    forward_as(&validators_node, &w_id, &v_id, owner, &vs_reveal).await;
    let published: RevealedWeights =
        vc.request(owner, WeightsQuery { subnet: SUBNET, uid: v_uid }, STEP).await.unwrap();
    assert_eq!((published.epoch, published.weights), (None, Vec::new()), "nothing revealed for V yet");
    // The control: V's own reveal counts, and the weights published for V are V's.
    assert_eq!(ask(&vc, owner, vs_reveal).await, WeightsAnswer::Revealed { epoch: 0 });
    subnet.close_epoch(&owner_ctx).await.unwrap();
    let published = v.last_revealed(&vc, v_uid).await.unwrap();
    assert_eq!((published.epoch, published.weights), (Some(0), vs_weights));

    validators_node.shutdown().await.unwrap();
    owner_node.shutdown().await.unwrap();
    drop(ledger_server);
}
