//! What miners and validators share when they talk to the owner: registering, and reading
//! the roster.

use std::time::Duration;

use agent_core::ledger::EscrowId;
use agent_core::{Address, Context, Identity, RequestError, WalletError};

use super::wire::{deposit_deal, Register, RegisterRefusal, Registered, Role, Roster, RosterQuery, SubnetId, Uid};

/// How long a registration deposit stays locked before its payer may refund it, if the
/// owner never takes it (default for miners and validators alike).
pub(crate) const DEPOSIT_WINDOW: Duration = Duration::from_secs(600);

/// Why registering did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The owner answered and refused; nothing was registered and the deposit was not
    /// taken: it stays locked until its deadline (the deposit window), after which the
    /// agent's wallet may refund it ([`Wallet::refund`](agent_core::Wallet::refund)).
    #[error("registration refused: {0}")]
    Refused(RegisterRefusal),
    /// No answer: the registration may or may not have been recorded (ask for the
    /// roster), and the deposit may or may not have been taken.
    #[error("the owner did not answer: {0}")]
    Request(#[from] RequestError),
    /// The agent has no wallet, or the deposit could not be locked; nothing was sent.
    #[error("wallet: {0}")]
    Wallet(#[from] WalletError),
    /// The owner serves another subnet; nothing was sent.
    #[error("the owner serves subnet {got}, not {expected}")]
    WrongSubnet {
        /// The subnet asked for.
        expected: SubnetId,
        /// The subnet the owner serves.
        got: SubnetId,
    },
    /// The owner has no ledger, so no deposit can be paid; nothing was sent.
    #[error("the owner has no wallet to take deposits")]
    OwnerHasNoWallet,
}

/// Asks `owner` for the roster of `subnet`.
pub(crate) async fn roster(ctx: &Context, owner: Address, subnet: SubnetId) -> Result<Roster, RegisterError> {
    let roster: Roster = ctx.request(owner, RosterQuery { subnet }, None).await?;
    if roster.subnet != subnet {
        return Err(RegisterError::WrongSubnet { expected: subnet, got: roster.subnet });
    }
    Ok(roster)
}

/// Locks `amount` as `identity`'s registration deposit for the owner of `roster`, refundable
/// by this wallet after `window` if the owner never takes it; `None` when `amount` is zero.
pub(crate) async fn deposit(
    ctx: &Context,
    identity: &Identity,
    roster: &Roster,
    amount: u128,
    window: Duration,
) -> Result<Option<EscrowId>, RegisterError> {
    if amount == 0 {
        return Ok(None);
    }
    let owner_wallet = roster.owner_wallet.ok_or(RegisterError::OwnerHasNoWallet)?;
    let wallet = ctx.wallet()?;
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    let deadline = agent_core::envelope::unix_now_ms().saturating_add(window_ms);
    let deal = Some(deposit_deal(roster.subnet, &identity.address()));
    let (escrow, _) = wallet.lock(amount, owner_wallet, deadline, owner_wallet, deal).await?;
    Ok(Some(escrow))
}

/// Sends `identity`'s registration and reads the answer: the uid, and a validator's stake
/// escrow.
pub(crate) async fn register(
    ctx: &Context,
    identity: &Identity,
    owner: Address,
    subnet: SubnetId,
    role: Role,
    deposit: Option<EscrowId>,
) -> Result<(Uid, Option<EscrowId>), RegisterError> {
    let wallet = ctx.wallet()?.address();
    let register = Register::sign(identity, subnet, role, wallet, deposit);
    match ctx.request::<Register, Registered>(owner, register, None).await? {
        Registered::Accepted { uid, stake, .. } => Ok((uid, stake)),
        Registered::Refused(why) => Err(RegisterError::Refused(why)),
    }
}
