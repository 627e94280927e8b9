//! Scored subnets: validators score miners, and stake-weighted agreement decides who is paid.
//!
//! [`yuma`](crate::subnet::yuma) is the scoring rule, Yuma Consensus as Bittensor's subtensor computes it, as a
//! pure function of plain numbers (stakes, a weight matrix, last epoch's bonds, parameters).
//! It knows nothing about networking: feed it what your validators reported and it returns
//! consensus, incentive, dividends, new bonds and the token split. `docs/subnet.md` gives
//! every formula and where it comes from.
//!
//! The rest runs a subnet among agents, over messages:
//!
//! - [`owner::Owner`](crate::subnet::owner::Owner) registers members, records weights, and at each epoch's close runs
//!   [`yuma::epoch`](crate::subnet::yuma::epoch) and pays emissions from its treasury through the ledger;
//! - [`miner::Miner`](crate::subnet::miner::Miner) serves tasks (typed, through [`miner::Serve`](crate::subnet::miner::Serve)) to staked validators,
//!   highest stake first;
//! - [`validator::Validator`](crate::subnet::validator::Validator) locks stake, queries miners, scores their answers with your
//!   function, and commits then reveals its weights ([`commit_reveal`](crate::subnet::commit_reveal)).
//!
//! Every request is answered with a typed result: a registration with [`Registered`](crate::subnet::Registered), a
//! commit or reveal with [`WeightsAnswer`](crate::subnet::WeightsAnswer), a task with a [`TaskResult`](crate::subnet::TaskResult); a refusal names its
//! reason as an enum variant. `docs/subnet.md` ("The protocol") has the sequence of messages,
//! the commit-reveal timing, the admission policy and how money moves.
//!
//! ```
//! use std::sync::Arc;
//! use agent_core::ledger::{LocalLedger, LocalLedgerConfig};
//! use agent_core::{Address, Agent, Bureau, Config, Identity, Wallet};
//! use agent_protocols::subnet::{commit_reveal, miner, owner, validator};
//!
//! /// Doubles numbers.
//! struct Doubler;
//!
//! #[async_trait::async_trait]
//! impl miner::Serve for Doubler {
//!     type Request = u64;
//!     type Response = u64;
//!     async fn serve(&self, _from: Address, x: u64) -> Result<u64, String> {
//!         Ok(2 * x)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mint = Identity::from_seed("doc mint");
//! let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address()))?);
//! let bureau = Bureau::with_config(Config::default().with_ledger(ledger.clone()))?;
//! let faucet = Wallet::new(mint, ledger.clone());
//!
//! let mut agent = Agent::builder("owner").build()?;
//! let subnet = owner::Owner::serve(&mut agent, owner::Config::default());
//! let owner_address = bureau.add(agent)?;
//! let owner_ctx = bureau.context(owner_address).unwrap();
//! faucet.mint(owner_ctx.wallet()?.address(), 10_000_000).await?; // the treasury
//! let fee = subnet.config().registration_fee();
//!
//! let id = Identity::from_seed("doc miner");
//! let mut agent = Agent::builder("miner").identity(id.clone()).build()?;
//! let doubler = miner::Miner::serve(&mut agent, id, owner_address, miner::Config::default(), Arc::new(Doubler));
//! let miner_ctx = bureau.context(bureau.add(agent)?).unwrap();
//! faucet.mint(miner_ctx.wallet()?.address(), fee).await?; // registration costs a fee
//! doubler.register(&miner_ctx).await?;
//!
//! let id = Identity::from_seed("doc validator");
//! let mut agent = Agent::builder("validator").identity(id.clone()).build()?;
//! let checker = validator::Validator::serve(&mut agent, id, owner_address, validator::Config::default());
//! let ctx = bureau.context(bureau.add(agent)?).unwrap();
//! faucet.mint(ctx.wallet()?.address(), fee + 1_000).await?;
//! checker.register(&ctx, 1_000).await?; // the fee paid, 1 000 locked as stake
//!
//! // Weights committed in epoch 0 are scored at the close of epoch 3 (the reveal delay).
//! for _ in 0..4 {
//!     let roster = checker.roster(&ctx).await?;
//!     if roster.epoch > 0 {
//!         checker.reveal(&ctx, roster.epoch - 1).await?;
//!     }
//!     let scores = checker
//!         .score_miners(&ctx, &roster, &21u64, |_, answer: Result<u64, _>| if answer == Ok(42) { 1.0 } else { 0.0 })
//!         .await;
//!     checker.commit(&ctx, roster.epoch, commit_reveal::weights_from_scores(&scores)).await?;
//!     subnet.close_epoch(&owner_ctx).await?;
//! }
//! // The fourth close scored epoch 0: the miner earned incentive, the validator dividends.
//! assert!(ctx.wallet()?.balance().await? > 0);
//! assert!(miner_ctx.wallet()?.balance().await? > 0);
//! # bureau.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod admission;
mod book;
mod client;
pub mod commit_reveal;
pub mod miner;
pub mod owner;
pub mod validator;
mod wire;
pub mod yuma;

pub use client::RegisterError;
pub use wire::{
    deposit_deal, stake_deal, Commit, DropReason, DroppedWeight, Member, Register, RegisterRefusal, Registered, Reveal,
    RevealedWeights, Role, Roster, RosterQuery, SignerError, SubnetId, Task, TaskOutcome, TaskRefusal, TaskResult, Uid,
    UidWeight, Unstake, UnstakeRefusal, Unstaked, WeightsAnswer, WeightsDropped, WeightsQuery, WeightsRefusal,
};
