//! Contract-net (FIPA Contract Net Interaction Protocol).
//!
//! The initiator calls for proposals with a deadline; each participant proposes or
//! refuses; at the deadline (or once everyone has answered) the initiator accepts some
//! proposals and rejects the rest; a proposal that comes after the deadline is rejected
//! with the reason [`RejectReason::Late`]; a winner performs the task and reports done (with
//! a result) or failure. The initiator may withdraw a call ([`cancel`]); an award with no
//! report in time is cancelled.
//!
//! Each participant's part is a dialogue of its own (its id is the session its messages
//! travel in), checked on both sides against [`rules`]. The initiator side is [`call`] and
//! [`award`], plain async functions usable from any handler. The participant side is a
//! [`Participant`] attached to an agent with [`serve`].
//!
//! The code, one concern a file, all of it exported from here: the messages, roles and
//! rules (`messages.rs`), the causes they carry (`causes.rs`), the initiator's side (`initiator.rs`), the participant's side
//! (`participant.rs`), withdrawing a call (`cancel.rs`), and awards paid through escrow
//! (`pay.rs`). What both sides share
//! (the [`Book`] of dialogues, their sweeping, refusals) is in this file.
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> start
//!     start --> called: Cfp (initiator)
//!     called --> proposed: Propose (participant)
//!     called --> refused: Refuse (participant)
//!     called --> rejected: Reject (initiator, also after the deadline: late)
//!     called --> cancelled: Cancel (initiator)
//!     proposed --> cancelled: Cancel (initiator)
//!     proposed --> called: Cfp (initiator; a revised call)
//!     proposed --> awarded: Accept (initiator)
//!     proposed --> rejected: Reject (initiator)
//!     awarded --> done: Done (participant)
//!     awarded --> failed: Failure (participant)
//!     awarded --> cancelled: Cancel (initiator), or Report::Cancelled (participant)
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agent_core::envelope::unix_now_ms as now_ms;
use agent_core::ledger::{DealId, EscrowId};
use agent_core::{Address, Agent, Context, Message, WireSchema};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::dialogue::{Data, Dialogue, DialogueError, Dialogues, Refused, Rules, Step, EXPIRED};
use crate::settlement::{
    refund_at, refund_overdue, refundable_after, release_by, released, retry_until, Payment, REFUND_GRACE,
};

mod answering;
mod cancel;
mod causes;
mod holds;
mod initiator;
mod interrupted;
mod messages;
mod participant;
mod pay;
mod performing;
mod strays;

use answering::Answering;
pub use answering::MAX_EVALUATING;
pub use cancel::*;
pub use causes::*;
use holds::{Hold, Holds};
pub use initiator::*;
use interrupted::{commit_now, commit_soon, end_interrupted, in_hand, InHand};
pub use messages::*;
pub use participant::*;
pub use pay::*;
use performing::Performing;
use strays::refuse_participants_messages;

/// Why a contract-net call or award could not run. What the participants did (refusals,
/// failures, silence) is never an error: it is in the [`Called`] and [`Outcome`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContractNetError {
    /// The agent's dialogues could not be read, or the book belongs to the other role.
    #[error("contract-net dialogues unavailable: {0}")]
    Dialogues(String),
    /// The calling agent does not answer late proposals and stray messages, as FIPA
    /// requires of an initiator: its book was not made with [`initiator`] (or given to
    /// [`refuse_strays`]) on this agent before it was added to its bureau.
    #[error(
        "agent {agent} cannot call for proposals: it would not answer late ones. Make its \
         book with contract_net::initiator(&mut agent) before adding the agent"
    )]
    NotAnInitiator {
        /// The agent that called.
        agent: Address,
    },
    /// A step could not be recorded (storage) or was refused by the rules.
    #[error(transparent)]
    Dialogue(#[from] DialogueError),
    /// The task could not be encoded as JSON.
    #[error("the task cannot be encoded: {0}")]
    Encode(String),
    /// The initiator has no wallet to pay from (its bureau has no ledger).
    #[error("no wallet to pay from: {0}")]
    Wallet(String),
    /// [`cancel`] found nothing to cancel: every dialogue of the call was decided already
    /// (awarded, rejected, refused, cancelled or expired). Nobody was told anything.
    #[error("nothing to cancel: every dialogue of the call is decided already")]
    NothingToCancel,
    /// [`cancel`] could not record the cancel of some of the call's dialogues: the agent's
    /// storage failed. The participants in `unrecorded` were told nothing, and their
    /// dialogues are as they were (a later [`cancel`] may retry them); those in `cancelled`
    /// had their cancel recorded and were sent a [`Cancel`], as in [`Outcome::Cancelled`].
    #[error(
        "{} of the call's dialogues could not be recorded as cancelled, and their participants were not told ({} were cancelled and told): {error}",
        unrecorded.len(),
        cancelled.len()
    )]
    CancelNotRecorded {
        /// Whose dialogues were cancelled, each sent a [`Cancel`] (none if storage failed
        /// for every one).
        cancelled: Vec<Address>,
        /// Whose dialogues could not be recorded as cancelled: not told, still open.
        unrecorded: Vec<Address>,
        /// The first storage failure (boxed: it is rare, and every result of a call or an
        /// award would carry its size).
        #[source]
        error: Box<DialogueError>,
    },
}

/// The agents registered in `directory` as speaking `protocol` (contract-net for the
/// payload types the caller uses: [`protocol`]`::<T, P, R>().digest()`), with every
/// attribute in `attributes` (a route, a region, a kind of goods), at most `limit`.
pub async fn find_participants(
    directory: &dyn almanac::Directory,
    protocol: agent_core::ProtocolDigest,
    attributes: &[(&str, &str)],
    limit: usize,
) -> Result<Vec<Address>, almanac::AlmanacError> {
    let mut query = almanac::Query::protocol(protocol);
    for (key, value) in attributes {
        query = query.with_attribute(*key, *value);
    }
    let mut found = Vec::new();
    loop {
        let page = directory.query(query.clone()).await?;
        found.extend(page.records.iter().map(|r| r.address));
        match page.next {
            Some(next) if found.len() < limit => query = query.after(next),
            _ => break,
        }
    }
    found.truncate(limit);
    Ok(found)
}

/// An agent's contract-net dialogues in one role, loaded from its storage on first use. An
/// initiator's book, when loaded, also schedules the refund of every escrow its agent
/// locked for an award and has not seen settled ([`award_and_pay`]): after a restart, the
/// first [`recall`] (or any other use of the book) refunds them when due.
#[derive(Clone, Default)]
pub struct Book {
    dialogues: Arc<OnceLock<Dialogues>>,
    /// A participant's book only: the initiator side of the same agent, once joined
    /// ([`refuse_strays_serving`]), to which its stray answers and reports go.
    initiator: Arc<OnceLock<Book>>,
    /// An initiator's book only: the agent whose handlers answer this book's late
    /// proposals and stray messages ([`refuse_strays`]). Only it may call with the book.
    answered_by: Arc<OnceLock<Address>>,
    /// An initiator's book only: the dialogues whose proposal it rejected (the participant
    /// was told) though storage could not record it, so their record still shows the
    /// proposal open. Never awarded; kept until the rejection is recorded or the dialogue
    /// is closed or swept ([`Book::record_rejections`]).
    unrecorded_rejections: Arc<parking_lot::Mutex<HashSet<u128>>>,
}

impl Book {
    /// Whether `ctx`'s agent may call for proposals with this book: it answers the late
    /// ones ([`refuse_strays`]).
    fn check_answered(&self, ctx: &Context) -> Result<(), ContractNetError> {
        match self.answered_by.get() == Some(&ctx.address()) {
            true => Ok(()),
            false => Err(ContractNetError::NotAnInitiator { agent: ctx.address() }),
        }
    }

    fn get(&self, ctx: &Context, role: &str) -> Result<&Dialogues, ContractNetError> {
        if let Some(dialogues) = self.dialogues.get() {
            return match dialogues.role() == role {
                true => Ok(dialogues),
                false => Err(ContractNetError::Dialogues(format!(
                    "this book holds the {} side of contract-net; the {role} side needs a book of its own",
                    dialogues.role()
                ))),
            };
        }
        let storage = ctx.storage().map_err(|e| ContractNetError::Dialogues(e.to_string()))?;
        let loaded = Dialogues::load(rules(), role, storage.clone())?;
        let mut first = false;
        let dialogues = self.dialogues.get_or_init(|| {
            first = true;
            loaded
        });
        // Once per book: the escrows a stopped initiator locked are refunded when due.
        if first && role == INITIATOR {
            refund_recorded_escrows(ctx, &storage);
        }
        Ok(dialogues)
    }

    /// The dialogues, once loaded.
    pub fn dialogues(&self) -> Option<&Dialogues> {
        self.dialogues.get()
    }

    /// Whether this initiator rejected the proposal of dialogue `id` without recording it
    /// (its storage failed): the proposal must not be awarded, whatever the record says.
    fn rejected(&self, id: u128) -> bool {
        let unrecorded = self.unrecorded_rejections.lock();
        !unrecorded.is_empty() && unrecorded.contains(&id)
    }

    /// Notes that the rejection of dialogue `id` was sent but could not be recorded.
    fn rejected_unrecorded(&self, id: u128) {
        self.unrecorded_rejections.lock().insert(id);
    }

    /// Records the rejections sent unrecorded, if storage takes them now; forgets those whose
    /// dialogue has closed otherwise meanwhile (expired, or swept).
    fn record_rejections(&self, dialogues: &Dialogues) {
        let mut unrecorded = self.unrecorded_rejections.lock();
        unrecorded.retain(|&id| {
            matches!(dialogues.outgoing_named("Reject", id, now_ms()), Err(DialogueError::Storage { .. }))
        });
    }
}

fn rand_id() -> u128 {
    rand::random()
}

/// How often an agent's contract-net dialogues are swept, and how long after its deadline
/// an open one is kept (a late proposal is still rejected as late within it). Sweeping
/// only frees memory and storage: a dialogue past its deadline refuses late steps whether
/// or not it was swept, so the period is long (cheap for many idle agents over days).
const SWEEP: Duration = Duration::from_secs(300);
const GRACE: Duration = Duration::from_secs(60);

/// Sweeps `book`'s dialogues on `agent` every [`SWEEP`]: open dialogues well past their
/// deadline expire, dialogues older than the rules' maximum age are forgotten; on an
/// initiator, its wallet's escrows still open past their deadline are refunded.
fn sweep(agent: &mut Agent, book: &Book, role: &'static str) {
    let book = book.clone();
    agent.on_interval(SWEEP, move |ctx: Context| {
        let book = book.clone();
        async move {
            if let Ok(dialogues) = book.get(&ctx, role) {
                if let Err(e) = dialogues.expire_after(now_ms(), GRACE) {
                    tracing::warn!(error = %e, "sweeping contract-net dialogues failed");
                }
                book.record_rejections(dialogues);
            }
            // A lock sent just before a crash may reach the ledger after the restarted
            // initiator looked at it (its book's first load): no record and no task knows of
            // it, so escrows left open past their deadline are refunded here, each sweep.
            if role == INITIATOR {
                if let Ok(wallet) = ctx.wallet() {
                    // On a task of its own: a slow ledger does not hold up the agent's messages.
                    ctx.spawn(async move { refund_overdue(&wallet).await });
                }
            }
        }
    });
}

/// Whether a step the dialogue's rules allowed goes ahead: it was recorded, or only its
/// record failed (storage refuses writes). A step the rules refuse does not. A step that
/// is allowed but unrecorded still goes ahead, because what it says is true and the peer
/// must hear it (a rejection frees what a proposal held, a cancel stops the work, a report
/// gets the work paid). The dialogue stays as it was recorded. A proposal whose rejection
/// was not recorded is never awarded by the same initiator all the same ([`reject`] notes
/// it in the book); an initiator restarted before the rejection was recorded may award it,
/// and the participant, told no, refuses the award (an escrow locked for it is refunded at
/// its deadline).
fn allowed(step: Result<Option<Data>, DialogueError>, what: &'static str) -> Result<Option<Data>, DialogueError> {
    match step {
        Err(DialogueError::Storage { dialogue, reason }) => {
            tracing::warn!(dialogue = %format!("{dialogue:032x}"), step = what, %reason, "a contract-net step goes ahead unrecorded: storage failed");
            Ok(None)
        }
        step => step,
    }
}

/// Tells `to` why its message in dialogue `id` was refused.
async fn tell(ctx: &Context, id: u128, to: Address, refused: DialogueError) {
    tracing::debug!(%to, error = %refused, "contract-net message refused");
    if let Some(told) = refused.refusal() {
        // Boxed: refusals are rare, and a send's future kept inline would make every
        // handler that may refuse larger, and handlers are allocated for every message.
        // The peer may be gone; the refusal stands either way.
        let _ = Box::pin(ctx.send_in(id, to, told)).await;
    }
}
