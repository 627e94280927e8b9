//! The subnet's messages, what each signature covers, and the typed reasons a request is
//! refused.
//!
//! Every message names its subnet. Registrations, commits and reveals are signed by the
//! agent that sends them, over bytes that start with a domain tag, so a signed message is
//! evidence anyone can check and cannot be replayed as another kind of message. Refusals
//! are enum variants (their serde names are the wire codes); the text is only their
//! `Display`.

use agent_core::identity::SignatureError;
use agent_core::ledger::{DealId, EscrowId};
use agent_core::{Address, Identity, Message, PublicKey};
use serde::{Deserialize, Serialize};

use super::commit_reveal::{Salt, WeightsProblem};

/// A subnet's id (subtensor's `netuid`).
pub type SubnetId = u16;

/// A uid: a member's index in the subnet, and its row and column in the weight matrix.
pub type Uid = u16;

/// What a member does in its subnet.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema,
)]
pub enum Role {
    /// Serves tasks; scored by validators; paid for its incentive.
    Miner,
    /// Stakes, queries miners, sets weights; paid for its dividends.
    Validator,
}

/// A registered member, as the owner knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Member {
    /// Its uid.
    pub uid: Uid,
    /// Its agent (where tasks, for a miner, are sent).
    pub agent: Address,
    /// The ledger account its emissions are paid to.
    pub wallet: Address,
    /// Miner or validator.
    pub role: Role,
    /// Tokens locked as stake, as last checked on the ledger (0 for miners, and for a
    /// validator that has unstaked).
    pub stake: u128,
}

/// The deal a validator's stake escrow names (the escrow the owner locks for it, from the
/// owner's wallet to the validator's): it ties the lock to one validator in one subnet.
pub fn stake_deal(subnet: SubnetId, validator: &Address) -> DealId {
    DealId::named(&format!("agora.subnet/{subnet}/stake/{validator}"))
}

/// The deal a registration deposit names: it ties the deposit to one agent registering in
/// one subnet, so it cannot be presented for another agent (and, once taken, not again).
pub fn deposit_deal(subnet: SubnetId, agent: &Address) -> DealId {
    DealId::named(&format!("agora.subnet/{subnet}/deposit/{agent}"))
}

/// Asks the subnet owner to register the signing agent as a miner or validator. The
/// answer is [`Registered`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.Register")]
pub struct Register {
    /// The subnet.
    pub subnet: SubnetId,
    /// The agent registering (it must be the sender).
    pub agent: Address,
    /// The agent's public key.
    pub key: PublicKey,
    /// Miner or validator.
    pub role: Role,
    /// Where emissions are paid, and where a validator's stake goes back to.
    pub wallet: Address,
    /// The deposit paying for the registration: an open escrow from `wallet` to the
    /// owner's wallet, arbitrated by the owner's wallet, naming [`deposit_deal`], holding
    /// at least the subnet's registration fee (plus, for a validator, its stake). The owner
    /// takes it; a validator's stake is then locked back for it (see
    /// [`owner`](super::owner)). `None` only where the fee is zero and the role is miner.
    pub deposit: Option<EscrowId>,
    /// ed25519 over [`Register::signing_bytes`].
    #[serde(with = "agent_core::identity::signature_hex")]
    #[schemars(with = "String")]
    pub signature: [u8; 64],
}

impl Register {
    /// `identity`'s registration.
    pub fn sign(
        identity: &Identity,
        subnet: SubnetId,
        role: Role,
        wallet: Address,
        deposit: Option<EscrowId>,
    ) -> Register {
        let mut register = Register {
            subnet,
            agent: identity.address(),
            key: identity.public_key(),
            role,
            wallet,
            deposit,
            signature: [0; 64],
        };
        register.signature = identity.sign(&register.signing_bytes());
        register
    }

    /// What the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = b"agora.subnet.register.v1".to_vec();
        out.extend_from_slice(&self.subnet.to_be_bytes());
        out.extend_from_slice(self.agent.as_bytes());
        out.push(match self.role {
            Role::Miner => 0,
            Role::Validator => 1,
        });
        out.extend_from_slice(self.wallet.as_bytes());
        match &self.deposit {
            Some(escrow) => {
                out.push(1);
                out.extend_from_slice(&escrow.0);
            }
            None => out.push(0),
        }
        out
    }

    /// Checks that the key is the agent's, the agent is `from`, and the signature verifies.
    pub fn check(&self, from: Address) -> Result<(), SignerError> {
        check_signer(&self.key, self.agent, from, &self.signing_bytes(), &self.signature)
    }
}

/// Why a signed message does not count as its sender's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignerError {
    /// The key is not the named agent's, or the named agent is not the sender.
    #[error("signed for {claimed}, sent by {sender}")]
    NotTheSender {
        /// The agent the message names.
        claimed: Address,
        /// The agent that sent it.
        sender: Address,
    },
    /// The signature does not verify.
    #[error("bad signature: {0}")]
    Signature(#[from] SignatureError),
}

fn check_signer(
    key: &PublicKey,
    claimed: Address,
    from: Address,
    bytes: &[u8],
    signature: &[u8; 64],
) -> Result<(), SignerError> {
    if Address::from_public_key(key) != claimed || claimed != from {
        return Err(SignerError::NotTheSender { claimed, sender: from });
    }
    key.verify(bytes, signature)?;
    Ok(())
}

/// The owner's answer to a [`Register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.Registered")]
pub enum Registered {
    /// Registered under `uid`, from epoch `epoch` on.
    Accepted {
        /// The new member's uid (a pruned miner's, reused, when the subnet was full).
        uid: Uid,
        /// The epoch open when it registered.
        epoch: u64,
        /// A validator's stake escrow: locked by the owner's wallet for the validator's
        /// wallet, so only the owner can end it (see [`Unstake`]). `None` for a miner.
        stake: Option<EscrowId>,
    },
    /// Not registered, and why.
    Refused(RegisterRefusal),
}

/// Why a registration was refused. Nothing was recorded.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema, thiserror::Error,
)]
pub enum RegisterRefusal {
    /// The registration is for another subnet.
    #[error("this is subnet {expected}, not {got}")]
    WrongSubnet {
        /// This subnet.
        expected: SubnetId,
        /// The one named.
        got: SubnetId,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Signed by, or naming, another agent than the sender.
    #[error("the registration is not the sender's")]
    NotTheSender,
    /// The agent is registered already.
    #[error("already registered as uid {uid}")]
    AlreadyRegistered {
        /// Its uid.
        uid: Uid,
    },
    /// Every uid is taken, and no miner can be pruned (each is still immune).
    #[error("the subnet is full ({max} uids) and no miner can be pruned")]
    Full {
        /// The subnet's uid limit.
        max: u16,
    },
    /// The subnet charges for registration (or the role is validator) and no deposit was
    /// named.
    #[error("a deposit of at least {min} is required")]
    DepositRequired {
        /// The least deposit accepted: the fee, plus the minimum stake for a validator.
        min: u128,
    },
    /// The deposit escrow is not open on the ledger (never locked, already taken, or
    /// refunded).
    #[error("the deposit escrow is not open")]
    DepositNotFound,
    /// The escrow is not a deposit for this agent here: wrong payer, beneficiary, arbiter
    /// or deal.
    #[error("the escrow is not a deposit for this agent here: {detail}")]
    DepositNotAPayment {
        /// What does not match.
        detail: String,
    },
    /// The deposit holds less than the fee (plus, for a validator, the minimum stake).
    #[error("the deposit {got} is below the minimum {min}")]
    DepositTooSmall {
        /// The least deposit accepted.
        min: u128,
        /// The escrow's amount.
        got: u128,
    },
    /// The owner could not read the ledger (or has none); try again.
    #[error("the ledger could not be read: {detail}")]
    LedgerUnavailable {
        /// The ledger's error.
        detail: String,
    },
}

/// Asks the owner for the subnet's members and epoch; the answer is a [`Roster`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.RosterQuery")]
pub struct RosterQuery {
    /// The subnet asked about.
    pub subnet: SubnetId,
}

/// The subnet as the owner knows it. Sent in answer to a [`RosterQuery`], and pushed to
/// every miner whenever it changes (a registration, an epoch closed), so miners know
/// whom to admit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.Roster")]
pub struct Roster {
    /// The subnet.
    pub subnet: SubnetId,
    /// The epoch open now.
    pub epoch: u64,
    /// Grows with every change; a miner ignores a roster older than the one it holds.
    pub version: u64,
    /// Whether weights are committed first and revealed later.
    pub commit_reveal: bool,
    /// With commit-reveal, how many epochs after the epoch they were committed in weights
    /// are scored and published (see [`commit_reveal`](super::commit_reveal)).
    pub reveal_delay: u64,
    /// What a registration costs (recycled into the treasury): the least deposit a miner
    /// locks, and what a validator locks on top of its stake.
    pub registration_fee: u128,
    /// The owner's wallet: the arbiter of stake escrows, and the treasury emissions are
    /// paid from. `None` if the owner has no ledger.
    pub owner_wallet: Option<Address>,
    /// The members, by uid.
    pub members: Vec<Member>,
}

impl Roster {
    /// The member whose agent is `agent`.
    pub fn member(&self, agent: &Address) -> Option<&Member> {
        self.members.iter().find(|m| m.agent == *agent)
    }

    /// The miners, by uid.
    pub fn miners(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.role == Role::Miner)
    }

    /// The validators, by uid.
    pub fn validators(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.role == Role::Validator)
    }
}

/// One entry of a weight vector: `weight / 65535` on `uid` (the scale is irrelevant: the
/// owner normalises each validator's row).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema,
)]
pub struct UidWeight {
    /// The uid weighed.
    pub uid: Uid,
    /// Its weight.
    pub weight: u16,
}

/// Serde for 32 bytes as 64 hex digits.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(text).map_err(serde::de::Error::custom)?;
        bytes.try_into().map_err(|_| serde::de::Error::custom("expected 32 bytes (64 hex digits)"))
    }
}

/// A validator's commitment to the weights it will reveal for `epoch` (see
/// [`commitment`](super::commit_reveal::commitment)). Answered with a [`WeightsAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.Commit")]
pub struct Commit {
    /// The subnet.
    pub subnet: SubnetId,
    /// The epoch the weights are for: the one open now.
    pub epoch: u64,
    /// The validator (it must be the sender).
    pub validator: Address,
    /// The validator's public key.
    pub key: PublicKey,
    /// sha256 of the weights, salt, validator and epoch.
    #[serde(with = "hex32")]
    #[schemars(with = "String")]
    pub commitment: [u8; 32],
    /// ed25519 over [`Commit::signing_bytes`].
    #[serde(with = "agent_core::identity::signature_hex")]
    #[schemars(with = "String")]
    pub signature: [u8; 64],
}

impl Commit {
    /// `identity`'s commitment for `epoch`.
    pub fn sign(identity: &Identity, subnet: SubnetId, epoch: u64, commitment: [u8; 32]) -> Commit {
        let mut commit = Commit {
            subnet,
            epoch,
            validator: identity.address(),
            key: identity.public_key(),
            commitment,
            signature: [0; 64],
        };
        commit.signature = identity.sign(&commit.signing_bytes());
        commit
    }

    /// What the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = b"agora.subnet.commit.v1".to_vec();
        out.extend_from_slice(&self.subnet.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(self.validator.as_bytes());
        out.extend_from_slice(&self.commitment);
        out
    }

    /// Checks that the key is the validator's, the validator is `from`, and the signature
    /// verifies.
    pub fn check(&self, from: Address) -> Result<(), SignerError> {
        check_signer(&self.key, self.validator, from, &self.signing_bytes(), &self.signature)
    }
}

/// A validator's weights for `epoch`: with commit-reveal, the opening of its [`Commit`];
/// without, the weights themselves. Answered with a [`WeightsAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.Reveal")]
pub struct Reveal {
    /// The subnet.
    pub subnet: SubnetId,
    /// The epoch the weights are for (the one they were committed in).
    pub epoch: u64,
    /// The validator (it must be the sender).
    pub validator: Address,
    /// The validator's public key.
    pub key: PublicKey,
    /// The weights.
    pub weights: Vec<UidWeight>,
    /// The salt hashed into the commitment (ignored without commit-reveal).
    #[serde(with = "hex32")]
    #[schemars(with = "String")]
    pub salt: Salt,
    /// ed25519 over [`Reveal::signing_bytes`].
    #[serde(with = "agent_core::identity::signature_hex")]
    #[schemars(with = "String")]
    pub signature: [u8; 64],
}

impl Reveal {
    /// `identity`'s reveal of `weights` for `epoch`.
    pub fn sign(identity: &Identity, subnet: SubnetId, epoch: u64, weights: Vec<UidWeight>, salt: Salt) -> Reveal {
        let mut reveal = Reveal {
            subnet,
            epoch,
            validator: identity.address(),
            key: identity.public_key(),
            weights,
            salt,
            signature: [0; 64],
        };
        reveal.signature = identity.sign(&reveal.signing_bytes());
        reveal
    }

    /// What the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = b"agora.subnet.reveal.v1".to_vec();
        out.extend_from_slice(&self.subnet.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(self.validator.as_bytes());
        super::commit_reveal::encode_weights(&mut out, &self.weights);
        out.extend_from_slice(&self.salt);
        out
    }

    /// Checks that the key is the validator's, the validator is `from`, and the signature
    /// verifies.
    pub fn check(&self, from: Address) -> Result<(), SignerError> {
        check_signer(&self.key, self.validator, from, &self.signing_bytes(), &self.signature)
    }
}

/// The owner's answer to a [`Commit`] or [`Reveal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.WeightsAnswer")]
pub enum WeightsAnswer {
    /// The commitment is recorded; reveal it from epoch `reveal_in` on, before the close of
    /// epoch `scored_at`, when it is scored and published.
    Committed {
        /// The epoch committed for.
        epoch: u64,
        /// The first epoch in which the reveal is accepted (`epoch + 1`).
        reveal_in: u64,
        /// The epoch at whose close the weights are scored and published (`epoch` plus the
        /// subnet's reveal delay); the reveal must arrive before that close.
        scored_at: u64,
    },
    /// The weights are recorded and count for `epoch`.
    Revealed {
        /// The epoch they count for.
        epoch: u64,
    },
    /// Nothing was recorded, and why.
    Refused(WeightsRefusal),
}

/// Why a commit or reveal was refused. Nothing was recorded.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema, thiserror::Error,
)]
pub enum WeightsRefusal {
    /// For another subnet.
    #[error("this is subnet {expected}, not {got}")]
    WrongSubnet {
        /// This subnet.
        expected: SubnetId,
        /// The one named.
        got: SubnetId,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Signed by, or naming, another agent than the sender.
    #[error("the weights are not the sender's")]
    NotTheSender,
    /// The sender is not a registered validator (unknown, or a miner).
    #[error("not a registered validator")]
    NotAValidator,
    /// The validator's stake escrow is settled, expired or empty.
    #[error("the validator has no stake")]
    NoStake,
    /// A commit (or, without commit-reveal, a reveal) for an epoch other than the open one.
    #[error("epoch {got} is not open (the open epoch is {current})")]
    WrongEpoch {
        /// The open epoch.
        current: u64,
        /// The epoch named.
        got: u64,
    },
    /// The validator already committed for this epoch.
    #[error("already committed for epoch {epoch}")]
    AlreadyCommitted {
        /// The epoch.
        epoch: u64,
    },
    /// A reveal with no commitment for its epoch.
    #[error("nothing was committed for epoch {epoch}")]
    CommitMissing {
        /// The epoch.
        epoch: u64,
    },
    /// The revealed weights and salt do not hash to the commitment.
    #[error("the reveal does not match the commitment for epoch {epoch}")]
    CommitMismatch {
        /// The epoch.
        epoch: u64,
    },
    /// A reveal in the epoch it was committed in; it is accepted from `reveal_in`.
    #[error("weights for epoch {epoch} may be revealed in epoch {reveal_in}, not before")]
    RevealTooEarly {
        /// The epoch committed for.
        epoch: u64,
        /// The epoch in which the reveal is accepted.
        reveal_in: u64,
    },
    /// A reveal after its epoch was scored (at the close of the epoch `reveal_delay` after
    /// it).
    #[error("epoch {epoch} was already scored")]
    RevealTooLate {
        /// The epoch committed for.
        epoch: u64,
    },
    /// This epoch's weights were already revealed.
    #[error("weights for epoch {epoch} were already revealed")]
    AlreadyRevealed {
        /// The epoch.
        epoch: u64,
    },
    /// A commit while commit-reveal is off: send a [`Reveal`] for the open epoch.
    #[error("commit-reveal is off in this subnet; reveal the weights directly")]
    CommitRevealOff,
    /// The weight vector itself is unusable.
    #[error("invalid weights: {0}")]
    InvalidWeights(WeightsProblem),
    /// The owner could not read the ledger to check the stake; try again.
    #[error("the ledger could not be read: {detail}")]
    LedgerUnavailable {
        /// The ledger's error.
        detail: String,
    },
}

impl From<SignerError> for WeightsRefusal {
    fn from(e: SignerError) -> Self {
        match e {
            SignerError::NotTheSender { .. } => WeightsRefusal::NotTheSender,
            SignerError::Signature(_) => WeightsRefusal::BadSignature,
        }
    }
}

impl From<SignerError> for RegisterRefusal {
    fn from(e: SignerError) -> Self {
        match e {
            SignerError::NotTheSender { .. } => RegisterRefusal::NotTheSender,
            SignerError::Signature(_) => RegisterRefusal::BadSignature,
        }
    }
}

/// Asks the owner for the last weights of a validator that were scored (public, as on a
/// chain); the answer is [`RevealedWeights`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.WeightsQuery")]
pub struct WeightsQuery {
    /// The subnet.
    pub subnet: SubnetId,
    /// The validator's uid.
    pub uid: Uid,
}

/// The last weights of `uid` that were scored, and the epoch they counted for (`None` if
/// none). With commit-reveal, weights are published only once scored, at the close of the
/// epoch `reveal_delay` after the one they were committed in, whenever they were revealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.RevealedWeights")]
pub struct RevealedWeights {
    /// The validator's uid.
    pub uid: Uid,
    /// The epoch the weights counted for.
    pub epoch: Option<u64>,
    /// The weights (empty if none).
    pub weights: Vec<UidWeight>,
}

/// Why a weight a validator revealed did not count at the close that scored it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema,
)]
pub enum DropReason {
    /// The validator had no stake counted at the close (it unstaked, or its stake escrow no
    /// longer holds the minimum stake): its whole row.
    NoStake,
    /// Its stake did not earn a validator permit at the close (not among the
    /// `max_allowed_validators` largest, or below Yuma's `min_stake`): its whole row.
    NoValidatorPermit,
    /// The uid was given to a new member, after pruning its miner, after these weights were
    /// fixed: they were meant for the miner pruned.
    UidReassigned,
    /// The weight was on the validator's own uid, which Yuma ignores.
    OwnUid,
    /// The uid did not exist at the close.
    UnknownUid,
}

/// One weight that did not count, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct DroppedWeight {
    /// The uid the weight was on.
    pub uid: Uid,
    /// The weight as revealed.
    pub weight: u16,
    /// Why it did not count.
    pub reason: DropReason,
}

/// Sent by the owner to a validator at the close that scored its revealed weights, when some
/// or all of them did not count. Validators whose weights all counted get nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.WeightsDropped")]
pub struct WeightsDropped {
    /// The subnet.
    pub subnet: SubnetId,
    /// The epoch the weights were set for (the one scored).
    pub epoch: u64,
    /// The epoch whose close scored them.
    pub closed: u64,
    /// The validator's uid.
    pub uid: Uid,
    /// Each non-zero weight that did not count, in the order revealed.
    pub dropped: Vec<DroppedWeight>,
}

/// A validator's task for a miner. The miner answers with a [`TaskResult`] carrying the
/// same `id`, sent back as a message (not a reply), so a miner can queue tasks and serve
/// them in stake order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.Task")]
pub struct Task {
    /// The subnet.
    pub subnet: SubnetId,
    /// Chosen by the validator; the result carries it back.
    pub id: u64,
    /// The subnet's request type, as JSON.
    pub body: serde_json::Value,
}

/// A miner's answer to a [`Task`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.TaskResult")]
pub struct TaskResult {
    /// The subnet.
    pub subnet: SubnetId,
    /// The task's id.
    pub id: u64,
    /// The answer, or why there is none.
    pub outcome: TaskOutcome,
}

/// What became of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub enum TaskOutcome {
    /// Served: the subnet's response type, as JSON.
    Answer(serde_json::Value),
    /// Not served, and why.
    Refused(TaskRefusal),
}

/// Why a miner did not serve a task.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema, thiserror::Error,
)]
pub enum TaskRefusal {
    /// The task is for another subnet.
    #[error("this miner serves subnet {expected}, not {got}")]
    WrongSubnet {
        /// The miner's subnet.
        expected: SubnetId,
        /// The one named.
        got: SubnetId,
    },
    /// The sender is not registered in the subnet (as far as the miner's roster says).
    #[error("the sender is not registered in this subnet")]
    NotRegistered,
    /// The sender is registered, but not as a validator.
    #[error("the sender is not a validator")]
    NotAValidator,
    /// The sender is a validator without stake.
    #[error("the sender has no stake")]
    NoStake,
    /// The queue is full of tasks from validators with at least as much stake (or this
    /// task was pushed out by one with more).
    #[error("the miner is busy ({queued} tasks queued)")]
    Busy {
        /// Tasks queued when it was refused.
        queued: usize,
    },
    /// The body is not the subnet's request type.
    #[error("bad request: {detail}")]
    BadRequest {
        /// The decoding error.
        detail: String,
    },
    /// The miner tried and failed.
    #[error("the miner failed: {detail}")]
    Failed {
        /// What went wrong.
        detail: String,
    },
}

/// Asks the owner to end the sending validator's stake: its weights stop counting at once,
/// and the owner releases the stake escrow back to the validator's wallet. Answered with
/// [`Unstaked`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.Unstake")]
pub struct Unstake {
    /// The subnet.
    pub subnet: SubnetId,
    /// The validator (it must be the sender).
    pub validator: Address,
    /// The validator's public key.
    pub key: PublicKey,
    /// ed25519 over [`Unstake::signing_bytes`].
    #[serde(with = "agent_core::identity::signature_hex")]
    #[schemars(with = "String")]
    pub signature: [u8; 64],
}

impl Unstake {
    /// `identity`'s request to unstake.
    pub fn sign(identity: &Identity, subnet: SubnetId) -> Unstake {
        let mut unstake =
            Unstake { subnet, validator: identity.address(), key: identity.public_key(), signature: [0; 64] };
        unstake.signature = identity.sign(&unstake.signing_bytes());
        unstake
    }

    /// What the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = b"agora.subnet.unstake.v1".to_vec();
        out.extend_from_slice(&self.subnet.to_be_bytes());
        out.extend_from_slice(self.validator.as_bytes());
        out
    }

    /// Checks that the key is the validator's, the validator is `from`, and the signature
    /// verifies.
    pub fn check(&self, from: Address) -> Result<(), SignerError> {
        check_signer(&self.key, self.validator, from, &self.signing_bytes(), &self.signature)
    }
}

/// The owner's answer to an [`Unstake`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.subnet.Unstaked")]
pub enum Unstaked {
    /// The stake escrow was released to the validator's wallet.
    Released {
        /// Tokens returned.
        amount: u128,
    },
    /// Nothing was released, and why.
    Refused(UnstakeRefusal),
}

/// Why an unstake was refused.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema, thiserror::Error,
)]
pub enum UnstakeRefusal {
    /// For another subnet.
    #[error("this is subnet {expected}, not {got}")]
    WrongSubnet {
        /// This subnet.
        expected: SubnetId,
        /// The one named.
        got: SubnetId,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Signed by, or naming, another agent than the sender.
    #[error("the request is not the sender's")]
    NotTheSender,
    /// The sender is not a registered validator.
    #[error("not a registered validator")]
    NotAValidator,
    /// The validator has no stake left to release (it already unstaked).
    #[error("no stake is locked for this validator")]
    NoStake,
    /// The stake no longer counts, but the ledger did not release it yet; ask again.
    #[error("the ledger could not release the stake: {detail}")]
    LedgerUnavailable {
        /// The ledger's error.
        detail: String,
    },
}

impl From<SignerError> for UnstakeRefusal {
    fn from(e: SignerError) -> Self {
        match e {
            SignerError::NotTheSender { .. } => UnstakeRefusal::NotTheSender,
            SignerError::Signature(_) => UnstakeRefusal::BadSignature,
        }
    }
}
