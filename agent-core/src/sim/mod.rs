//! Simulated markets for integration tests: many bureaus ("hosts") in one process, joined
//! by a simulated network with latency, loss, duplication, reordering, bandwidth limits,
//! partitions and crashes, all on tokio's paused clock and driven by one seed.
//!
//! The network plugs into the runtime where the libp2p transport does (the way out of a
//! bureau, and the router on the way in), so the agents, handlers and protocols under test
//! run unchanged, and every send still ends in one of the real outcomes: delivered, refused
//! by the receiver, unreachable, or not acknowledged (may have been delivered).
//!
//! Run a simulation on a current-thread runtime with the clock paused
//! (`#[tokio::test(start_paused = true)]`): an hour of market time then takes as long as
//! the work in it. Everything random the network does is drawn from one seeded generator,
//! and agents get their own generators from the same seed ([`Sim::rng`]), so the same seed
//! gives the same run, event for event: [`Sim::trace`] records every delivery and outcome,
//! and two runs' traces compare equal. A simulation dropped while its test panics writes its
//! seed to stderr; [`Sim::seed_from_env`] reads it back from `AGORA_SIM_SEED`.
//!
//! What stays real: handlers, mailboxes, storage (each host keeps its own store across a
//! crash) and the ledger you give the agents. A host's store commits when an agent flushes
//! ([`Storage::flush`](crate::Storage::flush)), at once and on the simulation's thread, so
//! a crash loses exactly the writes made since the last flush. For runs that repeat
//! exactly, use [`MemoryLedger`](crate::ledger::MemoryLedger) on the simulated clock
//! ([`Sim::unix_ms`]) and give agents fixed keys (`AgentBuilder::seed`). Services can be
//! made to fail on a schedule with
//! [`FaultyLedger`] and [`FaultyResolver`]. `docs/simulation.md` explains the choices.
//!
//! ```
//! use std::time::Duration;
//! use agent_core::sim::{Link, Sim};
//! use agent_core::{Agent, Context, Address, Message};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, schemars::JsonSchema, Message)]
//! struct Ping(u32);
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?.block_on(async {
//! let sim = Sim::new(7);
//! sim.set_default_link(Link::with_latency(Duration::from_millis(40)).loss(0.05));
//! let (a, b) = (sim.add_host("a")?, sim.add_host("b")?);
//! let mut pong = Agent::builder("pong").seed("pong").build()?;
//! pong.on_message(|_ctx: Context, _from: Address, _ping: Ping| async {});
//! let pong = b.add(pong)?;
//! let ping = a.add(Agent::builder("ping").seed("ping").build()?)?;
//!
//! a.context(ping).unwrap().send(pong, Ping(1)).await?;
//! assert!(sim.trace().iter().any(|line| line.contains("ping -> pong") && line.contains("delivered")));
//! # sim.shutdown().await;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

mod faults;
mod flight;
mod net;

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub use faults::{FaultyLedger, FaultyResolver, Outage, Outages};
pub use net::Link;

use crate::bureau::{Bureau, BureauError, Config};
use crate::identity::Address;
use crate::{Agent, Context};

/// The simulated clock's Unix time at the start of every simulation: fixed, so runs repeat.
pub const EPOCH_UNIX_MS: u64 = 1_700_000_000_000;

/// A simulated network of hosts. See the module docs.
pub struct Sim {
    net: Arc<net::Net>,
}

/// One simulated host: a bureau on the simulated network.
#[derive(Clone)]
pub struct Host {
    id: usize,
    net: Arc<net::Net>,
}

/// Why a host could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The host's bureau failed.
    #[error("host {host}: {source}")]
    Bureau {
        /// The host.
        host: String,
        /// Why (boxed: a bureau error is large, and this one is rare).
        #[source]
        source: Box<BureauError>,
    },
    /// The host is down (crashed and not restarted).
    #[error("host {0} is down")]
    Down(String),
}

impl Sim {
    /// An empty network whose every random choice follows `seed`. Links default to 1 ms
    /// of latency and no faults.
    ///
    /// From now until the simulation is dropped, [`unix_now_ms`](crate::envelope::unix_now_ms)
    /// on this thread reads the simulated clock ([`unix_ms`](Self::unix_ms)), so protocol
    /// and escrow deadlines and envelope timestamps follow simulated time.
    pub fn new(seed: u64) -> Sim {
        let sim = Sim { net: Arc::new(net::Net::new(seed)) };
        crate::envelope::follow_simulated_clock(sim.clock_id(), sim.net.started());
        sim
    }

    fn clock_id(&self) -> u64 {
        Arc::as_ptr(&self.net) as usize as u64
    }

    /// The seed in `AGORA_SIM_SEED` if set (to rerun a failed simulation), else `default`.
    pub fn seed_from_env(default: u64) -> u64 {
        std::env::var("AGORA_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.net.seed
    }

    /// A random generator of its own for `name` (an agent, a strategy), derived from the
    /// seed and the name only, so it does not depend on the order agents ask for theirs.
    pub fn rng(&self, name: &str) -> rand::rngs::StdRng {
        let digest = Sha256::new().chain_update(self.net.seed.to_be_bytes()).chain_update(name.as_bytes()).finalize();
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&digest);
        rand::rngs::StdRng::from_seed(seed)
    }

    /// Simulated time since the simulation began.
    pub fn elapsed(&self) -> Duration {
        self.net.elapsed()
    }

    /// The simulated clock as Unix milliseconds ([`EPOCH_UNIX_MS`] at the start): give it
    /// to a ledger (`MemoryLedger::new(authority, move || sim_clock())`) so escrow deadlines
    /// follow simulated time.
    pub fn unix_ms(&self) -> u64 {
        self.net.unix_ms()
    }

    /// A clock closure reading [`unix_ms`](Self::unix_ms), for ledgers and fault schedules.
    pub fn clock(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let net = Arc::clone(&self.net);
        move || net.unix_ms()
    }

    /// Adds a host with default bureau settings.
    pub fn add_host(&self, name: &str) -> Result<Host, SimError> {
        self.add_host_with(name, Config::default())
    }

    /// Adds a host whose bureau uses `config` (its ledger, mailboxes, timeouts). Its
    /// storage lives in memory, is committed when an agent flushes, and keeps what was
    /// committed across the host's crashes.
    pub fn add_host_with(&self, name: &str, config: Config) -> Result<Host, SimError> {
        let id = self.net.add_host(name, config)?;
        Ok(Host { id, net: Arc::clone(&self.net) })
    }

    /// The link every pair of hosts uses unless [`set_link`](Self::set_link) says otherwise.
    pub fn set_default_link(&self, link: Link) {
        self.net.wire.lock().default_link = link;
    }

    /// The link between `a` and `b`, both ways.
    pub fn set_link(&self, a: &Host, b: &Host, link: Link) {
        let mut wire = self.net.wire.lock();
        wire.links.insert((a.id, b.id), link.clone());
        wire.links.insert((b.id, a.id), link);
    }

    /// Cuts `side_a` off from `side_b` from `from` until `until` (simulated time since the
    /// start); nothing crosses in either direction meanwhile, and the partition heals at
    /// `until` by itself.
    pub fn partition(&self, side_a: &[&Host], side_b: &[&Host], from: Duration, until: Duration) {
        self.net.wire.lock().partitions.push(net::Partition {
            a: side_a.iter().map(|h| h.id).collect(),
            b: side_b.iter().map(|h| h.id).collect(),
            from,
            until,
        });
    }

    /// Crashes `host`: its agents stop at once (no shutdown handler runs, queued messages
    /// are lost), and messages to it go unanswered until it restarts. Its storage keeps
    /// what the agents flushed ([`Storage::flush`](crate::Storage::flush) returned); writes
    /// made since their last flush are lost, as on a real crash.
    pub fn crash(&self, host: &Host) {
        self.net.crash(host.id);
    }

    /// Restarts a crashed host on the storage it had; add its agents again with
    /// [`Host::add`] (with the same seeds they resume their storage).
    pub fn restart(&self, host: &Host) -> Result<(), SimError> {
        self.net.restart(host.id)
    }

    /// Makes every send first resolve its target through `resolver`, as the transport asks
    /// the almanac: a failure ends the send as [`Unroutable`](crate::SendFailure::Unroutable)
    /// with the resolver's reason (wrap it in a [`FaultyResolver`] for outages).
    pub fn set_resolver(&self, resolver: Arc<dyn crate::transport::Resolver>) {
        *self.net.resolver.write() = Some(resolver);
    }

    /// Every event so far, one line each: the simulated time in ms, what happened, from and
    /// to (agents by name), and the message.
    pub fn trace(&self) -> Vec<String> {
        self.net.trace.lock().lines.clone()
    }

    /// Stops recording the trace (counters go on): for large runs where it would cost too
    /// much memory.
    pub fn without_trace(self) -> Sim {
        self.net.tracing.store(false, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Counts of what the network did so far.
    pub fn stats(&self) -> Stats {
        self.net.wire.lock().stats
    }

    /// Waits, in simulated time, until `condition` holds, checking every `every`, for at
    /// most `limit`. Returns whether it held.
    pub async fn wait_until(&self, limit: Duration, every: Duration, mut condition: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + limit;
        loop {
            if condition() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Stops every host gracefully.
    pub async fn shutdown(self) {
        let bureaus: Vec<Bureau> = self.net.hosts.lock().iter_mut().filter_map(|h| h.bureau.take()).collect();
        for bureau in bureaus {
            if let Err(e) = bureau.shutdown().await {
                tracing::warn!(error = %e, "a simulated host did not stop cleanly");
            }
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        crate::envelope::unfollow_simulated_clock(self.clock_id());
        if let Some(driver) = self.net.driver.lock().take() {
            driver.abort();
        }
        // Their senders end as not acknowledged, as when a real network goes away (taken
        // out first: what a flight holds is dropped outside the lock).
        let in_flight = std::mem::take(&mut self.net.wire.lock().flights);
        drop(in_flight);
        if std::thread::panicking() {
            // Written straight to stderr, not through tracing: whoever reads the failed
            // test's output needs the seed whether or not a subscriber is installed.
            use std::io::Write;
            let seed = self.net.seed;
            let _ = writeln!(std::io::stderr(), "simulation failed with seed {seed}; rerun with AGORA_SIM_SEED={seed}");
        }
    }
}

/// Counts of what a simulated network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages (and replies) handed to their receiver.
    pub delivered: u64,
    /// Copies lost on the way (data or acknowledgement).
    pub lost: u64,
    /// Copies that arrived twice and were answered with the first copy's verdict.
    pub duplicates: u64,
    /// Attempts that found the way cut (a partition, or the host down).
    pub blocked: u64,
    /// Sends and replies that ended in a failure.
    pub failed: u64,
}

impl Host {
    /// The host's name.
    pub fn name(&self) -> String {
        self.net.hosts.lock()[self.id].name.clone()
    }

    /// Starts `agent` on this host.
    pub fn add(&self, agent: Agent) -> Result<Address, SimError> {
        let name = agent.name().to_owned();
        let (address, when_handled) = {
            let hosts = self.net.hosts.lock();
            let host = &hosts[self.id];
            let bureau = host.bureau.as_ref().ok_or_else(|| SimError::Down(host.name.clone()))?;
            let mailbox = agent.mailbox.unwrap_or(host.config.mailbox);
            let when_handled = mailbox.acknowledge() == crate::agent::Acknowledge::WhenHandled;
            let address = bureau
                .add(agent)
                .map_err(|source| SimError::Bureau { host: host.name.clone(), source: Box::new(source) })?;
            (address, when_handled)
        };
        self.net.directory.write().insert(address, Placed { host: self.id, name, when_handled });
        Ok(address)
    }

    /// The context of agent `address` on this host (none if it is not here or the host is
    /// down).
    pub fn context(&self, address: Address) -> Option<Context> {
        self.net.hosts.lock()[self.id].bureau.as_ref()?.context(address)
    }

    /// Makes the host's storage refuse every write while `down` (a full or failed disk, as
    /// its agents see it: [`StorageError`](crate::StorageError) from every write, nothing
    /// queued), or serve writes again. Reads are served throughout, what was stored is
    /// kept, and the agents keep running and sending: a test shows what they do when they
    /// cannot record what they do. Lasts across a crash and restart until turned off.
    pub fn fail_storage(&self, down: bool) {
        let mut hosts = self.net.hosts.lock();
        let host = &mut hosts[self.id];
        host.storage_down = down;
        if let Some(bureau) = &host.bureau {
            bureau.refuse_writes(down);
        }
        drop(hosts);
        self.net.record(|| format!("storage {} on {}", if down { "down" } else { "up" }, self.name()));
    }

    /// Whether the host is up.
    pub fn is_up(&self) -> bool {
        self.net.hosts.lock()[self.id].bureau.is_some()
    }
}

/// The agents of a simulation by address. Looked up on every send; addresses are uniform
/// already, so they need no SipHash.
type Directory = crate::agent::DigestMap<Address, Placed>;

/// Where an agent runs, and what a hand-over to it needs to know.
struct Placed {
    host: usize,
    name: String,
    /// Whether it acknowledges once handled ([`Acknowledge::WhenHandled`](crate::Acknowledge)),
    /// kept here so a hand-over need not ask its host's router (one more lookup, under
    /// a lock, per message).
    when_handled: bool,
}
