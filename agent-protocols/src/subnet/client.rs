//! What miners and validators share when they talk to the owner: registering, and reading
//! the roster.

use agent_core::ledger::EscrowId;
use agent_core::{Address, Context, Identity, RequestError, WalletError};

use super::wire::{Register, RegisterRefusal, Registered, Role, Roster, RosterQuery, SubnetId, Uid};

/// Why registering did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The owner answered and refused; nothing was registered. A validator's stake escrow
    /// has been released back to it (or, if that failed, is left for
    /// [`Validator::unstake`](super::validator::Validator::unstake)).
    #[error("registration refused: {0}")]
    Refused(RegisterRefusal),
    /// No answer: the registration may or may not have been recorded (ask for the
    /// roster). A validator's stake stays locked until it is registered or unstakes.
    #[error("the owner did not answer: {0}")]
    Request(#[from] RequestError),
    /// The agent has no wallet, or the stake could not be locked; nothing was sent.
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
    /// The owner has no ledger, so nothing can be staked or paid; nothing was sent.
    #[error("the owner has no wallet to arbitrate stakes")]
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

/// Sends `identity`'s registration and reads the answer.
pub(crate) async fn register(
    ctx: &Context,
    identity: &Identity,
    owner: Address,
    subnet: SubnetId,
    role: Role,
    stake: Option<EscrowId>,
) -> Result<Uid, RegisterError> {
    let wallet = ctx.wallet()?.address();
    let register = Register::sign(identity, subnet, role, wallet, stake);
    match ctx.request::<Register, Registered>(owner, register, None).await? {
        Registered::Accepted { uid, .. } => Ok(uid),
        Registered::Refused(why) => Err(RegisterError::Refused(why)),
    }
}
