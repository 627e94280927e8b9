//! Awards paid through escrow: the glue between contract-net and [`crate::settlement`].

use super::*;

/// The deal a contract-net dialogue settles: what its escrow names.
pub fn deal_of(dialogue: u128) -> DealId {
    DealId::named(&format!("agora.cnp/{dialogue:032x}"))
}

/// A winner's award, paid through escrow.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement<R> {
    /// The winner.
    pub winner: Address,
    /// Its report: the result, or why there is none.
    pub result: Result<R, AwardFailure>,
    /// The escrow locked for it (none if the lock failed: then it was not awarded).
    pub escrow: Option<EscrowId>,
    /// Whether the escrow was released to the winner (by the winner, its arbiter, or by the
    /// initiator on its report of done), as the ledger says. With no report in time,
    /// [`award_and_pay`] waits for the escrow's deadline (the perform timeout plus
    /// [`REFUND_GRACE`]) and refunds it, unless the winner released it first: a winner whose
    /// report of done was lost or crossed the withdrawal is paid, and `paid` says so. After
    /// a report of failure or cancellation the winner (served by [`serve`]) refunds the
    /// escrow at once; failing that, it is refunded once its deadline has passed, in the
    /// background.
    pub paid: bool,
}

/// How a paid contract-net round ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Paid<R> {
    /// Winners were chosen: each one's settlement.
    Settled(Vec<Settlement<R>>),
    /// Nobody proposed in time.
    NoProposals,
    /// No proposal was chosen.
    NoneChosen,
}

/// [`award`], paying each winner through escrow from the initiator's wallet: the price
/// (`price_of` the proposal) is locked for the winner's wallet, keyed by the dialogue
/// ([`deal_of`]), before the award is sent with its [`Payment`]. The winner's wallet is the
/// escrow's arbiter: the winner releases it to itself when it has done the task, before it
/// reports done (and the initiator releases it too on that report, in case the winner's
/// release failed), so the initiator cannot take back what was earned. On a failure or a
/// cancellation the winner (served by [`serve`]) refunds it at once; otherwise, and with no
/// report, it is refunded to the initiator after its deadline (`perform_timeout` plus
/// [`REFUND_GRACE`]), which the initiator cannot do before; with
/// no report, the winner's settlement waits for that refund, so that it says from the
/// ledger whether the winner was paid ([`Settlement::paid`]). A
/// winner whose price cannot be locked (no wallet given, insufficient funds) is not
/// awarded, nor is one whose dialogue is past its proposal (awarded already, cancelled,
/// expired): nothing is locked for it. Every escrow locked is named in the returned
/// [`Settlement`]s. No path leaves the money locked past its deadline or pays it twice: the
/// ledger settles an escrow once.
///
/// Trust: the winner, as arbiter, could release the escrow to itself without doing the
/// task; the ledger cannot see the work. With the initiator as arbiter the initiator could
/// take back what was earned instead. Use it between parties that trust the winner's report.
pub async fn award_and_pay<P, R: DeserializeOwned + Send + 'static>(
    ctx: &Context,
    book: &Book,
    called: &Called<P>,
    winners: &[Address],
    price_of: impl Fn(&P) -> u128,
    perform_timeout: Duration,
) -> Result<Paid<R>, ContractNetError> {
    let dialogues = book.get(ctx, INITIATOR)?;
    if called.proposals.is_empty() {
        return Ok(Paid::NoProposals);
    }
    let wallet = ctx.wallet().map_err(|e| ContractNetError::Wallet(e.to_string()))?;
    let storage = ctx.storage().map_err(|e| ContractNetError::Dialogues(e.to_string()))?;
    let mut settlements = Vec::new();
    let mut reports = tokio::task::JoinSet::new();
    for proposal in &called.proposals {
        let (id, to) = (proposal.dialogue, proposal.from);
        if super::initiator::superseded(dialogues, id, called.round) {
            // Called again since: the newer round decides it, and nothing is locked for it.
            if winners.contains(&to) {
                let result = Err(AwardFailure::NotAwardable { state: "superseded".into() });
                settlements.push(Settlement { winner: to, result, escrow: None, paid: false });
            }
            continue;
        }
        let locked = match (winners.contains(&to), proposal.pay_to) {
            (false, _) => None,
            (true, None) => {
                settlements.push(Settlement {
                    winner: to,
                    result: Err(AwardFailure::NoWalletToPay),
                    escrow: None,
                    paid: false,
                });
                None
            }
            (true, Some(_)) if super::initiator::not_awardable(book, dialogues, id, called.round).is_some() => {
                // Awarded already (a second award of the same call), cancelled, rejected
                // (though storage may not have recorded it) or expired: nothing may be
                // awarded, so nothing is locked.
                let state = super::initiator::not_awardable(book, dialogues, id, called.round).unwrap_or_default();
                let result = Err(AwardFailure::NotAwardable { state });
                settlements.push(Settlement { winner: to, result, escrow: None, paid: false });
                continue;
            }
            (true, Some(pay_to)) => {
                let price = price_of(&proposal.proposal);
                // Each winner's own deadline, from its own lock: winners locked later get
                // their full time too.
                let deliver_by_ms = now_ms().saturating_add(perform_timeout.as_millis() as u64);
                let deadline_ms = deliver_by_ms.saturating_add(REFUND_GRACE.as_millis() as u64);
                // The winner is the arbiter: it releases the escrow once it has done the task.
                match wallet.lock(price, pay_to, deadline_ms, pay_to, Some(deal_of(id))).await {
                    Ok((escrow, _)) => {
                        // Recorded on disk before the award goes out, so a restarted initiator
                        // still refunds it; scheduled now, whatever happens next (this future
                        // dropped, the award refused): a release before the deadline makes
                        // the refund a no-op.
                        let recorded = record_escrow(&storage, id, escrow, deadline_ms).await;
                        refund_when_due_and_forget(ctx, wallet.clone(), storage.clone(), id, escrow, deadline_ms);
                        match recorded {
                            Ok(()) => {
                                let payment = Payment { deal: deal_of(id), escrow, price, deliver_by_ms };
                                Some((payment, deadline_ms))
                            }
                            Err(e) => {
                                let result = Err(AwardFailure::NotRecorded(e.to_string()));
                                settlements.push(Settlement { winner: to, result, escrow: Some(escrow), paid: false });
                                None
                            }
                        }
                    }
                    Err(e) => {
                        // The lock may still have been applied (the ledger unreachable after
                        // the submission): if so, its escrow is on the ledger alone, and the
                        // sweep of open escrows after its deadline refunds it.
                        refund_open_escrows_after(ctx, wallet.clone(), deadline_ms);
                        let result = Err(AwardFailure::NotLocked(e.to_string()));
                        settlements.push(Settlement { winner: to, result, escrow: None, paid: false });
                        None
                    }
                }
            }
        };
        // Asked again after the lock: while the ledger took it, the proposal may have been
        // rejected (unrecorded, with storage down) or called again and answered anew, and
        // its dialogue then shows it open as before.
        let moved_on = locked.as_ref().and_then(|_| super::initiator::not_awardable(book, dialogues, id, called.round));
        if let (Some((payment, _)), Some(state)) = (&locked, moved_on) {
            // Refunded when due (scheduled at the lock).
            let result = Err(AwardFailure::NotAwardable { state });
            settlements.push(Settlement { winner: to, result, escrow: Some(payment.escrow), paid: false });
            continue;
        }
        let accepted = locked.as_ref().map(|_| dialogues.outgoing_named("Accept", id, now_ms()));
        // On disk before it goes out: an initiator restarted after a crash must know this
        // proposal is awarded and paid for, or it could award and pay another for the same
        // task. Not on disk, it does not go out: the winner's hold ends at its deadline, and
        // the escrow is refunded at its own (scheduled at the lock).
        if let (Some((payment, _)), Some(Ok(_))) = (&locked, &accepted) {
            if let Err(e) = storage.flush().await {
                tracing::warn!(dialogue = %format!("{id:032x}"), error = %e, "an award is not sent: it could not be committed");
                let result = Err(AwardFailure::NotRecorded(e.to_string()));
                settlements.push(Settlement { winner: to, result, escrow: Some(payment.escrow), paid: false });
                continue;
            }
        }
        match (locked, accepted) {
            (Some((payment, deadline_ms)), Some(Ok(_))) => {
                let (ctx, book, wallet) = (ctx.clone(), book.clone(), wallet.clone());
                let escrow = payment.escrow;
                // Each winner is heard and paid on its own, side by side.
                reports.spawn(async move {
                    let accept = Accept { payment: Some(payment), payer: Some(wallet.address()) };
                    let report = ctx.request_in::<Accept, Report>(id, to, accept, Some(perform_timeout)).await;
                    let Some(dialogues) = book.dialogues() else {
                        return Settlement {
                            winner: to,
                            result: Err(AwardFailure::NotAwardable { state: "unknown".into() }),
                            escrow: Some(escrow),
                            paid: false,
                        };
                    };
                    let reported = report.is_ok();
                    let result = outcome_of(&ctx, dialogues, id, to, report).await;
                    let paid = match result {
                        Err(AwardFailure::Cancelled) => settled_after_cancel(&wallet, escrow, deadline_ms).await,
                        _ => paid_out(&wallet, escrow, deadline_ms, result.is_ok(), reported).await,
                    };
                    Settlement { winner: to, result, escrow: Some(escrow), paid }
                });
            }
            // An award the initiator cannot record is not made (a restarted initiator would
            // not know of it): the winner is told no; the escrow is refunded when due.
            (Some((payment, _)), Some(Err(DialogueError::Storage { reason, .. }))) => {
                let result = Err(AwardFailure::NotRecorded(reason));
                settlements.push(Settlement { winner: to, result, escrow: Some(payment.escrow), paid: false });
                reject(ctx, book, dialogues, id, to, RejectReason::NotChosen).await;
            }
            (Some((payment, _)), _) => {
                // The dialogue moved on while the price was being locked: the escrow is
                // refunded when due (scheduled at the lock), and the caller is told of it.
                let state = dialogues.get(id).map_or_else(|| "unknown".to_owned(), |d| d.state.to_string());
                let result = Err(AwardFailure::NotAwardable { state });
                settlements.push(Settlement { winner: to, result, escrow: Some(payment.escrow), paid: false });
            }
            (None, _) => {
                reject(ctx, book, dialogues, id, to, RejectReason::NotChosen).await;
            }
        }
    }
    if reports.is_empty() && settlements.is_empty() {
        return Ok(Paid::NoneChosen);
    }
    while let Some(joined) = reports.join_next().await {
        // A failed winner's escrow is refunded when due (scheduled and recorded at the lock).
        if let Ok(settlement) = joined {
            settlements.push(settlement);
        }
    }
    Ok(Paid::Settled(settlements))
}

/// Whether `escrow` went to the winner, as the ledger says, once the winner's report
/// (`done`, or not) came or did not (`reported`). On done the initiator releases it too.
/// With no report in time the award was withdrawn, but the winner may have done the task
/// and released the escrow before the withdrawal reached it (a cancel crossing a done):
/// the ledger decides at the escrow's deadline, when it is refunded unless released. A
/// report of failure or cancellation is taken as the ledger stands now.
async fn paid_out(wallet: &agent_core::Wallet, escrow: EscrowId, deadline_ms: u64, done: bool, reported: bool) -> bool {
    if done {
        return release_by(wallet, escrow, deadline_ms).await;
    }
    if !reported {
        return refund_at(wallet, escrow, deadline_ms).await && released(wallet, escrow).await;
    }
    match wallet.escrow(escrow).await {
        Ok(Some(_)) => false,
        Ok(None) => released(wallet, escrow).await,
        Err(e) => {
            tracing::warn!(%escrow, error = %e, "the ledger could not be read; the escrow is taken as not paid");
            false
        }
    }
}

/// Whether the escrow of an award this initiator cancelled went to the winner. A winner
/// that stopped refunds it at once; one that had done the work before the cancel reached
/// it may have released it to itself. The ledger says which once the escrow is settled:
/// this waits for that, polling, and refunds it itself at the deadline if it is still open.
async fn settled_after_cancel(wallet: &agent_core::Wallet, escrow: EscrowId, deadline_ms: u64) -> bool {
    loop {
        match wallet.escrow(escrow).await {
            Ok(None) => return released(wallet, escrow).await,
            Ok(Some(_)) | Err(_) if now_ms() > deadline_ms => {
                return refund_at(wallet, escrow, deadline_ms).await && released(wallet, escrow).await;
            }
            Ok(Some(_)) | Err(_) => tokio::time::sleep(SETTLED_POLL).await,
        }
    }
}

/// How often [`settled_after_cancel`] reads the ledger.
const SETTLED_POLL: Duration = Duration::from_millis(50);

/// Where an initiator keeps each escrow it locked for an award, next to its dialogues
/// (`agora.cnp.escrow/` and the dialogue's id), until the escrow is settled.
const ESCROW_KEY: &str = "agora.cnp.escrow/";

fn escrow_key(dialogue: u128) -> String {
    format!("{ESCROW_KEY}{dialogue:032x}")
}

/// An escrow locked for an award, as kept in the initiator's storage.
#[derive(Serialize, Deserialize)]
struct LockedEscrow {
    escrow: EscrowId,
    deadline_ms: u64,
}

/// Records, durably, that `escrow` (refundable after `deadline_ms`) pays for the award of
/// dialogue `dialogue`.
async fn record_escrow(
    storage: &agent_core::Storage,
    dialogue: u128,
    escrow: EscrowId,
    deadline_ms: u64,
) -> Result<(), agent_core::StorageError> {
    storage.set(&escrow_key(dialogue), &LockedEscrow { escrow, deadline_ms })?;
    storage.flush().await
}

/// Refunds `escrow` to `wallet` once its deadline has passed (in the background, as
/// [`refund_when_due`](crate::settlement::refund_when_due)), then forgets its record: once
/// the escrow is settled, by that refund or before it by a release. A record whose refund
/// could not be made (the ledger unreachable for an hour), or whose agent stopped first,
/// stays for the next restart. A task of `ctx`'s agent: it ends with its bureau, so a
/// crashed initiator refunds nothing after the crash (its restart does, from the record).
fn refund_when_due_and_forget(
    ctx: &Context,
    wallet: agent_core::Wallet,
    storage: agent_core::Storage,
    dialogue: u128,
    escrow: EscrowId,
    deadline_ms: u64,
) {
    ctx.spawn(async move {
        if refund_at(&wallet, escrow, deadline_ms).await {
            if let Err(e) = storage.remove(&escrow_key(dialogue)) {
                // Harmless but for the space: the next restart's refund finds it settled.
                tracing::warn!(%escrow, error = %e, "a settled escrow's record could not be removed");
            }
        }
    });
}

/// Schedules the refund of every escrow recorded in `storage` (this initiator's, locked
/// before a restart and not seen settled) at its deadline, or at once if it has passed, and
/// of every other escrow its wallet has open on the ledger: one locked just before a crash,
/// before its record was written, is known to the ledger alone. A release by the winner
/// before the deadline makes a refund a no-op: nothing is paid twice.
pub(super) fn refund_recorded_escrows(ctx: &Context, storage: &agent_core::Storage) {
    let keys = match storage.keys_starting_with(ESCROW_KEY) {
        Ok(keys) => keys,
        Err(e) => return tracing::error!(error = %e, "the escrows locked before a restart cannot be read"),
    };
    let mut recorded = Vec::new();
    for key in &keys {
        let dialogue = u128::from_str_radix(&key[ESCROW_KEY.len()..], 16);
        match (dialogue, storage.get::<LockedEscrow>(key)) {
            (Ok(dialogue), Ok(Some(locked))) => recorded.push((dialogue, locked)),
            (_, Ok(None)) => {}
            (_, Err(e)) => tracing::error!(%key, error = %e, "an escrow record cannot be read"),
            (Err(e), _) => tracing::error!(%key, error = %e, "an escrow record has no dialogue id"),
        }
    }
    let wallet = match ctx.wallet() {
        Ok(wallet) => wallet,
        // No ledger: nothing was ever locked, unless records say otherwise.
        Err(e) if recorded.is_empty() => return tracing::debug!(error = %e, "no wallet: no escrows to refund"),
        Err(e) => return tracing::error!(error = %e, "escrows locked before a restart, and no wallet to refund them"),
    };
    if !recorded.is_empty() {
        tracing::info!(escrows = recorded.len(), "refunding escrows locked before a restart when due");
    }
    for (dialogue, locked) in recorded {
        refund_when_due_and_forget(ctx, wallet.clone(), storage.clone(), dialogue, locked.escrow, locked.deadline_ms);
    }
    refund_open_escrows_after(ctx, wallet, 0);
}

/// Once `after_ms` has passed, refunds every escrow `wallet` has open on the ledger, each
/// at its own deadline: what no one released by its deadline goes back to its payer, the
/// ledger's rule for every escrow, whoever locked it and for what. A task of `ctx`'s agent,
/// as [`refund_when_due_and_forget`]'s.
fn refund_open_escrows_after(ctx: &Context, wallet: agent_core::Wallet, after_ms: u64) {
    let task_ctx = ctx.clone();
    ctx.spawn(async move {
        let wait = after_ms.saturating_sub(now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if let Err(e) = crate::settlement::refund_open_escrows(&task_ctx, &wallet).await {
            tracing::warn!(error = %e, "the wallet's open escrows could not be read; they are refunded at the next restart");
        }
    });
}

/// Why a winner refused an award without performing: its payment does not hold on the
/// ledger, or a priced proposal's award came unpaid. Reported to the initiator as
/// [`Failure::PaymentRefused`] (serde names are the wire codes); the escrow, if any, goes
/// back to its payer: at once if it names this award with the winner as its arbiter (the
/// winner refunds it), otherwise at its deadline.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema, thiserror::Error,
)]
#[serde(rename_all = "snake_case")]
pub enum PaymentRefused {
    /// The proposal is priced ([`Participant::price`]) and the award came without payment:
    /// a priced participant does not work for free.
    #[error("the proposal is priced at {price} and the award came without payment")]
    Unpaid {
        /// The price proposed.
        price: u128,
    },
    /// The participant states no price for its proposal ([`Participant::price`]), so it
    /// takes no payment through escrow.
    #[error("this participant takes no payment through escrow (it states no price)")]
    NoPrice,
    /// The participant has no wallet to be paid in.
    #[error("this participant has no wallet to be paid in: {0}")]
    NoWallet(String),
    /// The ledger could not be read.
    #[error("the ledger could not be read: {0}")]
    Ledger(String),
    /// The escrow is not open on the ledger (settled, or never locked).
    #[error("escrow {0} is not open on the ledger")]
    NotOpen(EscrowId),
    /// The escrow was locked by another wallet than the one the award names as its payer.
    #[error("escrow {escrow} was locked by {locked_by}, not by the awarding initiator's wallet {payer:?}")]
    Payer {
        /// The escrow.
        escrow: EscrowId,
        /// Who locked it.
        locked_by: Address,
        /// The payer the award names, if any.
        payer: Option<Address>,
    },
    /// The escrow does not pay this participant's wallet, or another can release it.
    #[error("escrow {0} does not name this participant's wallet as its beneficiary and its arbiter")]
    NotMine(EscrowId),
    /// The escrow (or the award) holds another amount than the price proposed.
    #[error("escrow {escrow} holds {holds} (the award says {says}), not the {price} proposed")]
    Amount {
        /// The escrow.
        escrow: EscrowId,
        /// What it holds on the ledger.
        holds: u128,
        /// What the award's payment says it holds.
        says: u128,
        /// The price proposed.
        price: u128,
    },
    /// The escrow (or the award) settles another deal than this dialogue's.
    #[error("escrow {0} does not settle this dialogue's deal")]
    Deal(EscrowId),
    /// The escrow may be refunded before the task is due and its grace has passed, or too
    /// soon to perform against.
    #[error("escrow {0} is refundable too soon to perform against")]
    Deadline(EscrowId),
}

/// Checks on the ledger, before performing, the payment of the award of dialogue `id` by
/// `payer` (the initiator's wallet, as its award names it) for a proposal priced `price`:
/// the escrow is open, locked by `payer`, for `wallet` as both beneficiary and arbiter,
/// holding exactly the price, for this dialogue's deal, and refundable no earlier than
/// [`REFUND_GRACE`] after the task is due (and not within a second from now).
pub(super) async fn check_payment(
    wallet: &agent_core::Wallet,
    id: u128,
    payment: &Payment,
    payer: Option<Address>,
    price: u128,
) -> Result<(), PaymentRefused> {
    let escrow_id = payment.escrow;
    let escrow = match wallet.escrow(escrow_id).await {
        Ok(Some(escrow)) => escrow,
        Ok(None) => return Err(PaymentRefused::NotOpen(escrow_id)),
        Err(e) => return Err(PaymentRefused::Ledger(e.to_string())),
    };
    if payer != Some(escrow.payer) {
        return Err(PaymentRefused::Payer { escrow: escrow_id, locked_by: escrow.payer, payer });
    }
    if escrow.beneficiary != wallet.address() || escrow.arbiter != wallet.address() {
        return Err(PaymentRefused::NotMine(escrow_id));
    }
    if escrow.amount != price || payment.price != price {
        return Err(PaymentRefused::Amount { escrow: escrow_id, holds: escrow.amount, says: payment.price, price });
    }
    if escrow.deal != Some(deal_of(id)) || payment.deal != deal_of(id) {
        return Err(PaymentRefused::Deal(escrow_id));
    }
    let now_ms = now_ms();
    if escrow.deadline_ms < refundable_after(payment.deliver_by_ms)
        || now_ms >= payment.deliver_by_ms
        || escrow.deadline_ms < now_ms.saturating_add(1000)
    {
        return Err(PaymentRefused::Deadline(escrow_id));
    }
    Ok(())
}
