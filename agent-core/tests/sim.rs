//! The simulation kit, tested on itself: runs repeat exactly from a seed, partitions cut
//! and heal, crashes lose mailboxes and keep storage, and service outages give the typed
//! errors agents must handle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{LedgerError, MemoryLedger};
use agent_core::sim::{FaultyLedger, FaultyResolver, Link, Outage, Outages, Sim};
use agent_core::transport::{Endpoint, StaticResolver};
use agent_core::{Address, Agent, Config, Context, Identity, Message, SendFailure, Unroutable, Wallet, WalletError};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ping(u32);

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Pong(u32);

fn responder(name: &str) -> Agent {
    let mut agent = Agent::builder(name).seed(name).build().unwrap();
    agent.on_message(|ctx: Context, _from: Address, Ping(n): Ping| async move {
        if ctx.is_request() {
            ctx.reply(Pong(n)).await?;
        }
        Ok::<_, agent_core::ReplyError>(())
    });
    agent
}

/// A market of 3 hosts with 4 agents each on a lossy, jittery, duplicating network; 60
/// sends and requests between random agents. Returns the trace.
async fn run(seed: u64) -> Vec<String> {
    let sim = Sim::new(seed);
    sim.set_default_link(
        Link::with_latency(Duration::from_millis(20)).jitter(Duration::from_millis(15)).loss(0.1).duplicate(0.05),
    );
    let mut agents = Vec::new();
    for h in 0..3 {
        let host = sim.add_host(&format!("host {h}")).unwrap();
        for a in 0..4 {
            let address = host.add(responder(&format!("agent {h}.{a}"))).unwrap();
            agents.push((host.clone(), address));
        }
    }
    let mut rng = sim.rng("driver");
    let mut exchanges = tokio::task::JoinSet::new();
    for n in 0..60u32 {
        let (from_host, from) = agents[rng.gen_range(0..agents.len())].clone();
        let (_, to) = agents[rng.gen_range(0..agents.len())].clone();
        let ctx = from_host.context(from).unwrap();
        let pause = Duration::from_millis(rng.gen_range(0..500));
        exchanges.spawn(async move {
            tokio::time::sleep(pause).await;
            if n % 2 == 0 {
                let _ = ctx.send(to, Ping(n)).await;
            } else {
                let _ = ctx.request::<Ping, Pong>(to, Ping(n), Duration::from_secs(2)).await;
            }
        });
    }
    while exchanges.join_next().await.is_some() {}
    let trace = sim.trace();
    sim.shutdown().await;
    trace
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_run_event_for_event_and_another_seed_another() {
    let seed = Sim::seed_from_env(42);
    let first = run(seed).await;
    let second = run(seed).await;
    assert!(first.len() > 60, "a real run: {} events: {first:#?}", first.len());
    assert!(first.iter().any(|l| l.contains(" lost ")), "the network lost some copies");
    assert!(first.iter().any(|l| l.contains(" duplicate ")), "and duplicated some");
    assert_eq!(first.join("\n"), second.join("\n"), "byte for byte");
    let other = run(seed + 1).await;
    assert_ne!(first, other, "another seed, another run");
}

#[tokio::test(start_paused = true)]
async fn a_partition_makes_sends_fail_as_unreachable_and_heals_on_schedule() {
    let sim = Sim::new(1);
    let (a, b) = (sim.add_host("a").unwrap(), sim.add_host("b").unwrap());
    let pong = b.add(responder("pong")).unwrap();
    let ping = a.add(Agent::builder("ping").seed("ping").build().unwrap()).unwrap();
    // Longer than a send's deadline (10 s): a send waits for the cut to heal only that long.
    sim.partition(&[&a], &[&b], Duration::ZERO, Duration::from_secs(30));
    let ctx = a.context(ping).unwrap();

    let cut = ctx.send(pong, Ping(1)).await;
    let Err(cut) = cut else { panic!("{:#?}", sim.trace()) };
    assert!(matches!(cut.failure(), SendFailure::Unreachable { .. }), "{cut}");
    assert!(!cut.failure().may_have_been_delivered(), "nothing crossed: certainly not delivered");
    let request = ctx.request::<Ping, Pong>(pong, Ping(2), Duration::from_secs(1)).await;
    assert!(request.is_err(), "{request:?}");

    tokio::time::sleep(Duration::from_secs(30).saturating_sub(sim.elapsed())).await;
    ctx.send(pong, Ping(3)).await.expect("healed");
    assert_eq!(ctx.request::<Ping, Pong>(pong, Ping(4), Duration::from_secs(1)).await.unwrap().0, 4);
    assert!(sim.trace().iter().any(|l| l.contains("blocked ping -> pong")));
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_host_loses_its_mailboxes_and_keeps_its_storage() {
    let sim = Sim::new(2);
    let (a, b) = (sim.add_host("a").unwrap(), sim.add_host("b").unwrap());
    let handled = Arc::new(AtomicUsize::new(0));
    let worker = |handled: Arc<AtomicUsize>| {
        let mut agent = Agent::builder("worker").seed("worker").build().unwrap();
        agent.on_message(move |ctx: Context, _from: Address, Ping(n): Ping| {
            let handled = handled.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let storage = ctx.storage()?;
                storage.set("last", &n)?;
                // Flushed: the write survives a crash from here on.
                storage.flush().await?;
                handled.fetch_add(1, Ordering::SeqCst);
                Ok::<_, agent_core::StorageError>(())
            }
        });
        agent
    };
    let target = b.add(worker(handled.clone())).unwrap();
    let sender = a.add(Agent::builder("sender").seed("sender").build().unwrap()).unwrap();
    let ctx = a.context(sender).unwrap();
    for n in 1..=5 {
        ctx.send(target, Ping(n)).await.expect("queued and acknowledged");
    }
    // Two are handled by 250 ms (100 ms each, after 1 ms of latency); the rest wait.
    tokio::time::sleep(Duration::from_millis(250)).await;
    sim.crash(&b);
    let done_before = handled.load(Ordering::SeqCst);
    assert!((1..5).contains(&done_before), "{done_before}");
    let down = ctx.send(target, Ping(9)).await.unwrap_err();
    assert!(matches!(down.failure(), SendFailure::Unreachable { .. }), "{down}");

    sim.restart(&b).unwrap();
    let target_again = b.add(worker(handled.clone())).unwrap();
    assert_eq!(target_again, target, "the same key, the same agent");
    let storage = b.context(target).unwrap().storage().unwrap();
    assert_eq!(storage.get::<u32>("last").unwrap(), Some(done_before as u32), "storage kept");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(handled.load(Ordering::SeqCst), done_before, "what was queued died with the host");
    ctx.send(target, Ping(10)).await.expect("up again");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(storage.get::<u32>("last").unwrap(), Some(10));
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_almanac_outage_gives_the_typed_unavailable_resolve_error() {
    let sim = Sim::new(3);
    let (a, b) = (sim.add_host("a").unwrap(), sim.add_host("b").unwrap());
    let pong = b.add(responder("pong")).unwrap();
    let ping = a.add(Agent::builder("ping").seed("ping").build().unwrap()).unwrap();
    let directory = Arc::new(StaticResolver::new());
    let endpoint = Endpoint { peer_id: libp2p::PeerId::random(), addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()] };
    directory.insert(pong, endpoint);
    let outages = Outages::none().add(Duration::from_secs(1), Duration::from_secs(3), Outage::Unavailable);
    sim.set_resolver(Arc::new(FaultyResolver::new(&sim, directory, outages)));
    let ctx = a.context(ping).unwrap();

    ctx.send(pong, Ping(1)).await.expect("before the outage");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let err = ctx.send(pong, Ping(2)).await.unwrap_err();
    assert!(
        matches!(err.failure(), SendFailure::Unroutable { reason: Unroutable::ResolverUnavailable(_), .. }),
        "{err}"
    );
    assert!(!err.failure().may_have_been_delivered());
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctx.send(pong, Ping(3)).await.expect("after the outage");
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_ledger_outage_gives_may_have_been_applied_and_the_wallet_recovers_after() {
    let sim = Sim::new(4);
    let mint = Identity::from_seed("sim mint");
    let ledger = Arc::new(MemoryLedger::new(Some(mint.address()), sim.clock()));
    // Down from 1 s to 3 s; then, until 5 s, it applies submissions but their answers are lost.
    let outages = Outages::none().add(Duration::from_secs(1), Duration::from_secs(3), Outage::Unavailable).add(
        Duration::from_secs(3),
        Duration::from_secs(5),
        Outage::LostAnswers,
    );
    let faulty = Arc::new(FaultyLedger::new(&sim, ledger.clone(), outages));
    let host = sim.add_host_with("bank", Config::default().with_ledger(faulty.clone())).unwrap();
    let payer = host.add(Agent::builder("payer").seed("payer").build().unwrap()).unwrap();
    let wallet = host.context(payer).unwrap().wallet().unwrap();
    let payee = Identity::from_seed("payee").address();
    Wallet::new(mint, ledger.clone()).mint(wallet.address(), 100).await.unwrap();

    wallet.transfer(payee, 10, "before").await.expect("before the outage");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let err = wallet.transfer(payee, 10, "during").await.unwrap_err();
    assert!(matches!(err, WalletError::Ledger(LedgerError::Unavailable(_))), "{err}");
    assert!(err.to_string().contains("may or may not have been applied"), "{err}");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let lost = wallet.transfer(payee, 10, "answer lost").await.unwrap_err();
    assert!(matches!(lost, WalletError::Ledger(LedgerError::Unavailable(_))), "{lost}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The wallet learns its nonce again and goes on; the transfer whose answer was lost
    // did land, the one while the ledger was down did not.
    wallet.transfer(payee, 10, "after").await.expect("recovered");
    use agent_core::ledger::Ledger;
    assert_eq!(ledger.balance(payee).await.unwrap(), 30);
    assert_eq!(ledger.balance(wallet.address()).await.unwrap(), 70);
    assert_eq!(ledger.audit_total(), ledger.supply());
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_unix_clock_follows_simulated_time_while_a_simulation_lives() {
    use agent_core::envelope::unix_now_ms;
    use agent_core::sim::EPOCH_UNIX_MS;
    let sim = Sim::new(5);
    assert_eq!(unix_now_ms(), EPOCH_UNIX_MS);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(unix_now_ms(), EPOCH_UNIX_MS + 3_600_000, "an hour of simulated time");
    assert_eq!(unix_now_ms(), sim.unix_ms());
    drop(sim);
    assert!(
        unix_now_ms() > EPOCH_UNIX_MS + 365 * 24 * 3_600_000,
        "the system clock is back once the simulation is gone"
    );
}

/// A crash keeps what a returned flush covered and loses writes made after it: the store
/// of a simulated host commits only on flush, so the line between the two is exact.
#[tokio::test(start_paused = true)]
async fn a_crash_keeps_flushed_writes_and_loses_the_ones_not_flushed() {
    let sim = Sim::new(6);
    let host = sim.add_host("keeper").unwrap();
    let keeper = host.add(Agent::builder("keeper").seed("keeper").build().unwrap()).unwrap();
    let storage = host.context(keeper).unwrap().storage().unwrap();
    storage.set("flushed", &1u32).unwrap();
    storage.set("overwritten", &1u32).unwrap();
    storage.flush().await.expect("flushed");
    storage.set("overwritten", &2u32).unwrap();
    storage.set("not flushed", &3u32).unwrap();
    assert!(storage.remove("flushed").unwrap() && !storage.contains("flushed").unwrap(), "removed, not flushed");
    assert_eq!(storage.get::<u32>("not flushed").unwrap(), Some(3), "visible at once before the crash");
    // Simulated time passes: a write behind is not committed by a timer in a simulation.
    tokio::time::sleep(Duration::from_secs(5)).await;

    sim.crash(&host);
    assert!(storage.set("after the crash", &4u32).is_err(), "the crashed store takes no writes");
    assert!(storage.flush().await.is_err(), "nor commits any");
    sim.restart(&host).unwrap();
    host.add(Agent::builder("keeper").seed("keeper").build().unwrap()).unwrap();
    let after = host.context(keeper).unwrap().storage().unwrap();
    assert_eq!(after.get::<u32>("flushed").unwrap(), Some(1), "flushed, its later removal lost");
    assert_eq!(after.get::<u32>("overwritten").unwrap(), Some(1), "the flushed value, not the later one");
    assert_eq!(after.get::<u32>("not flushed").unwrap(), None, "never flushed: lost");
    assert_eq!(after.get::<u32>("after the crash").unwrap(), None);
    assert!(
        sim.trace().iter().any(|l| l.contains("crash keeper (3 storage writes not flushed, lost)")),
        "{:#?}",
        sim.trace()
    );

    after.set("again", &5u32).unwrap();
    sim.shutdown().await;
}

/// A storage outage on a host: every write is refused with the typed `Unavailable` error
/// and nothing of it is kept, while reads are served, what was stored stays, and the
/// agent keeps sending; the outage lasts across a crash and restart until healed.
#[tokio::test(start_paused = true)]
async fn a_storage_outage_refuses_writes_keeps_what_was_stored_and_heals() {
    let sim = Sim::new(8);
    let (host, other) = (sim.add_host("disk").unwrap(), sim.add_host("other").unwrap());
    let keeper = host.add(Agent::builder("keeper").seed("keeper").build().unwrap()).unwrap();
    let responder = other.add(responder("responder")).unwrap();
    let ctx = host.context(keeper).unwrap();
    let storage = ctx.storage().unwrap();
    storage.set("before", &1u32).unwrap();
    storage.flush().await.expect("flushed");

    host.fail_storage(true);
    let refused = storage.set("during", &2u32);
    assert!(
        matches!(refused, Err(agent_core::StorageError::Store(agent_core::store::StoreError::Unavailable))),
        "{refused:?}"
    );
    assert!(matches!(storage.remove("before"), Err(agent_core::StorageError::Store(_))), "removal refused too");
    assert_eq!(storage.get::<u32>("before").unwrap(), Some(1), "read during the outage");
    assert_eq!(storage.get::<u32>("during").unwrap(), None, "a refused write is not kept");
    ctx.send(responder, Ping(1)).await.expect("the agent still sends");

    sim.crash(&host);
    sim.restart(&host).unwrap();
    host.add(Agent::builder("keeper").seed("keeper").build().unwrap()).unwrap();
    let restarted = host.context(keeper).unwrap().storage().unwrap();
    assert!(restarted.set("after restart", &3u32).is_err(), "still down after a restart");
    assert_eq!(restarted.get::<u32>("before").unwrap(), Some(1));

    host.fail_storage(false);
    restarted.set("healed", &4u32).unwrap();
    restarted.flush().await.expect("flushed once healed");
    assert_eq!(restarted.get::<u32>("healed").unwrap(), Some(4));
    assert!(sim.trace().iter().any(|l| l.contains("storage down on disk")), "{:#?}", sim.trace());
    sim.shutdown().await;
}

/// A graceful shutdown is not a crash: it commits what was written, flushed or not.
#[tokio::test(start_paused = true)]
async fn a_shutdown_commits_writes_not_flushed() {
    let sim = Sim::new(7);
    let host = sim.add_host("keeper").unwrap();
    let keeper = host.add(Agent::builder("keeper").seed("keeper").build().unwrap()).unwrap();
    let storage = host.context(keeper).unwrap().storage().unwrap();
    storage.set("kept", &1u32).unwrap();
    sim.shutdown().await;
    assert!(storage.flush().await.is_ok(), "already committed by the shutdown");
    assert_eq!(storage.get::<u32>("kept").unwrap(), Some(1));
}

/// An agent that acknowledges once handled: the send ends only after its handler ran,
/// which on the simulated network means the hand-over waits (in a task of its own) for the
/// handler, here one that takes 300 ms of simulated time.
#[tokio::test(start_paused = true)]
async fn a_send_to_an_agent_acknowledging_when_handled_ends_after_its_handler() {
    use agent_core::{Acknowledge, MailboxConfig};
    let sim = Sim::new(8);
    sim.set_default_link(Link::with_latency(Duration::from_millis(10)));
    let (a, b) = (sim.add_host("a").unwrap(), sim.add_host("b").unwrap());
    let handled = Arc::new(AtomicUsize::new(0));
    let mut slow = Agent::builder("slow")
        .seed("slow")
        .mailbox(MailboxConfig::default().with_acknowledge(Acknowledge::WhenHandled))
        .build()
        .unwrap();
    let counter = Arc::clone(&handled);
    slow.on_message(move |_ctx: Context, _from: Address, _ping: Ping| {
        let counter = Arc::clone(&counter);
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let slow = b.add(slow).unwrap();
    let sender = a.add(Agent::builder("sender").seed("sender").build().unwrap()).unwrap();
    let started = tokio::time::Instant::now();
    a.context(sender).unwrap().send(slow, Ping(1)).await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 1, "acknowledged only once handled");
    assert!(started.elapsed() >= Duration::from_millis(320), "there, handled, and back: {:?}", started.elapsed());
    sim.shutdown().await;
}

/// Agents on one host reach each other inside their bureau, sends and requests alike:
/// nothing crosses the simulated network, though the host has a way out to it.
#[tokio::test(start_paused = true)]
async fn agents_on_one_host_reach_each_other_without_the_network() {
    let sim = Sim::new(9);
    let host = sim.add_host("solo").unwrap();
    let asker = host.add(Agent::builder("asker").seed("asker").build().unwrap()).unwrap();
    let answerer = host.add(responder("answerer")).unwrap();
    let ctx = host.context(asker).unwrap();
    ctx.send(answerer, Ping(1)).await.unwrap();
    let Pong(n) = ctx.request::<Ping, Pong>(answerer, Ping(2), Duration::from_secs(1)).await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(sim.stats(), agent_core::sim::Stats::default(), "trace: {:?}", sim.trace());
    sim.shutdown().await;
}
