//! Scenarios shared by Agora's criterion benchmarks and its figures report.
//!
//! The requesting agent always runs inside the runtime under test: the driver sends one
//! `Run` request to the pinger agent, whose handler performs the whole series of requests
//! to the ponger and answers with the measurements. Nothing is driven from `block_on` on
//! the main thread per round trip, so thread hops of the harness are not measured.
//!
//! ```
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! let figures = rt.block_on(agora_benches::ping_pong(1_000, 1)).unwrap();
//! assert_eq!(figures.round_trips, 1_000);
//! ```

pub mod durable;
pub mod kameo_peer;
pub mod plot;
pub mod summary;
pub mod tcp_limit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::{Address, Agent, Bureau, Context, Message, ReplyError};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

/// The request of the ping-pong benchmark.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
pub struct Ping(pub u64);

/// The reply of the ping-pong benchmark.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
pub struct Pong(pub u64);

/// Asks the pinger to run a series of requests.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
pub struct Run {
    /// How many round trips.
    pub round_trips: u64,
    /// How many requests may be in flight at once (1 = one at a time).
    pub in_flight: u64,
    /// The ponger's address.
    pub target: Address,
}

/// The pinger's measurements.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
pub struct Figures {
    /// Round trips completed.
    pub round_trips: u64,
    /// Wall time of the whole series, in nanoseconds.
    pub elapsed_ns: u64,
    /// Median round-trip latency, in nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile round-trip latency, in nanoseconds.
    pub p99_ns: u64,
}

impl Figures {
    fn from_latencies(mut latencies: Vec<u32>, elapsed: Duration) -> Figures {
        latencies.sort_unstable();
        let at = |q: f64| {
            let index = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
            latencies.get(index).copied().unwrap_or(0) as u64
        };
        Figures {
            round_trips: latencies.len() as u64,
            elapsed_ns: elapsed.as_nanos() as u64,
            p50_ns: at(0.5),
            p99_ns: at(0.99),
        }
    }

    /// Round trips per second.
    pub fn per_second(&self) -> f64 {
        self.round_trips as f64 / (self.elapsed_ns as f64 / 1e9)
    }
}

async fn on_ping(ctx: Context, _from: Address, Ping(n): Ping) -> Result<(), ReplyError> {
    ctx.reply(Pong(n)).await
}

async fn on_run(ctx: Context, _from: Address, run: Run) -> Result<(), String> {
    let mut latencies: Vec<u32> = Vec::with_capacity(run.round_trips as usize);
    let timeout = Duration::from_secs(10);
    let started = Instant::now();
    if run.in_flight <= 1 {
        for n in 0..run.round_trips {
            let sent = Instant::now();
            let _: Pong = ctx.request(run.target, Ping(n), timeout).await.map_err(|e| e.to_string())?;
            latencies.push(sent.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        }
    } else {
        latencies =
            pipelined(run.round_trips, run.in_flight, |n| {
                let ctx = ctx.clone();
                async move {
                    ctx.request::<Ping, Pong>(run.target, Ping(n), timeout).await.map(drop).map_err(|e| e.to_string())
                }
            })
            .await?;
    }
    ctx.reply(Figures::from_latencies(latencies, started.elapsed())).await.map_err(|e| e.to_string())
}

/// Two agents in one bureau; the pinger performs `round_trips` requests to the ponger with
/// at most `in_flight` outstanding, and reports. Call inside the runtime under test.
pub async fn ping_pong(round_trips: u64, in_flight: u64) -> Result<Figures, Box<dyn std::error::Error>> {
    let bureau = Bureau::new()?;
    let mut ponger = Agent::builder("ponger").build()?;
    ponger.on_message(on_ping);
    let target = bureau.add(ponger)?;
    let mut pinger = Agent::builder("pinger").build()?;
    pinger.on_message(on_run);
    let pinger = bureau.add(pinger)?;
    let driver = bureau.add(Agent::builder("driver").build()?)?;
    let ctx = bureau.context(driver).ok_or("driver is missing")?;
    let figures: Figures =
        ctx.request(pinger, Run { round_trips, in_flight, target }, Duration::from_secs(600)).await?;
    bureau.shutdown().await?;
    Ok(figures)
}

/// Resident memory of this process in bytes (Linux), from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// CPU time this thread has run so far (Linux: /proc/thread-self/schedstat), for figures
/// that must not depend on how busy the machine's other cores and processes are.
pub fn thread_cpu_time() -> Option<Duration> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The agent kind of the memory benchmark: idle, with one message handler.
pub fn idle_agent() -> Result<Agent, agent_core::AgentError> {
    let mut agent = Agent::builder("idle-0").build()?;
    agent.on_message(on_ping);
    Ok(agent)
}

/// ed25519 signature verifications per second on one core (strict verification, as the
/// ledger and envelopes use).
pub fn verify_rate(count: usize) -> f64 {
    let identity = agent_core::Identity::from_seed("verify bench");
    let key = identity.public_key();
    let messages: Vec<[u8; 64]> = (0..64u8).map(|i| [i; 64]).collect();
    let signatures: Vec<[u8; 64]> = messages.iter().map(|m| identity.sign(m)).collect();
    let started = Instant::now();
    for i in 0..count {
        let k = i % messages.len();
        assert!(key.verify(&messages[k], &signatures[k]).is_ok());
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// What [`ledger_transfers`] measured.
pub struct LedgerRun {
    /// Transfers applied per second.
    pub rate: f64,
    /// Each submission's latency (submit to receipt), in the order they finished.
    pub latencies: Vec<Duration>,
    /// Transactions in the ledger at the end (mints included).
    pub height: u64,
    /// How long reopening the ledger took (replaying its log).
    pub reopen: Duration,
}

/// Applies `count` pre-signed transfers to a fresh local ledger from `senders` accounts
/// submitting concurrently (each its own nonce sequence, one in flight), then reopens it.
/// Signing is excluded (it happens in the payers' processes); verification is included.
pub async fn ledger_transfers(
    count: usize,
    senders: usize,
    durable: bool,
) -> Result<LedgerRun, Box<dyn std::error::Error>> {
    use agent_core::ledger::{Ledger, LocalLedger, LocalLedgerConfig, Operation, Transaction};
    use std::sync::Arc;
    let dir = std::env::temp_dir().join(format!("agora-ledger-bench-{}-{}", std::process::id(), rand_suffix()));
    let mint = agent_core::Identity::from_seed("bench mint");
    let config = LocalLedgerConfig::default().with_path(&dir).with_authority(mint.address()).with_durable(durable);
    let ledger = Arc::new(LocalLedger::open(config)?);
    let payers: Vec<agent_core::Identity> =
        (0..senders).map(|i| agent_core::Identity::from_seed(&format!("payer {i}"))).collect();
    for (nonce, payer) in payers.iter().enumerate() {
        let mint_tx = Transaction::sign(
            &mint,
            nonce as u64,
            Operation::Mint { to: payer.address(), amount: u128::MAX / 1024 },
            "",
        );
        ledger.submit(mint_tx).await?;
    }
    let payee = agent_core::Identity::from_seed("payee").address();
    let per_sender = count / senders;
    let batches: Vec<Vec<Transaction>> = payers
        .iter()
        .map(|payer| {
            (0..per_sender as u64)
                .map(|n| Transaction::sign(payer, n, Operation::Transfer { to: payee, amount: 1 }, ""))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(batch.len());
                for tx in batch {
                    let submitted = Instant::now();
                    ledger.submit(tx).await.map_err(|e| e.to_string())?;
                    latencies.push(submitted.elapsed());
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let rate = (per_sender * senders) as f64 / started.elapsed().as_secs_f64();
    let height = ledger.height()?;
    drop(ledger);
    let reopening = Instant::now();
    let reopened = LocalLedger::open(LocalLedgerConfig::default().with_path(&dir).with_durable(durable))?;
    let reopen = reopening.elapsed();
    if reopened.height()? != height {
        return Err(format!("reopened at height {} instead of {height}", reopened.height()?).into());
    }
    drop(reopened);
    let _ = std::fs::remove_dir_all(&dir); // Scratch space; a leftover directory is harmless.
    Ok(LedgerRun { rate, latencies, height, reopen })
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Asks the pinger to send `count` one-way messages with at most `in_flight` awaiting
/// their delivery acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
pub struct Blast {
    /// How many messages.
    pub count: u64,
    /// How many may await their acknowledgement at once.
    pub in_flight: u64,
    /// The receiver.
    pub target: Address,
}

async fn on_blast(ctx: Context, _from: Address, blast: Blast) -> Result<(), String> {
    let started = Instant::now();
    let latencies = pipelined(blast.count, blast.in_flight, |n| {
        let ctx = ctx.clone();
        async move { ctx.send(blast.target, Ping(n)).await.map_err(|e| e.to_string()) }
    })
    .await?;
    ctx.reply(Figures::from_latencies(latencies, started.elapsed())).await.map_err(|e| e.to_string())
}

/// Runs `one(0..count)` with at most `in_flight` at once; returns each one's latency (ns).
async fn pipelined<F, Fut>(count: u64, in_flight: u64, one: F) -> Result<Vec<u32>, String>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let timed = |n: u64| {
        let operation = one(n);
        async move {
            let sent = Instant::now();
            operation.await.map(|()| sent.elapsed().as_nanos().min(u32::MAX as u128) as u32)
        }
    };
    let mut latencies = Vec::with_capacity(count as usize);
    let mut pending = FuturesUnordered::new();
    let mut next = 0;
    while next < count.min(in_flight) {
        pending.push(timed(next));
        next += 1;
    }
    while let Some(done) = pending.next().await {
        latencies.push(done?);
        if next < count {
            pending.push(timed(next));
            next += 1;
        }
    }
    Ok(latencies)
}

/// The far end of the cross-process benchmark: a bureau listening on `listen` with an
/// agent answering requests `Ping(n)` with `Pong(n)` (and taking plain pings silently).
/// Returns once listening, with the bureau, the node's address and the agent's address.
pub async fn serve_echo(
    listen: agent_core::transport::NetworkConfig,
) -> Result<(Bureau, agent_core::transport::NetworkInfo, Address), Box<dyn std::error::Error>> {
    let bureau = Bureau::new()?;
    let mut echo = Agent::builder("echo").seed("bench echo").build()?;
    echo.on_message(|ctx: Context, _from: Address, Ping(n): Ping| async move {
        if ctx.is_request() {
            ctx.reply(Pong(n)).await?;
        }
        Ok::<(), ReplyError>(())
    });
    let agent = bureau.add(echo)?;
    let info = bureau.listen(listen).await?;
    Ok((bureau, info, agent))
}

/// Cross-process figures against an echo agent at `endpoint`: request/reply one at a time
/// (`round_trips`), and one-way messages with delivery acknowledgements, `in_flight` at a
/// time (`messages`). `cpu` reads the CPU time spent so far (by both processes, say); each
/// figure comes with the CPU time spent while it was measured.
#[allow(clippy::too_many_arguments)]
pub async fn remote_figures(
    endpoint: agent_core::transport::Endpoint,
    echo: Address,
    auth: agent_core::transport::Auth,
    busy_poll: Duration,
    round_trips: u64,
    messages: u64,
    in_flight: u64,
    cpu: &mut dyn FnMut() -> Option<Duration>,
) -> Result<((Figures, Option<Duration>), (Figures, Option<Duration>)), Box<dyn std::error::Error>> {
    use agent_core::transport::{NetworkConfig, StaticResolver};
    let resolver = std::sync::Arc::new(StaticResolver::new());
    resolver.insert(echo, endpoint);
    let bureau = Bureau::new()?;
    let mut pinger = Agent::builder("pinger").build()?;
    pinger.on_message(on_run);
    pinger.on_message(on_blast);
    let pinger = bureau.add(pinger)?;
    let driver = bureau.add(Agent::builder("driver").build()?)?;
    let listen = std::env::var("AGORA_BENCH_LISTEN").unwrap_or_else(|_| "/ip4/127.0.0.1/tcp/0".into());
    let config = NetworkConfig::new(vec![listen.parse()?], resolver).with_auth(auth).with_busy_poll(busy_poll);
    bureau.listen(config).await?;
    let ctx = bureau.context(driver).ok_or("driver is missing")?;
    let long = Duration::from_secs(600);
    // Warm the connection up.
    let _: Figures = ctx.request(pinger, Run { round_trips: 100, in_flight: 1, target: echo }, long).await?;
    let spent = |before: Option<Duration>, after: Option<Duration>| after?.checked_sub(before?);
    let before = cpu();
    let one_at_a_time: Figures = ctx.request(pinger, Run { round_trips, in_flight: 1, target: echo }, long).await?;
    let between = cpu();
    let pipelined: Figures = ctx.request(pinger, Blast { count: messages, in_flight, target: echo }, long).await?;
    let after = cpu();
    bureau.shutdown().await?;
    Ok(((one_at_a_time, spent(before, between)), (pipelined, spent(between, after))))
}

/// CPU time this process has used so far, all its threads (from `/proc`; `None` elsewhere).
pub fn cpu_time() -> Option<Duration> {
    // The first field of each thread's schedstat is its time on a CPU in nanoseconds,
    // far finer than the clock ticks of /proc/self/stat.
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(task) = task else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// Almanac figures: registrations per second (signature verified) and lookup latencies
/// with `stored` records.
#[derive(Debug, Clone)]
pub struct AlmanacFigures {
    /// Registrations accepted per second, one at a time.
    pub registrations_per_s: f64,
    /// Query by protocol (first page of 10): median and 99th percentile, nanoseconds.
    pub protocol_query_ns: (u64, u64),
    /// Lookup by address: median and 99th percentile, nanoseconds.
    pub lookup_ns: (u64, u64),
    /// Unfiltered query (a page of 10 from a random point): median and 99th percentile,
    /// nanoseconds.
    pub unfiltered_query_ns: (u64, u64),
}

/// Registers `registrations` freshly signed records into an empty embedded almanac, then
/// fills it to `stored` records (imported, as from its own database) spread over 1,000
/// protocols, and times 100,000 lookups of each kind.
pub async fn almanac_figures(
    registrations: usize,
    stored: usize,
) -> Result<AlmanacFigures, Box<dyn std::error::Error>> {
    use almanac::{Almanac, Config, Query, Registration, WeightedEndpoint};
    use std::collections::BTreeMap;
    let expires = agent_core::envelope::unix_now_ms() + 3_600_000;
    let endpoint = || vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }];
    let protocol = |i: usize| {
        agent_core::ProtocolDigest::from_bytes([
            (i % 251) as u8,
            (i / 251 % 251) as u8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ])
    };
    let signed: Vec<Registration> = (0..registrations)
        .map(|i| {
            let identity = agent_core::Identity::from_seed(&format!("almanac bench {i}"));
            Registration::sign(
                &identity,
                "12D3KooWBench",
                endpoint(),
                vec![protocol(i % 1000)],
                BTreeMap::new(),
                1,
                expires,
            )
        })
        .collect();
    let almanac = Almanac::new(Config::default());
    let started = Instant::now();
    for record in signed {
        almanac.register(record).await?;
    }
    let registrations_per_s = registrations as f64 / started.elapsed().as_secs_f64();
    let mut addresses = Vec::with_capacity(stored);
    let imported = (registrations..stored).map(|i| {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
        bytes[8] = 0xa5;
        let address = Address::from_bytes(bytes);
        addresses.push(address);
        Registration {
            address,
            key: agent_core::PublicKey([0; 32]),
            peer_id: "12D3KooWBench".into(),
            endpoints: endpoint(),
            protocols: vec![protocol(i % 1000)],
            attributes: BTreeMap::new(),
            sequence: 1,
            expires_ms: expires,
            signature: [0; 64],
        }
    });
    almanac.import_trusted(imported.collect::<Vec<_>>());
    let percentiles = |mut samples: Vec<u64>| {
        samples.sort_unstable();
        (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
    };
    let mut query_ns = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        let query = Query::protocol(protocol(i % 1000)).with_limit(10);
        let t = Instant::now();
        let page = almanac.query(&query);
        query_ns.push(t.elapsed().as_nanos() as u64);
        assert_eq!(page.records.len(), 10);
    }
    let mut lookup_ns = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        let address = addresses[(i * 7919) % addresses.len()];
        let t = Instant::now();
        let found = almanac.lookup(&address);
        lookup_ns.push(t.elapsed().as_nanos() as u64);
        assert!(found.is_ok());
    }
    let mut unfiltered_ns = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let query = Query::default().with_limit(10).after(addresses[(i * 7919) % addresses.len()]);
        let t = Instant::now();
        let page = almanac.query(&query);
        unfiltered_ns.push(t.elapsed().as_nanos() as u64);
        assert!(!page.records.is_empty() || page.next.is_none());
    }
    Ok(AlmanacFigures {
        registrations_per_s,
        protocol_query_ns: percentiles(query_ns),
        lookup_ns: percentiles(lookup_ns),
        unfiltered_query_ns: percentiles(unfiltered_ns),
    })
}

/// A participant that proposes its fixed price at once and performs at once.
struct Bidder(u64);

#[async_trait::async_trait]
impl agent_protocols::contract_net::Participant for Bidder {
    type Task = String;
    type Proposal = u64;
    type Result = u64;

    async fn evaluate(&self, _initiator: Address, _task: String) -> Option<(u64, Option<u64>)> {
        Some((self.0, None))
    }

    async fn perform(
        &self,
        _initiator: Address,
        price: u64,
    ) -> Result<u64, agent_protocols::contract_net::Unperformed> {
        Ok(price)
    }
}

/// A bureau with `participants` contract-net participants and an initiator, for timing
/// rounds (each round is a new call, with new dialogues).
pub struct ContractNetMarket {
    bureau: agent_core::Bureau,
    participants: Vec<Address>,
    ctx: Context,
    book: agent_protocols::contract_net::Book,
}

impl ContractNetMarket {
    /// Starts the market and waits (at most 10 s) until every participant has started.
    pub async fn new(participants: usize) -> Result<ContractNetMarket, Box<dyn std::error::Error>> {
        use agent_protocols::contract_net;
        let bureau = agent_core::Bureau::new()?;
        let (mut addresses, mut books) = (Vec::with_capacity(participants), Vec::with_capacity(participants));
        for i in 0..participants {
            let mut agent = Agent::builder(format!("participant {i}")).build()?;
            let price = 1_000 + (i as u64 * 7919) % 1_000;
            books.push(contract_net::serve(&mut agent, std::sync::Arc::new(Bidder(price))));
            addresses.push(bureau.add(agent)?);
        }
        let mut initiator = Agent::builder("initiator").build()?;
        let book = contract_net::initiator(&mut initiator);
        let initiator = bureau.add(initiator)?;
        let ctx = bureau.context(initiator).ok_or("initiator missing")?;
        let loading = Instant::now();
        while books.iter().any(|b| b.dialogues().is_none()) && loading.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(ContractNetMarket { bureau, participants: addresses, ctx, book })
    }

    /// One round: the time from the call for proposals to the winner's report (every
    /// participant answers; the cheapest wins; the rest are rejected), as (call, award):
    /// until every proposal is in, and from then to the winner's report.
    ///
    /// Run on a task of the runtime, as an agent's handler or task runs it: called from
    /// `block_on` instead, every task the call spawns (one per participant) would be queued
    /// from outside the workers, each through the runtime's shared queue and a worker's
    /// wake-up, which no agent's call pays.
    pub async fn round(&self) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
        let (ctx, book, participants) = (self.ctx.clone(), self.book.clone(), self.participants.clone());
        let round = tokio::spawn(async move { round(&ctx, &book, &participants).await.map_err(|e| e.to_string()) });
        Ok(round.await??)
    }

    /// Stops the market.
    pub async fn shutdown(self) -> Result<(), Box<dyn std::error::Error>> {
        Ok(self.bureau.shutdown().await?)
    }
}

/// One contract-net round of `ctx`'s agent (the initiator with `book`) with `participants`:
/// see [`ContractNetMarket::round`].
async fn round(
    ctx: &Context,
    book: &agent_protocols::contract_net::Book,
    participants: &[Address],
) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
    use agent_protocols::contract_net::{self, Outcome};
    let started = Instant::now();
    let called = contract_net::call::<_, u64>(ctx, book, participants, &"task", Duration::from_secs(10)).await?;
    let call = started.elapsed();
    let winner = called.proposals.iter().min_by_key(|p| p.proposal).map(|p| p.from).ok_or("no proposals")?;
    let outcome = contract_net::award::<u64, u64>(ctx, book, &called, &[winner], Duration::from_secs(10)).await?;
    let award = started.elapsed() - call;
    if called.proposals.len() != participants.len() || !matches!(outcome, Outcome::Awarded(_)) {
        let got = called.proposals.len();
        return Err(format!("{got} proposals of {}, outcome {outcome:?}", participants.len()).into());
    }
    Ok((call, award))
}

/// What the simulated-network benchmark measured.
#[derive(Debug, Clone, Copy)]
pub struct SimRun {
    /// Messages handed to their receivers (resends and duplicates not counted).
    pub deliveries: u64,
    /// Wall time of the exchange, setup excluded.
    pub wall: Duration,
    /// CPU time the exchange took on the simulation's thread (which runs all of it), setup
    /// excluded; none where it cannot be read. Unlike wall time it does not grow when other
    /// processes share the cores.
    pub cpu: Option<Duration>,
    /// Simulated time it covered.
    pub simulated: Duration,
    /// Copies the network lost (and resent).
    pub lost: u64,
    /// Resident memory added by the hosts and agents, per agent, in bytes.
    pub bytes_per_agent: Option<u64>,
}

/// A hop of the simulated-network benchmark: forwarded `ttl` more times.
#[derive(Serialize, Deserialize, schemars::JsonSchema, agent_core::Message)]
struct Hop(u32);

/// `hosts` simulated hosts with `agents_per_host` agents each, on links of 5-15 ms with 1%
/// loss; every agent starts a chain of `hops` messages, each forwarded to another agent
/// (mostly on another host). Runs on a current-thread runtime with the clock paused.
pub fn sim_deliveries(hosts: usize, agents_per_host: usize, hops: u32) -> Result<SimRun, Box<dyn std::error::Error>> {
    use agent_core::sim::{Link, Sim};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
    runtime.block_on(async {
        let before = resident_bytes();
        let sim = Sim::new(7).without_trace();
        sim.set_default_link(Link::with_latency(Duration::from_millis(5)).jitter(Duration::from_millis(10)).loss(0.01));
        let total = hosts * agents_per_host;
        let everyone: Arc<std::sync::OnceLock<Vec<Address>>> = Arc::default();
        let mut placed = Vec::with_capacity(total);
        for h in 0..hosts {
            let host = sim.add_host(&format!("host {h}"))?;
            for a in 0..agents_per_host {
                let index = h * agents_per_host + a;
                let mut agent = Agent::builder(format!("agent {index}")).seed(format!("agent {index}")).build()?;
                let everyone = Arc::clone(&everyone);
                agent.on_message(move |ctx: Context, _from: Address, Hop(ttl): Hop| {
                    let everyone = Arc::clone(&everyone);
                    async move {
                        let Some(all) = everyone.get() else { return };
                        if ttl > 0 {
                            // Deterministic and spread, always to another host.
                            let mut next = (index * 7919 + ttl as usize * 104_729) % all.len();
                            if next / agents_per_host == index / agents_per_host {
                                next = (next + agents_per_host) % all.len();
                            }
                            // A hop that fails ends its chain; the run then reports how
                            // many hops were delivered short of the expected number.
                            let _ = ctx.send(all[next], Hop(ttl - 1)).await;
                        }
                    }
                });
                placed.push((host.clone(), host.add(agent)?));
            }
        }
        // Set once, here, before any hop runs: it cannot be set already.
        let _ = everyone.set(placed.iter().map(|(_, address)| *address).collect());
        let bytes_per_agent = match (before, resident_bytes()) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before) / total as u64),
            _ => None,
        };
        let started = Instant::now();
        let cpu_before = thread_cpu_time();
        let simulated = tokio::time::Instant::now();
        let mut chains = tokio::task::JoinSet::new();
        for (host, address) in &placed {
            let ctx = host.context(*address).ok_or("agent missing")?;
            let target = *address;
            chains.spawn(async move { ctx.send(target, Hop(hops)).await.is_ok() });
        }
        while chains.join_next().await.is_some() {}
        // Each chain runs on by itself; wait (in simulated time, bounded) until all hops
        // are delivered.
        let expected = (total as u64) * u64::from(hops);
        let done = sim
            .wait_until(Duration::from_secs(3600), Duration::from_millis(100), || sim.stats().delivered >= expected)
            .await;
        let wall = started.elapsed();
        let cpu = thread_cpu_time().zip(cpu_before).map(|(after, before)| after.saturating_sub(before));
        let stats = sim.stats();
        let simulated = simulated.elapsed();
        sim.shutdown().await;
        if !done {
            return Err(format!("only {} of {expected} hops were delivered", stats.delivered).into());
        }
        Ok(SimRun { deliveries: stats.delivered, wall, cpu, simulated, lost: stats.lost, bytes_per_agent })
    })
}

/// What [`yuma_epoch`] measured.
#[derive(Debug, Clone)]
pub struct YumaRun {
    /// Wall time of each timed epoch, shortest first.
    pub times: Vec<Duration>,
    /// Uids in the subnet (validators and miners).
    pub uids: usize,
    /// Non-zero weights the validators set in the timed epoch.
    pub weights_set: usize,
    /// Validators holding bonds from the previous epoch.
    pub bond_holders: usize,
    /// Miners with a positive incentive after the timed epoch.
    pub paid_miners: usize,
    /// Processor time of the timed epochs, all threads, divided by their number (`None` where
    /// the process's processor time cannot be read).
    pub cpu_per_epoch: Option<Duration>,
}

impl YumaRun {
    /// The median epoch time.
    pub fn median(&self) -> Duration {
        self.times.get(self.times.len() / 2).copied().unwrap_or_default()
    }
}

/// One epoch of Yuma Consensus ([`agent_protocols::subnet::yuma::Yuma::run`], reusing one
/// workspace as a subnet owner does from epoch to epoch) on a subnet of
/// `validators` validators (uids `0..validators`, each with its own stake, all with a permit)
/// and `miners` miners (the uids after them, no stake). With `dense` false, each validator
/// weights a random 10–20% of the miners (nine in ten validators weight each of the best 8%, so
/// that those reach consensus); with `dense` true, every validator weights every miner. A
/// weight is the miner's quality times the validator's own noise, on subtensor's `u16` scale;
/// the bonds are those a previous epoch (other weights, same validators) left. Everything is
/// drawn from `seed`. The epoch runs once untimed, then `runs` times timed on the same inputs,
/// each into the memory the one before left.
///
/// ```
/// let run = agora_benches::yuma_epoch(8, 64, false, 3, 1).unwrap();
/// assert_eq!(run.times.len(), 3);
/// assert_eq!(run.uids, 72);
/// assert_eq!(run.bond_holders, 8);
/// let dense = agora_benches::yuma_epoch(8, 64, true, 1, 1).unwrap();
/// assert_eq!(dense.weights_set, 8 * 64);
/// ```
pub fn yuma_epoch(
    validators: usize,
    miners: usize,
    dense: bool,
    runs: usize,
    seed: u64,
) -> Result<YumaRun, agent_protocols::subnet::yuma::YumaError> {
    use agent_protocols::subnet::yuma::{Inputs, Params, SparseRow, Yuma};
    let n = validators + miners;
    let mut rng = SplitMix64(seed);
    // Distinct stakes between 1,000 and 1,000,000 tokens of 10⁹ units.
    let stakes: Vec<u64> = (0..n)
        .map(|i| if i < validators { 1_000_000_000_000 + rng.below(999_000) * 1_000_000_000 + i as u64 } else { 0 })
        .collect();
    // Quality between 0.1 and 1; the best 8% are popular.
    const POPULAR: f64 = 1.0 - 0.9 * 0.08;
    let quality: Vec<f64> = (0..miners).map(|_| 0.1 + 0.9 * rng.unit()).collect();
    let weights = |rng: &mut SplitMix64| -> Vec<SparseRow> {
        (0..n)
            .map(|i| {
                if i >= validators {
                    return Vec::new(); // Miners set no weights.
                }
                // Nine validators in ten weight each of the best miners (the best 8%); the
                // rest of the row's 10-20% is spread over the others.
                let share = 0.10 + 0.10 * rng.unit();
                let others = (share - 0.08 * 0.9) / 0.92;
                let mut row = Vec::with_capacity(if dense { miners } else { miners / 5 });
                for (j, &q) in quality.iter().enumerate() {
                    if dense || rng.unit() < if q >= POPULAR { 0.9 } else { others } {
                        row.push((validators + j, (q * (0.5 + 0.5 * rng.unit()) * 65_535.0).round().max(1.0)));
                    }
                }
                row
            })
            .collect()
    };
    let params = Params { max_allowed_validators: u16::try_from(validators).unwrap_or(u16::MAX), ..Params::default() };
    // A tempo of 360 blocks at one token (10⁹ units) per block.
    let emission = 360_000_000_000;
    let before = weights(&mut rng);
    let mut yuma = Yuma::new();
    let bonds = yuma.run(&Inputs { stakes: &stakes, weights: &before, bonds: &[], emission }, &params)?.bonds.clone();
    let now = weights(&mut rng);
    let inputs = Inputs { stakes: &stakes, weights: &now, bonds: &bonds, emission };
    let paid_miners = yuma.run(&inputs, &params)?.incentive.iter().filter(|&&x| x > 0.0).count();
    let mut times = Vec::with_capacity(runs);
    // Whole-process figures (from /proc/self/stat, which counts the epoch's finished helper
    // threads too), so other threads of this process must be idle meanwhile.
    let cpu_before = process_cpu_time();
    for _ in 0..runs {
        let started = Instant::now();
        std::hint::black_box(yuma.run(&inputs, &params)?);
        times.push(started.elapsed());
    }
    let cpu_per_epoch = process_cpu_time()
        .zip(cpu_before)
        .and_then(|(after, before)| after.checked_sub(before))
        .map(|spent| spent / u32::try_from(runs.max(1)).unwrap_or(u32::MAX));
    times.sort_unstable();
    Ok(YumaRun {
        times,
        uids: n,
        weights_set: now.iter().map(Vec::len).sum(),
        bond_holders: bonds.iter().filter(|row| !row.is_empty()).count(),
        paid_miners,
        cpu_per_epoch,
    })
}

/// Processor time (user and system) this process has used so far, including that of its
/// threads that have finished, which [`cpu_time`] misses; in clock ticks of 10 ms, so it
/// suits spans of several hundred milliseconds (from `/proc/self/stat`; `None` elsewhere).
pub fn process_cpu_time() -> Option<Duration> {
    const TICKS_PER_SECOND: u64 = 100; // USER_HZ on Linux.
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (in parentheses, which may hold spaces): state is field 3, utime
    // and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1_000 / TICKS_PER_SECOND))
}

/// SplitMix64: a small seeded generator, so the benchmark's inputs never change with a
/// dependency's version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..bound` (a negligible modulo bias for small bounds).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}
