//! The almanac spread over a libp2p Kademlia DHT: no central server.
//!
//! Each registration is stored as a DHT record under `agora/agent/<address>`, on the
//! nodes closest to that key. For protocols, each node announces itself as a provider of
//! `agora/protocol/<digest>` and publishes, under a key only it may write, the list of
//! agents it registered for that protocol. Every node validates what it is asked to store (signature,
//! expiry, a higher sequence than what it holds) and keeps it in memory; a lookup walks
//! the DHT, keeps the highest valid sequence it finds, and refuses expired ones.
//!
//! Consistency and expiry: a registration is acknowledged once at least one node stored
//! it; readers see it once the lookup reaches any node holding it, and always prefer the
//! highest sequence found, so an old record cannot mask a newer one it met on the way.
//! A record lives until the `expires_ms` its agent signed (the Kademlia record carries the
//! same deadline): every node stops serving it then, and lookups also check the signed
//! expiry themselves, so clock-free record storage cannot resurrect it. Records are held
//! in memory (the almanac server is the persistent option); each node holds up to the
//! configured number of records (libp2p's default of 1,024 is raised to 1,000,000).
//!
//! libp2p defaults dealt with here: nodes are put in server mode explicitly (otherwise
//! they wait for a confirmed external address); inbound records are filtered through
//! validation rather than stored blindly; the 48 h record TTL is replaced by each record's
//! own expiry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agent_core::net::NetError;
use agent_core::{Address, ProtocolDigest};
use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore, store::RecordStore, Mode, Quorum, Record, RecordKey, StoreInserts};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::query::{Page, Query};
use crate::record::Registration;
use crate::resolver::Directory;
use crate::{AlmanacError, Registered};

/// The Kademlia protocol name of the almanac DHT.
pub const PROTOCOL: &str = "/agora/kad/1";

/// How long a DHT lookup or store may take before it is reported unfinished, by default.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest lifetime a registration may ask for, here as in the embedded almanac's
/// default: a longer one is refused, by the registering node and by every node asked to
/// store it.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

enum Command {
    Put(Record, oneshot::Sender<Result<(), String>>),
    /// Adds an agent to this node's index for a protocol, republishes the index record and
    /// announces this node as a provider of the protocol.
    Index(ProtocolDigest, Address),
    /// The providers found, or why the search ended before it finished.
    Providers(RecordKey, oneshot::Sender<Result<Vec<PeerId>, String>>),
    Get(RecordKey, GetReply),
    /// This node's own copy of a record, if it holds one.
    Held(RecordKey, oneshot::Sender<Option<Record>>),
    AddPeer(PeerId, Multiaddr),
}

/// Records found, each with the peer that held it (`None`: this node's own copy).
type Found = Vec<(Option<PeerId>, Record)>;

type GetReply = oneshot::Sender<Result<Found, GetFailure>>;

enum GetFailure {
    NotFound,
    Unfinished(String),
    /// The query ended (timed out) after finding these copies; others may exist.
    Partial(Found, String),
}

/// A node of the almanac DHT. Cheap to clone.
#[derive(Clone)]
pub struct DhtAlmanac {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    clock: fn() -> u64,
    query_timeout: Duration,
}

fn protocol_key(protocol: &ProtocolDigest) -> RecordKey {
    let mut key = b"agora/protocol/".to_vec();
    key.extend_from_slice(protocol.as_bytes());
    RecordKey::new(&key)
}

/// Agents one index record lists, at most: 128 addresses of about 65 bytes each keep a
/// record well under kad's packet limit (16 KiB).
const INDEX_SHARD: usize = 128;

/// Index records one node publishes per protocol, at most (10,240 agents).
const MAX_INDEX_SHARDS: u32 = 80;

/// Shard `shard` of the records in which `node` lists the agents it registered for
/// `protocol`; only `node` itself may write them. Readers fetch shards 0, 1, … until one
/// is missing.
fn index_key(node: &PeerId, protocol: &ProtocolDigest, shard: u32) -> RecordKey {
    let mut key = b"agora/index/".to_vec();
    key.extend_from_slice(protocol.as_bytes());
    key.extend_from_slice(&shard.to_be_bytes());
    key.extend_from_slice(&node.to_bytes());
    RecordKey::new(&key)
}

fn index_owner(key: &RecordKey) -> Option<PeerId> {
    let bytes = key.as_ref().strip_prefix(b"agora/index/".as_slice())?;
    PeerId::from_bytes(bytes.get(36..)?).ok()
}

/// How long an index record lives without being republished. Each node republishes its
/// index every quarter of this, dropping agents whose registration it no longer holds
/// unexpired, so an index lives as long as its node and forgets agents that are gone.
pub const INDEX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Stores this node's index shard here and sends it to the closest peers, living `lifetime`.
fn publish_index(
    swarm: &mut libp2p::Swarm<kad::Behaviour<MemoryStore>>,
    node: &PeerId,
    protocol: &ProtocolDigest,
    shard: usize,
    entries: &[Address],
    lifetime: Duration,
) {
    let value = serde_json::to_vec(entries).unwrap_or_default();
    let mut record = Record::new(index_key(node, protocol, shard as u32), value);
    record.expires = Some(Instant::now() + lifetime);
    let behaviour = swarm.behaviour_mut();
    if let Err(err) = behaviour.store_mut().put(record.clone()) {
        tracing::warn!(error = ?err, "cannot keep this node's index here");
    }
    if let Err(err) = behaviour.put_record(record, Quorum::One) {
        tracing::warn!(error = ?err, "cannot publish this node's index");
    }
}

fn key_of(address: &Address) -> RecordKey {
    let mut key = b"agora/agent/".to_vec();
    key.extend_from_slice(address.as_bytes());
    RecordKey::new(&key)
}

/// Whether `offered` may replace `held`: a higher sequence, or the very same record.
fn replaces(held: Option<&Registration>, offered: &Registration) -> Result<(), AlmanacError> {
    match held {
        Some(held) if held.sequence > offered.sequence || (held.sequence == offered.sequence && held != offered) => {
            Err(AlmanacError::StaleSequence { stored: held.sequence, offered: offered.sequence })
        }
        _ => Ok(()),
    }
}

/// Checks a DHT record: a registration under its own key, validly signed, unexpired, and
/// asking for no longer a lifetime than [`MAX_TTL`].
fn validate(record: &Record, now_ms: u64) -> Result<Registration, AlmanacError> {
    let registration: Registration =
        serde_json::from_slice(&record.value).map_err(|e| AlmanacError::Malformed(e.to_string()))?;
    if record.key != key_of(&registration.address) {
        return Err(AlmanacError::Malformed("record stored under another agent's key".into()));
    }
    registration.verify()?;
    if registration.expires_ms <= now_ms {
        return Err(AlmanacError::Expired { at_ms: registration.expires_ms });
    }
    let ttl_ms = registration.expires_ms - now_ms;
    if ttl_ms > MAX_TTL.as_millis() as u64 {
        return Err(AlmanacError::TtlOutOfBounds { ttl_ms, min_ms: 1, max_ms: MAX_TTL.as_millis() as u64 });
    }
    Ok(registration)
}

fn to_record(registration: &Registration, now_ms: u64) -> Result<Record, AlmanacError> {
    let value = serde_json::to_vec(registration).map_err(|e| AlmanacError::Malformed(e.to_string()))?;
    let mut record = Record::new(key_of(&registration.address), value);
    record.expires = Some(Instant::now() + Duration::from_millis(registration.expires_ms.saturating_sub(now_ms)));
    Ok(record)
}

impl DhtAlmanac {
    /// Starts a DHT node listening on `listen`, knowing the peers in `bootstrap`, holding
    /// at most `max_records`, and giving up on a query after `query_timeout` (see
    /// [`DEFAULT_QUERY_TIMEOUT`]).
    pub async fn start(
        keypair: libp2p::identity::Keypair,
        listen: &[Multiaddr],
        bootstrap: &[(PeerId, Multiaddr)],
        max_records: usize,
        query_timeout: Duration,
    ) -> Result<DhtAlmanac, NetError> {
        Self::start_with_index_lifetime(keypair, listen, bootstrap, max_records, query_timeout, INDEX_LIFETIME).await
    }

    /// [`start`](Self::start) with index records living `index_lifetime` instead of
    /// [`INDEX_LIFETIME`] (republished every quarter of it): for tests that must see an
    /// index outlive its first lifetime.
    pub async fn start_with_index_lifetime(
        keypair: libp2p::identity::Keypair,
        listen: &[Multiaddr],
        bootstrap: &[(PeerId, Multiaddr)],
        max_records: usize,
        query_timeout: Duration,
        index_lifetime: Duration,
    ) -> Result<DhtAlmanac, NetError> {
        let peer_id = keypair.public().to_peer_id();
        let mut config = kad::Config::new(StreamProtocol::new(PROTOCOL));
        config.set_record_filtering(StoreInserts::FilterBoth).set_query_timeout(query_timeout).set_record_ttl(None);
        let store_config =
            kad::store::MemoryStoreConfig { max_records, max_value_bytes: 32 * 1024, ..Default::default() };
        let mut behaviour =
            kad::Behaviour::with_config(peer_id, MemoryStore::with_config(peer_id, store_config), config);
        behaviour.set_mode(Some(Mode::Server));
        let mut swarm = agent_core::net::swarm(keypair, behaviour)?;
        let listen_addrs = agent_core::net::listen(&mut swarm, listen).await?;
        for (peer, addr) in bootstrap {
            swarm.behaviour_mut().add_address(peer, addr.clone());
        }
        let (commands, mut commands_rx) = mpsc::channel::<Command>(256);
        tokio::spawn(async move {
            let mut puts: HashMap<kad::QueryId, oneshot::Sender<Result<(), String>>> = HashMap::new();
            let mut gets: HashMap<kad::QueryId, (Found, GetReply)> = HashMap::new();
            #[allow(clippy::type_complexity)]
            let mut providers: HashMap<
                kad::QueryId,
                (Vec<PeerId>, oneshot::Sender<Result<Vec<PeerId>, String>>),
            > = HashMap::new();
            // Per protocol: the agents listed, and the shards in the order they filled.
            let mut index: HashMap<ProtocolDigest, (std::collections::HashSet<Address>, Vec<Vec<Address>>)> =
                HashMap::new();
            let mut republish =
                tokio::time::interval_at(tokio::time::Instant::now() + index_lifetime / 4, index_lifetime / 4);
            republish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = republish.tick() => {
                        let now = agent_core::envelope::unix_now_ms();
                        for (protocol, (listed, shards)) in index.iter_mut() {
                            // Forget agents whose registration this node no longer holds unexpired.
                            let store = swarm.behaviour_mut().store_mut();
                            listed.retain(|address| {
                                store.get(&key_of(address)).is_some_and(|record| validate(&record, now).is_ok())
                            });
                            let kept: Vec<Address> = shards.iter().flatten().filter(|a| listed.contains(a)).copied().collect();
                            *shards = kept.chunks(INDEX_SHARD).map(<[Address]>::to_vec).collect();
                            for (shard, entries) in shards.iter().enumerate() {
                                publish_index(&mut swarm, &peer_id, protocol, shard, entries, index_lifetime);
                            }
                        }
                    }
                    command = commands_rx.recv() => match command {
                        None => break,
                        Some(Command::Put(record, reply)) => {
                            // Keep our own copy too, then replicate to the closest peers.
                            if let Err(err) = swarm.behaviour_mut().store_mut().put(record.clone()) {
                                tracing::warn!(error = ?err, "cannot keep a copy of a registration here; the other nodes decide");
                            }
                            match swarm.behaviour_mut().put_record(record, Quorum::One) {
                                Ok(id) => { puts.insert(id, reply); }
                                Err(err) => { let _ = reply.send(Err(format!("{err:?}"))); }
                            }
                        }
                        Some(Command::Held(key, reply)) => {
                            // The caller may have given up waiting.
                            let _ = reply.send(swarm.behaviour_mut().store_mut().get(&key).map(|record| record.into_owned()));
                        }
                        Some(Command::Get(key, reply)) => {
                            let id = swarm.behaviour_mut().get_record(key);
                            gets.insert(id, (Vec::new(), reply));
                        }
                        Some(Command::Index(protocol, address)) => {
                            let (listed, shards) = index.entry(protocol).or_default();
                            let full = shards.last().is_none_or(|shard| shard.len() >= INDEX_SHARD);
                            if full && shards.len() >= MAX_INDEX_SHARDS as usize {
                                tracing::warn!(%protocol, "this node's index of the protocol is full; the agent is not listed");
                            } else if listed.insert(address) {
                                if full {
                                    shards.push(Vec::new());
                                }
                                let shard = shards.len() - 1;
                                shards[shard].push(address);
                                // Only the shard that changed is republished.
                                publish_index(&mut swarm, &peer_id, &protocol, shard, &shards[shard], index_lifetime);
                                let behaviour = swarm.behaviour_mut();
                                if shard == 0 && shards[0].len() == 1 {
                                    if let Err(err) = behaviour.start_providing(protocol_key(&protocol)) {
                                        tracing::warn!(error = ?err, %protocol, "cannot announce this node as a provider of the protocol");
                                    }
                                }
                            }
                        }
                        Some(Command::Providers(key, reply)) => {
                            let id = swarm.behaviour_mut().get_providers(key);
                            providers.insert(id, (Vec::new(), reply));
                        }
                        Some(Command::AddPeer(peer, addr)) => { swarm.behaviour_mut().add_address(&peer, addr); }
                    },
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::Behaviour(kad::Event::InboundRequest {
                            request: kad::InboundRequest::PutRecord { source, record: Some(record), .. },
                        }) if record.key.as_ref().starts_with(b"agora/index/") => {
                            // An index record is accepted only from the node it belongs to.
                            if index_owner(&record.key) == Some(source) && serde_json::from_slice::<Vec<Address>>(&record.value).is_ok() {
                                // Kept no longer than an index lives, whatever the sender asked:
                                // a record that never expires would stay after its node is gone.
                                let mut record = record;
                                let latest = Instant::now() + index_lifetime;
                                record.expires = Some(record.expires.map_or(latest, |asked| asked.min(latest)));
                                if let Err(err) = swarm.behaviour_mut().store_mut().put(record) {
                                    tracing::warn!(peer = %source, error = ?err, "cannot keep a peer's index record");
                                }
                            } else {
                                tracing::warn!(peer = %source, "refused an index record not its own");
                            }
                        }
                        SwarmEvent::Behaviour(kad::Event::InboundRequest { request: kad::InboundRequest::PutRecord { source, record: Some(record), .. } }) => {
                            let now = agent_core::envelope::unix_now_ms();
                            match validate(&record, now) {
                                Ok(offered) => {
                                    let store = swarm.behaviour_mut().store_mut();
                                    let held = store.get(&record.key).and_then(|held| validate(&held, now).ok());
                                    if replaces(held.as_ref(), &offered).is_ok() {
                                        // Expires here at the time its agent signed, whatever
                                        // the sender's copy says.
                                        let mut record = record;
                                        record.expires = Some(Instant::now() + Duration::from_millis(offered.expires_ms - now));
                                        if let Err(err) = store.put(record) {
                                            tracing::warn!(peer = %source, error = ?err, "cannot store a DHT record");
                                        }
                                    }
                                }
                                Err(err) => tracing::warn!(peer = %source, error = %err, "refused a DHT record"),
                            }
                        }
                        SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed { id, result, step, .. }) => match result {
                            kad::QueryResult::PutRecord(result) => {
                                if let Some(reply) = puts.remove(&id) {
                                    let _ = reply.send(result.map(|_| ()).map_err(|e| e.to_string()));
                                }
                            }
                            kad::QueryResult::GetProviders(result) => {
                                let ended_early = match result {
                                    Ok(kad::GetProvidersOk::FoundProviders { providers: found, .. }) => {
                                        if let Some((all, _)) = providers.get_mut(&id) {
                                            all.extend(found);
                                        }
                                        None
                                    }
                                    Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => None,
                                    Err(err) => Some(err.to_string()),
                                };
                                if step.last || ended_early.is_some() {
                                    if let Some((all, reply)) = providers.remove(&id) {
                                        // The asker may have given up waiting.
                                        let _ = reply.send(ended_early.map_or(Ok(all), Err));
                                    }
                                }
                            }
                            kad::QueryResult::GetRecord(result) => {
                                let finished = step.last;
                                match result {
                                    Ok(kad::GetRecordOk::FoundRecord(peer_record)) => {
                                        if let Some((found, _)) = gets.get_mut(&id) { found.push((peer_record.peer, peer_record.record)); }
                                    }
                                    Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => {}
                                    Err(err) => {
                                        if let Some((found, reply)) = gets.remove(&id) {
                                            let outcome = match err {
                                                other if !found.is_empty() => Err(GetFailure::Partial(found, other.to_string())),
                                                kad::GetRecordError::NotFound { .. } => Err(GetFailure::NotFound),
                                                other => Err(GetFailure::Unfinished(other.to_string())),
                                            };
                                            let _ = reply.send(outcome);
                                        }
                                        continue;
                                    }
                                }
                                if finished {
                                    if let Some((found, reply)) = gets.remove(&id) {
                                        let _ = reply.send(if found.is_empty() { Err(GetFailure::NotFound) } else { Ok(found) });
                                    }
                                }
                            }
                            _ => {}
                        },
                        _ => {}
                    },
                }
            }
        });
        Ok(DhtAlmanac { commands, peer_id, listen_addrs, clock: agent_core::envelope::unix_now_ms, query_timeout })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses this node listens on.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// Tells this node where another DHT node is.
    pub async fn add_peer(&self, peer: PeerId, addr: Multiaddr) -> Result<(), AlmanacError> {
        self.commands
            .send(Command::AddPeer(peer, addr))
            .await
            .map_err(|_| AlmanacError::Unavailable("the DHT node stopped".into()))
    }

    /// Validates `registration` (signature, lifetime at most [`MAX_TTL`], a sequence above
    /// the one this node holds) and stores it in the DHT, here and on the nodes closest to
    /// its key.
    ///
    /// Acknowledged only once it is accepted: at least one other node answers a read-back
    /// with this very record. Nodes store what they validate and may refuse (an older
    /// sequence, a full store), which a plain DHT put does not report; an error here means
    /// no other node showed it, though some may hold it.
    pub async fn register(&self, registration: Registration) -> Result<Registered, AlmanacError> {
        let now = (self.clock)();
        let record = to_record(&registration, now)?;
        validate(&record, now)?;
        let stopped = || AlmanacError::Unavailable("the DHT node stopped".into());
        let (reply, held) = oneshot::channel();
        self.commands.send(Command::Held(record.key.clone(), reply)).await.map_err(|_| stopped())?;
        let held = held.await.map_err(|_| stopped())?.and_then(|held| validate(&held, now).ok());
        replaces(held.as_ref(), &registration)?;
        let (reply, stored) = oneshot::channel();
        self.commands
            .send(Command::Put(record, reply))
            .await
            .map_err(|_| AlmanacError::Unavailable("the DHT node stopped".into()))?;
        match tokio::time::timeout(self.query_timeout + Duration::from_secs(1), stored).await {
            Ok(Ok(Ok(()))) => {
                self.accepted_elsewhere(&registration).await?;
                for protocol in &registration.protocols {
                    let _ = self.commands.send(Command::Index(*protocol, registration.address)).await;
                }
                Ok(Registered { sequence: registration.sequence, expires_ms: registration.expires_ms })
            }
            Ok(Ok(Err(reason))) => {
                Err(AlmanacError::Unavailable(format!("no DHT node stored the registration: {reason}")))
            }
            Ok(Err(_)) => Err(AlmanacError::Unavailable("the DHT node stopped".into())),
            Err(_) => Err(AlmanacError::Unavailable("storing in the DHT did not finish".into())),
        }
    }

    /// Reads `registration` back from the DHT: `Ok` once another node returns this very
    /// record.
    async fn accepted_elsewhere(&self, registration: &Registration) -> Result<(), AlmanacError> {
        let (reply, found) = oneshot::channel();
        self.commands
            .send(Command::Get(key_of(&registration.address), reply))
            .await
            .map_err(|_| AlmanacError::Unavailable("the DHT node stopped".into()))?;
        let found = match tokio::time::timeout(self.query_timeout + Duration::from_secs(1), found).await {
            // Some copies are enough: the question is whether another node holds this one.
            Ok(Ok(Ok(found) | Err(GetFailure::Partial(found, _)))) => found,
            _ => Vec::new(),
        };
        let now = (self.clock)();
        let elsewhere = found.iter().any(|(peer, record)| {
            peer.is_some_and(|peer| peer != self.peer_id) && validate(record, now).is_ok_and(|r| r == *registration)
        });
        if elsewhere {
            Ok(())
        } else {
            Err(AlmanacError::Unavailable("no other DHT node accepted the registration".into()))
        }
    }

    /// The agents this node lists in shard `shard` of its own index of `protocol`, as held
    /// here (empty if it lists none there): what other nodes read to find them.
    pub async fn held_index(&self, protocol: &ProtocolDigest, shard: u32) -> Result<Vec<Address>, AlmanacError> {
        let stopped = || AlmanacError::Unavailable("the DHT node stopped".into());
        let (reply, held) = oneshot::channel();
        self.commands
            .send(Command::Held(index_key(&self.peer_id, protocol, shard), reply))
            .await
            .map_err(|_| stopped())?;
        match held.await.map_err(|_| stopped())? {
            None => Ok(Vec::new()),
            Some(record) => serde_json::from_slice(&record.value).map_err(|e| AlmanacError::Malformed(e.to_string())),
        }
    }

    /// Up to `limit` unexpired registrations of agents speaking `protocol`: the nodes
    /// providing the protocol are found through provider records, their index records list
    /// the agents, and each agent's own registration is looked up and checked.
    pub async fn agents_speaking(
        &self,
        protocol: &ProtocolDigest,
        limit: usize,
    ) -> Result<Vec<Registration>, AlmanacError> {
        let stopped = || AlmanacError::Unavailable("the DHT node stopped".into());
        let (reply, found) = oneshot::channel();
        self.commands.send(Command::Providers(protocol_key(protocol), reply)).await.map_err(|_| stopped())?;
        let mut nodes = tokio::time::timeout(self.query_timeout + Duration::from_secs(1), found)
            .await
            .map_err(|_| AlmanacError::Unavailable("partial answer: the DHT provider lookup did not finish".into()))?
            .map_err(|_| stopped())?
            .map_err(|reason| {
                AlmanacError::Unavailable(format!("partial answer: the DHT provider lookup did not finish: {reason}"))
            })?;
        nodes.sort();
        nodes.dedup();
        let mut agents = std::collections::BTreeSet::new();
        for node in nodes {
            for shard in 0..MAX_INDEX_SHARDS {
                let (reply, found) = oneshot::channel();
                let key = index_key(&node, protocol, shard);
                self.commands.send(Command::Get(key, reply)).await.map_err(|_| stopped())?;
                match tokio::time::timeout(self.query_timeout + Duration::from_secs(1), found).await {
                    Ok(Ok(Ok(records))) => {
                        // Copies from several peers may differ in age: take their union.
                        // An older copy may list an agent since dropped; its lookup below
                        // leaves it out.
                        for (_, record) in records {
                            if index_owner(&record.key) == Some(node) {
                                agents
                                    .extend(serde_json::from_slice::<Vec<Address>>(&record.value).unwrap_or_default());
                            }
                        }
                    }
                    // Ended early, but with the owner's own copy: the newest there is.
                    Ok(Ok(Err(GetFailure::Partial(records, reason)))) => {
                        let owners = |peer: &Option<PeerId>| peer.unwrap_or(self.peer_id) == node;
                        let Some((_, own)) = records.iter().find(|(peer, _)| owners(peer)) else {
                            return Err(AlmanacError::Unavailable(format!(
                                "partial answer: an index fetch ended without its owner's copy: {reason}"
                            )));
                        };
                        agents.extend(serde_json::from_slice::<Vec<Address>>(&own.value).unwrap_or_default());
                    }
                    // Past the node's last shard (or a provider whose index is gone).
                    Ok(Ok(Err(GetFailure::NotFound))) => break,
                    // Never a silently shorter answer.
                    Ok(Ok(Err(GetFailure::Unfinished(reason)))) => {
                        return Err(AlmanacError::Unavailable(format!(
                            "partial answer: an index fetch did not finish: {reason}"
                        )))
                    }
                    Ok(Err(_)) => return Err(stopped()),
                    Err(_) => return Err(AlmanacError::Unavailable("partial answer: an index fetch timed out".into())),
                }
            }
        }
        // Each agent's own registration, looked up 64 at a time.
        let lookups =
            futures::stream::iter(agents).map(|address| async move { (address, self.lookup(&address).await) });
        let mut looked_up = lookups.buffer_unordered(64);
        let mut registrations = Vec::new();
        while let Some((address, found)) = looked_up.next().await {
            // Index entries outlive registrations: keep only agents still registered for it.
            match found {
                Ok(registration) if registration.protocols.contains(protocol) => registrations.push(registration),
                Ok(_) | Err(AlmanacError::NotRegistered(_)) | Err(AlmanacError::Expired { .. }) => {}
                Err(err) => {
                    return Err(AlmanacError::Unavailable(format!("partial answer: looking up {address}: {err}")))
                }
            }
        }
        registrations.sort_by_key(|r| r.address);
        registrations.truncate(limit);
        Ok(registrations)
    }

    /// Finds `address` in the DHT. A lookup that has not finished is reported as
    /// [`AlmanacError::Unavailable`], never as not registered.
    pub async fn lookup(&self, address: &Address) -> Result<Registration, AlmanacError> {
        let (reply, found) = oneshot::channel();
        self.commands
            .send(Command::Get(key_of(address), reply))
            .await
            .map_err(|_| AlmanacError::Unavailable("the DHT node stopped".into()))?;
        let records = match tokio::time::timeout(self.query_timeout + Duration::from_secs(1), found).await {
            // Copies found before the query ended: each is signed by the agent, and the
            // newest of them is the answer (a later renewal may not have reached them yet).
            Ok(Ok(Ok(records) | Err(GetFailure::Partial(records, _)))) => records,
            Ok(Ok(Err(GetFailure::NotFound))) => return Err(AlmanacError::NotRegistered(*address)),
            Ok(Ok(Err(GetFailure::Unfinished(reason)))) => {
                return Err(AlmanacError::Unavailable(format!("the DHT lookup did not finish: {reason}")))
            }
            Ok(Err(_)) => return Err(AlmanacError::Unavailable("the DHT node stopped".into())),
            Err(_) => return Err(AlmanacError::Unavailable("the DHT lookup did not finish in time".into())),
        };
        let now = (self.clock)();
        let mut best: Option<Registration> = None;
        let mut expired_at = None;
        for (_, record) in &records {
            match validate(record, now) {
                Ok(registration)
                    if registration.address == *address
                        && best.as_ref().is_none_or(|b| b.sequence < registration.sequence) =>
                {
                    best = Some(registration);
                }
                Err(AlmanacError::Expired { at_ms }) => expired_at = Some(at_ms),
                _ => {}
            }
        }
        match (best, expired_at) {
            (Some(registration), _) => Ok(registration),
            (None, Some(at_ms)) => Err(AlmanacError::Expired { at_ms }),
            (None, None) => Err(AlmanacError::NotRegistered(*address)),
        }
    }
}

#[async_trait::async_trait]
impl Directory for DhtAlmanac {
    async fn register(&self, record: Registration) -> Result<Registered, AlmanacError> {
        DhtAlmanac::register(self, record).await
    }

    async fn lookup(&self, address: &Address) -> Result<Registration, AlmanacError> {
        DhtAlmanac::lookup(self, address).await
    }

    /// Queries by protocol (required here), filtered by attributes, in pages by address
    /// like the embedded almanac: `next` is set while more remain.
    async fn query(&self, query: Query) -> Result<Page, AlmanacError> {
        let Some(protocol) = query.protocol else {
            return Err(AlmanacError::Malformed("a DHT query needs a protocol".into()));
        };
        let mut records = self.agents_speaking(&protocol, usize::MAX).await?;
        records.retain(|r| query.matches(r) && query.after.is_none_or(|after| r.address > after));
        records.sort_by_key(|r| r.address);
        let limit = query.limit.clamp(1, crate::MAX_LIMIT);
        let next = (records.len() > limit).then(|| records[limit - 1].address);
        records.truncate(limit);
        Ok(Page { records, next })
    }
}
