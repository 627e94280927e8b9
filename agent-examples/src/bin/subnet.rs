//! A subnet of small learned classifiers, scored by validators, paid through a ledger.
//!
//! Points in eight classes are drawn around eight centres on a circle (a seeded RNG). Each
//! miner trains a nearest-centroid classifier on its own sample of a labelled data set
//! collected class by class: the worst miner saw examples of one class only, the best of
//! all eight, with more examples per class too, so their quality differs widely. Two honest validators score every miner on held-out
//! labelled points; a third validator is honest at first, then colludes: it gives all its
//! weight to the worst miner. Yuma Consensus clips the colluder's weight to what the
//! honest majority agrees on, so the bad miner earns nearly nothing and the colluder's
//! dividends fall, epoch after epoch.
//!
//! Prints a table per epoch (incentive, dividends, balances) and checks five invariants:
//! supply conserved, the colluder's dividends fell, the colluder's validator trust at the last
//! scored epoch is below 0.05 (its weight clipped), the miner it favours has incentive below
//! 0.01 at the last scored epoch, and the best miner earned the most incentive. Exits with
//! status 1 if one fails.
#![allow(clippy::print_stdout)] // A demo: its output is the point.

use std::process::ExitCode;
use std::sync::Arc;

use agent_core::ledger::{Ledger, LocalLedger, LocalLedgerConfig};
use agent_core::{Address, Agent, Bureau, Config, Context, Identity, Wallet};
use agent_protocols::subnet::commit_reveal::weights_from_scores;
use agent_protocols::subnet::miner::{self, Miner, Serve};
use agent_protocols::subnet::owner::{self, EpochReport, Owner};
use agent_protocols::subnet::validator::{self, QueryError, SubmitError, Validator};
use agent_protocols::subnet::{Roster, Uid, UidWeight};
use anyhow::Context as _;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

const CLASSES: usize = 8;
const DIMS: usize = 2;
/// Distance of the class centres from the origin.
const RADIUS: f64 = 3.0;
/// Spread of each class around its centre.
const NOISE: f64 = 0.45;
/// Tokens emitted per scored epoch.
const EMISSION: u64 = 1_000_000;
/// Held-out points each validator keeps, and how many it asks about each epoch.
const HELD_OUT: usize = 600;
const BATCH: usize = 120;

#[derive(Parser)]
#[command(about = "A subnet of learned classifiers: honest validators, one colluder, Yuma Consensus")]
struct Args {
    /// Epochs to run (closes of the owner's epoch; with commit-reveal's delay of three epochs,
    /// the first three score nothing).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(7..=500))]
    epochs: u64,
    /// Seed of the data, the training samples and the validators' batches.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Number of miners (classifiers of increasing quality).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=8))]
    miners: u16,
    #[command(flatten)]
    metrics: agent_examples::MetricsArgs,
}

/// One labelled point.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Point {
    x: [f64; DIMS],
    label: u8,
}

/// The task: classify these points.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Classify {
    points: Vec<[f64; DIMS]>,
}

/// The world the data comes from: class centres evenly spaced on a circle, at a random turn.
struct World {
    centres: [[f64; DIMS]; CLASSES],
}

impl World {
    fn new(rng: &mut StdRng) -> World {
        let turn: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
        let mut centres = [[0.0; DIMS]; CLASSES];
        for (k, centre) in centres.iter_mut().enumerate() {
            let angle = turn + std::f64::consts::TAU * k as f64 / CLASSES as f64;
            *centre = [RADIUS * angle.cos(), RADIUS * angle.sin()];
        }
        World { centres }
    }

    fn sample(&self, rng: &mut StdRng) -> Point {
        let label = rng.gen_range(0..CLASSES);
        self.sample_of(rng, label)
    }

    fn sample_of(&self, rng: &mut StdRng, label: usize) -> Point {
        let mut x = self.centres[label];
        for v in &mut x {
            *v += NOISE * gaussian(rng);
        }
        Point { x, label: label as u8 }
    }
}

/// A standard normal draw (Box–Muller).
fn gaussian(rng: &mut StdRng) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// A nearest-centroid classifier.
struct NearestCentroid {
    /// Each class seen, with the mean of its examples.
    centroids: Vec<(u8, [f64; DIMS])>,
}

impl NearestCentroid {
    /// Trained on `data`; it only ever predicts the classes it saw.
    fn train(data: &[Point]) -> NearestCentroid {
        let mut sums = vec![[0.0; DIMS]; CLASSES];
        let mut counts = [0usize; CLASSES];
        for p in data {
            let k = usize::from(p.label) % CLASSES;
            counts[k] += 1;
            for (s, v) in sums[k].iter_mut().zip(&p.x) {
                *s += v;
            }
        }
        let centroids = sums
            .into_iter()
            .zip(counts)
            .enumerate()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(k, (mut sum, n))| {
                sum.iter_mut().for_each(|s| *s /= n as f64);
                (k as u8, sum)
            })
            .collect();
        NearestCentroid { centroids }
    }

    fn predict(&self, x: &[f64; DIMS]) -> u8 {
        let distance = |c: &[f64; DIMS]| c.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
        let best = self.centroids.iter().min_by(|a, b| distance(&a.1).total_cmp(&distance(&b.1)));
        best.map_or(0, |c| c.0)
    }

    fn accuracy(&self, data: &[Point]) -> f64 {
        data.iter().filter(|p| self.predict(&p.x) == p.label).count() as f64 / data.len().max(1) as f64
    }
}

#[async_trait::async_trait]
impl Serve for NearestCentroid {
    type Request = Classify;
    type Response = Vec<u8>;

    async fn serve(&self, _from: Address, task: Classify) -> Result<Vec<u8>, String> {
        if task.points.len() > 10_000 {
            return Err("at most 10000 points per task".into());
        }
        Ok(task.points.iter().map(|x| self.predict(x)).collect())
    }
}

/// Miner `i` of `n` (at most [`CLASSES`]): how many classes its data covers (1 for the worst,
/// all for the best) and how many examples of each it has (more as `i` grows).
fn miner_recipe(i: usize, n: usize) -> (usize, usize) {
    let classes = 1 + i * (CLASSES - 1) / (n - 1);
    let per_class = 3 + 2 * i;
    (classes, per_class)
}

fn training_set(world: &World, rng: &mut StdRng, classes: usize, per_class: usize) -> Vec<Point> {
    (0..classes).flat_map(|k| (0..per_class).map(move |_| k)).map(|k| world.sample_of(rng, k)).collect()
}

/// A validator's score for a miner's answer: accuracy above chance, cubed (so a miner far
/// better than another gets far more weight).
fn score(batch: &[Point], answer: Result<Vec<u8>, QueryError>) -> f64 {
    let Ok(labels) = answer else { return 0.0 };
    if labels.len() != batch.len() {
        return 0.0;
    }
    let right = batch.iter().zip(&labels).filter(|(p, &l)| p.label == l).count() as f64 / batch.len() as f64;
    (right - 1.0 / CLASSES as f64).max(0.0).powi(3)
}

struct Member {
    name: String,
    ctx: Context,
}

struct Checker {
    handle: Validator,
    member: Member,
    held_out: Vec<Point>,
    rng: StdRng,
}

impl Checker {
    /// Reveals last epoch's commitment, then scores the miners on a fresh batch of its
    /// held-out points and commits. With `favour`, commits all weight to that uid instead.
    async fn epoch(&mut self, roster: &Roster, favour: Option<Uid>) -> anyhow::Result<()> {
        let ctx = &self.member.ctx;
        if roster.epoch > 0 {
            match self.handle.reveal(ctx, roster.epoch - 1).await {
                Ok(()) | Err(SubmitError::NothingCommitted { .. }) => {}
                Err(e) => return Err(e).with_context(|| format!("{} could not reveal", self.member.name)),
            }
        }
        let weights = match favour {
            Some(uid) => vec![UidWeight { uid, weight: u16::MAX }],
            None => {
                let batch: Vec<Point> =
                    (0..BATCH).map(|_| self.held_out[self.rng.gen_range(0..self.held_out.len())].clone()).collect();
                let task = Classify { points: batch.iter().map(|p| p.x).collect() };
                let scores = self.handle.score_miners(ctx, roster, &task, |_, answer| score(&batch, answer)).await;
                weights_from_scores(&scores)
            }
        };
        if weights.is_empty() {
            return Ok(()); // nothing worth weighing this epoch
        }
        self.handle
            .commit(ctx, roster.epoch, weights)
            .await
            .with_context(|| format!("{} could not commit", self.member.name))
    }
}

fn percent(x: f64) -> String {
    format!("{:>6.2}%", 100.0 * x)
}

/// The "colluder clipped" invariant: the colluder's validator trust at the last scored epoch
/// (the share of its weight that survived clipping) must be below this.
const MAX_COLLUDER_TRUST: f64 = 0.05;
/// The "favoured miner unpaid" invariant: the incentive of the miner the colluder favours, at
/// the last scored epoch, must be below this.
const MAX_FAVOURED_INCENTIVE: f64 = 0.01;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    agent_examples::log_to_stderr();
    let args = Args::parse();
    let metrics = args.metrics.serve().await?;
    if let Some(metrics) = &metrics {
        // On stderr: stdout carries the demo's report.
        eprintln!("metrics http://{}/metrics", metrics.local_addr());
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    let world = World::new(&mut rng);
    let test_set: Vec<Point> = (0..5_000).map(|_| world.sample(&mut rng)).collect();

    let mint = Identity::from_seed("subnet demo mint");
    let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address()))?);
    let bureau = Bureau::with_config(Config::default().with_ledger(ledger.clone()))?;
    let faucet = Wallet::new(mint, ledger.clone());

    // The owner, with a treasury for every epoch's emission.
    let mut agent = Agent::builder("owner").seed("subnet demo owner").build()?;
    let subnet = Owner::serve(&mut agent, owner::Config::default().with_emission(EMISSION));
    let owner_address = bureau.add(agent)?;
    let owner_ctx = bureau.context(owner_address).context("the owner agent is not running")?;
    faucet.mint(owner_ctx.wallet()?.address(), u128::from(EMISSION) * u128::from(args.epochs)).await?;
    let fee = subnet.config().registration_fee();
    let delay = subnet.config().reveal_delay();

    // Miners: trained here, each on its own sample.
    let n = usize::from(args.miners);
    let mut miners = Vec::new();
    let mut true_accuracy = Vec::new();
    println!("miners (nearest-centroid classifiers, {CLASSES} classes, {DIMS} features):");
    for i in 0..n {
        let (classes, per_class) = miner_recipe(i, n);
        let model = NearestCentroid::train(&training_set(&world, &mut rng, classes, per_class));
        let accuracy = model.accuracy(&test_set);
        println!(
            "  m{i}: trained on {classes} of {CLASSES} classes, {per_class:>2} examples each; accuracy {}",
            percent(accuracy)
        );
        true_accuracy.push(accuracy);
        let name = format!("m{i}");
        let identity = Identity::from_seed(&format!("subnet demo miner {i}"));
        let mut agent = Agent::builder(&name).identity(identity.clone()).build()?;
        let handle = Miner::serve(&mut agent, identity, owner_address, miner::Config::default(), Arc::new(model));
        let ctx = bureau.context(bureau.add(agent)?).context("a miner is not running")?;
        faucet.mint(ctx.wallet()?.address(), fee).await?; // what registering costs
        handle.register(&ctx).await?;
        miners.push(Member { name, ctx });
    }
    let best = (0..n).max_by(|&a, &b| true_accuracy[a].total_cmp(&true_accuracy[b])).unwrap_or(0);
    let worst = (0..n).min_by(|&a, &b| true_accuracy[a].total_cmp(&true_accuracy[b])).unwrap_or(0);

    // Validators: two honest, one that turns colluder a third of the way in.
    let mut checkers = Vec::new();
    for (name, stake) in [("honest-1", 5_000u128), ("honest-2", 3_000), ("colluder", 2_000)] {
        let identity = Identity::from_seed(&format!("subnet demo {name}"));
        let mut agent = Agent::builder(name).identity(identity.clone()).build()?;
        let handle = Validator::serve(&mut agent, identity, owner_address, validator::Config::default());
        let ctx = bureau.context(bureau.add(agent)?).context("a validator is not running")?;
        faucet.mint(ctx.wallet()?.address(), 10_000).await?;
        handle.register(&ctx, stake).await?;
        let held_out = (0..HELD_OUT).map(|_| world.sample(&mut rng)).collect();
        let rng = StdRng::seed_from_u64(args.seed ^ stake as u64);
        checkers.push(Checker { handle, member: Member { name: name.into(), ctx }, held_out, rng });
    }
    let colluder = 2;
    let turns_at = (args.epochs / 3).max(1);
    let uid_of = |ctx: &Context| subnet.members().iter().find(|m| m.agent == ctx.address()).map(|m| m.uid);
    let worst_uid = uid_of(&miners[worst].ctx).context("the worst miner is not registered")?;
    let validator_uids: Vec<usize> = checkers.iter().filter_map(|c| uid_of(&c.member.ctx)).map(usize::from).collect();
    println!("validators: honest-1 (stake 5000), honest-2 (3000), colluder (2000; from epoch {turns_at} it gives all its weight to m{worst})");
    println!("registration fee {fee} (miners and validators alike), recycled into the owner's treasury");
    println!("emission {EMISSION} per scored epoch, paid from the owner's treasury; commit-reveal on (epoch e is scored and paid when e+{delay} closes)\n");

    let audit_before = ledger.audit_total()?;
    let supply_before = ledger.supply()?;
    let mut reports: Vec<EpochReport> = Vec::new();
    for _ in 0..args.epochs {
        let epoch = subnet.epoch();
        for (i, checker) in checkers.iter_mut().enumerate() {
            let roster = checker.handle.roster(&checker.member.ctx).await?;
            let favour = (i == colluder && epoch >= turns_at).then_some(worst_uid);
            checker.epoch(&roster, favour).await?;
        }
        reports.push(subnet.close_epoch(&owner_ctx).await?);
    }

    // The tables.
    let everyone: Vec<&Member> = miners.iter().chain(checkers.iter().map(|c| &c.member)).collect();
    let mut head = String::from("scored |");
    for m in &miners {
        head += &format!(" {:>7}", format!("I {}", m.name));
    }
    head += " |";
    for c in &checkers {
        head += &format!(" {:>10}", format!("D {}", c.member.name));
    }
    head += " | colluder trust";
    println!("incentive (I, miners) and dividends (D, validators) per scored epoch:\n{head}");
    let mut colluder_dividends = Vec::new();
    let mut total_incentive = vec![0.0; n];
    let mut worst_incentive_colluding: f64 = 0.0;
    // At the last scored epoch: (epoch, the colluder's validator trust, the favoured miner's incentive).
    let mut last = None;
    for report in &reports {
        let (Some(scored), Some(outcome)) = (report.scored, &report.outcome) else { continue };
        let mut line = format!("{scored:>6} |");
        for (i, total) in total_incentive.iter_mut().enumerate() {
            let incentive = outcome.incentive[i];
            *total += incentive;
            line += &format!(" {:>7}", percent(incentive));
        }
        line += " |";
        for &uid in &validator_uids {
            line += &format!(" {:>10}", percent(outcome.dividends[uid]));
        }
        let c = validator_uids[colluder];
        line += &format!(" | {:>14.3}", outcome.validator_trust[c]);
        colluder_dividends.push((scored, outcome.dividends[c]));
        last = Some((scored, outcome.validator_trust[c], outcome.incentive[usize::from(worst_uid)]));
        if scored >= turns_at {
            worst_incentive_colluding = worst_incentive_colluding.max(outcome.incentive[usize::from(worst_uid)]);
        }
        println!("{line}");
    }

    println!(
        "\nwallet balances after each close (validators started with 10000, paid the fee and locked their stake):"
    );
    let mut head = String::from("closed |");
    for m in &everyone {
        head += &format!(" {:>9}", m.name);
    }
    println!("{head}");
    let mut balances: Vec<u128> = (0..everyone.len())
        .map(|uid| if uid < n { 0 } else { 10_000 - fee - [5_000, 3_000, 2_000][uid - n] })
        .collect();
    for report in &reports {
        let mut line = format!("{:>6} |", report.closed);
        for (uid, balance) in balances.iter_mut().enumerate() {
            *balance += report.payout(uid as Uid).total();
            line += &format!(" {balance:>9}");
        }
        println!("{line}");
    }
    for (member, expected) in everyone.iter().zip(&balances) {
        let balance = ledger.balance(member.ctx.wallet()?.address()).await?;
        if balance != *expected {
            println!("{} holds {balance} on the ledger, but was paid to hold {expected}", member.name);
            return Ok(ExitCode::FAILURE);
        }
    }
    println!("(every final balance checked on the ledger)\n");

    // The invariants.
    let mut ok = true;
    let mut check = |name: &str, holds: bool, detail: String| {
        println!("invariant {name}: {} ({detail})", if holds { "ok" } else { "FAILED" });
        ok &= holds;
    };
    let (audit_after, supply_after) = (ledger.audit_total()?, ledger.supply()?);
    check(
        "supply conserved",
        audit_after == audit_before && supply_after == supply_before,
        format!("supply {supply_before} -> {supply_after}, balances plus escrows {audit_before} -> {audit_after}"),
    );
    let before = colluder_dividends.iter().rfind(|(e, _)| *e < turns_at).map(|d| d.1);
    let after: Vec<f64> = colluder_dividends.iter().filter(|(e, _)| *e >= turns_at).map(|d| d.1).collect();
    let fell = match (before, after.last()) {
        (Some(b), Some(&last)) => last < b && after.windows(2).all(|w| w[1] < w[0]),
        _ => false,
    };
    check(
        "colluder dividends fell",
        fell,
        format!(
            "{} before colluding -> {} at the end; the worst miner's incentive while it colluded was at most {}",
            before.map_or("-".into(), percent),
            after.last().map_or("-".into(), |d| percent(*d)),
            percent(worst_incentive_colluding)
        ),
    );
    // Clipped: at the last scored epoch (one the colluder colluded in) almost none of its
    // weight survives consensus, and the miner it favours is paid (next to) nothing.
    let colluding_at_end = last.filter(|&(scored, _, _)| scored >= turns_at);
    let trust = colluding_at_end.map(|(_, trust, _)| trust);
    check(
        "colluder clipped",
        trust.is_some_and(|t| t < MAX_COLLUDER_TRUST),
        format!(
            "the colluder's validator trust at the last scored epoch is {} (must be below {MAX_COLLUDER_TRUST})",
            trust.map_or("- (no scored epoch while it colluded)".into(), |t| format!("{t:.4}"))
        ),
    );
    let favoured = colluding_at_end.map(|(_, _, incentive)| incentive);
    check(
        "favoured miner unpaid",
        favoured.is_some_and(|i| i < MAX_FAVOURED_INCENTIVE),
        format!(
            "m{worst}'s incentive at the last scored epoch is {} (must be below {MAX_FAVOURED_INCENTIVE})",
            favoured.map_or("- (no scored epoch while the colluder colluded)".into(), |i| format!("{i:.4}"))
        ),
    );
    let most = (0..n).max_by(|&a, &b| total_incentive[a].total_cmp(&total_incentive[b])).unwrap_or(0);
    check(
        "best miner most incentive",
        most == best,
        format!("m{best} has the best accuracy; m{most} earned the most incentive"),
    );
    bureau.shutdown().await?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
