//! Swapping against a maker's pool, as traders and arbitrageurs do it, and the traders
//! who move prices by swapping at random.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Context, Identity, Wallet};
use agent_protocols::settlement::{refund_when_due, release_by};
use parking_lot::Mutex;
use rand::Rng;

use super::maker::{seed_of, wallets, GetReserves, Ledgers, Makers, Reserves, Swap, Swapped};
use super::scenario::TraderSpec;

/// How a swap went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapFailure {
    /// Nothing was swapped (what was locked goes back at the escrow's deadline).
    NotSwapped(String),
    /// The maker paid out `amount_out`, but the escrow could not be released to it before
    /// its deadline: the seller got its tokens back too.
    NotReleased {
        /// What the maker paid.
        amount_out: u128,
    },
}

/// Sells `amount_in` of `token_in` to the pool of `maker` (whose wallet is
/// `maker_wallet`) for at least `min_out`: locks it in escrow for the maker until
/// `escrow_ms` from now, asks for the swap, and releases the escrow once paid. Returns what
/// was received.
#[allow(clippy::too_many_arguments)]
pub async fn swap(
    ctx: &Context,
    wallets: &BTreeMap<String, Wallet>,
    maker: Address,
    maker_wallet: Address,
    token_in: &str,
    amount_in: u128,
    min_out: u128,
    escrow_ms: u64,
) -> Result<u128, SwapFailure> {
    let wallet = wallets.get(token_in).ok_or_else(|| SwapFailure::NotSwapped(format!("no wallet for {token_in}")))?;
    let deadline_ms = agent_core::envelope::unix_now_ms().saturating_add(escrow_ms);
    let (escrow, _) = wallet
        .lock(amount_in, maker_wallet, deadline_ms, wallet.address(), None)
        .await
        .map_err(|e| SwapFailure::NotSwapped(format!("cannot lock: {}", agent_core::error::chain(&e))))?;
    // Scheduled now, whatever happens next: a release before the deadline makes it a no-op.
    refund_when_due(ctx, wallet.clone(), escrow, deadline_ms);
    let order = Swap { token_in: token_in.to_owned(), amount_in, min_out, escrow, pay_to: wallet.address() };
    let answer: Swapped = ctx
        .request(maker, order, Duration::from_millis(escrow_ms / 2))
        .await
        .map_err(|e| SwapFailure::NotSwapped(format!("no answer: {}", agent_core::error::chain(&e))))?;
    match answer {
        Swapped::Refused { reason } => Err(SwapFailure::NotSwapped(reason)),
        Swapped::Done { amount_out } => match release_by(wallet, escrow, deadline_ms).await {
            true => Ok(amount_out),
            false => Err(SwapFailure::NotReleased { amount_out }),
        },
    }
}

/// Asks every maker for its pool, side by side; a maker that does not answer is `None`.
pub async fn read_pools(ctx: &Context, makers: &[Address]) -> Vec<Option<Reserves>> {
    let asks =
        makers.iter().map(|maker| ctx.request::<GetReserves, Reserves>(*maker, GetReserves, Duration::from_secs(2)));
    futures::future::join_all(asks).await.into_iter().map(Result::ok).collect()
}

/// What a trader did.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    agent_core::Message,
)]
#[message(name = "agora.demo.defi.TraderLog")]
pub struct TraderLog {
    /// Swaps done.
    pub swaps: u64,
    /// Swaps refused or failed.
    pub failed: u64,
    /// Swaps paid out by the maker whose escrow could not be released (the maker was
    /// not paid).
    pub unreleased: u64,
}

/// A trader's agent: every `spec.every_ms` until `stop_ms` (Unix ms), it swaps a random
/// share of a random pool's reserve, in a random direction, with 1% slippage allowed.
pub fn trader_agent(
    spec: &TraderSpec,
    ledgers: Ledgers,
    makers: Arc<Makers>,
    rng: rand::rngs::StdRng,
    stop_ms: u64,
    escrow_ms: u64,
) -> Result<(Agent, Arc<Mutex<TraderLog>>), super::MarketError> {
    let mut agent = Agent::builder(spec.name.clone()).identity(Identity::from_seed(&seed_of(&spec.name))).build()?;
    let log = Arc::new(Mutex::new(TraderLog::default()));
    let wallets = Arc::new(wallets(&ledgers, &spec.name));
    let max_share = spec.max_share_bps;
    let rng = Arc::new(Mutex::new(rng));
    let shown = log.clone();
    agent.include(
        agent_core::Protocol::new("agora.demo.defi-trader-books", "1.0")
            .on_message(move |ctx: Context, _from: Address, _: super::maker::BooksRequest| {
                let log = shown.lock().clone();
                async move { ctx.reply(log).await }
            })
            .replies::<super::maker::BooksRequest, TraderLog>(),
    );
    let logged = log.clone();
    agent.on_interval(Duration::from_millis(spec.every_ms), move |ctx: Context| {
        let (wallets, makers, log, rng) = (wallets.clone(), makers.clone(), logged.clone(), rng.clone());
        async move {
            if agent_core::envelope::unix_now_ms() >= stop_ms {
                return;
            }
            let makers = makers.list().await;
            if makers.is_empty() {
                log.lock().failed += 1;
                return;
            }
            let (pick, a_to_b, share) = {
                let mut rng = rng.lock();
                (rng.gen_range(0..makers.len()), rng.gen_bool(0.5), rng.gen_range(1..=max_share.max(1)))
            };
            let maker = makers[pick];
            let Ok(reserves) = ctx.request::<GetReserves, Reserves>(maker, GetReserves, Duration::from_secs(2)).await
            else {
                log.lock().failed += 1;
                return;
            };
            let (token_in, reserve_in) = match a_to_b {
                true => (&reserves.token_a, reserves.reserve_a),
                false => (&reserves.token_b, reserves.reserve_b),
            };
            let amount_in = reserve_in.saturating_mul(u128::from(share)) / 10_000;
            let held = match wallets.get(token_in.as_str()) {
                Some(wallet) => wallet.balance().await.unwrap_or(0),
                None => 0,
            };
            let amount_in = amount_in.min(held);
            let quoted =
                reserves.pool().and_then(|p| p.quote(&super::amm::Token::new(token_in), amount_in)).unwrap_or(0);
            if amount_in == 0 || quoted == 0 {
                return;
            }
            let min_out = quoted - quoted / 100;
            let result = swap(&ctx, &wallets, maker, reserves.wallet, token_in, amount_in, min_out, escrow_ms).await;
            let mut log = log.lock();
            match result {
                Ok(_) => log.swaps += 1,
                Err(SwapFailure::NotSwapped(_)) => log.failed += 1,
                Err(SwapFailure::NotReleased { .. }) => log.unreleased += 1,
            }
        }
    });
    Ok((agent, log))
}
