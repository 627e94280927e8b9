//! The participant's side: a [`Participant`] served on an agent, holding what it proposes
//! until a decision or the hold's end.

use super::*;

/// A participant's side of contract-net. `evaluate` decides whether to propose; `perform`
/// does an awarded task; `release` is told when a proposal's hold ends without an award
/// (rejected, cancelled), so what it held can go to someone else.
///
/// A restarted participant (the same storage, a new process, [`serve`] again) re-arms the
/// holds of the proposals it had made and releases each when it ends. An award it was
/// performing when it stopped short (a crash: a graceful stop lets the work in hand end)
/// is not performed again, nor reported: on startup its dialogue is recorded as failed (a
/// late cancel or a report of the old work is refused; one the initiator had cancelled
/// stays cancelled), `release` is told of its proposal,
/// and the award's escrow, if any, is refunded to the initiator at once. The participant
/// cannot know how far the interrupted `perform` went, so `release` may come after part or
/// all of its work was done; what it had done stands. An award whose end was recorded
/// and committed before the crash is left as it ended: nothing is released for work that
/// was reported. The report is recorded before it is sent, and committed before the pay
/// for it is collected (unless storage fails then: the pay is collected all the same, the
/// failure logged, as the work was done). A paid report keeps its payment with the
/// dialogue until the pay is collected: a participant that crashed after the report's commit
/// and before the escrow's release reached the ledger collects it when it restarts, as the
/// initiator, who never heard the report, would otherwise be refunded at the escrow's
/// deadline for work done. An unpaid report's commit is requested but not
/// awaited, so a real
/// crash within it (a few milliseconds) can lose the record, and the restarted participant
/// then releases the proposal of work it reported but was not paid for.
#[async_trait::async_trait]
pub trait Participant: Send + Sync + 'static {
    /// The task, as the initiator describes it.
    type Task: DeserializeOwned + WireSchema + Send;
    /// What this participant proposes.
    type Proposal: Serialize + DeserializeOwned + WireSchema + Send;
    /// What performing the task gives.
    type Result: Serialize + WireSchema + Send;

    /// A proposal for `task` from `initiator` and until when it is held (ms since the Unix
    /// epoch), or `None` to refuse. A proposal given no hold is held until
    /// [`DEFAULT_HOLD_AFTER_DEADLINE`] past the call's deadline, and at most
    /// [`MAX_DEFAULT_HOLD`] from when it is made, never longer: whatever it
    /// holds is released then if no decision came.
    ///
    /// An evaluation that is not ready at once goes on beside the agent's handlers, so the
    /// participant's other dialogues are not held up by it: at most [`MAX_EVALUATING`] run
    /// so at once (a call beyond them is refused as [`Declined::Busy`]), side by side and
    /// beside [`release`](Participant::release), and one still running at its call's
    /// deadline is dropped.
    async fn evaluate(&self, initiator: Address, task: Self::Task) -> Option<(Self::Proposal, Option<u64>)>;

    /// Performs an awarded task. `Err` says why not: [`Unperformed::Failed`] (a `String`
    /// converts to it) is reported as a failure; [`Unperformed::Cancelled`] withdraws from
    /// the award (the participant's cancel). Either way the initiator's escrow, if any, goes
    /// back to it.
    async fn perform(&self, initiator: Address, proposal: Self::Proposal) -> Result<Self::Result, Unperformed>;

    /// The hold on `proposal` ended without an award.
    async fn release(&self, _initiator: Address, _proposal: Self::Proposal) {}

    /// The price `proposal` asks, in the ledger's smallest unit: what an award paid through
    /// escrow ([`award_and_pay`]) must lock, exactly. A paid award is checked on the ledger
    /// before [`perform`](Participant::perform) ([`PaymentRefused`]) and refused, its
    /// proposal released, if the check fails; an award of a priced proposal that comes
    /// unpaid ([`award`]) is refused the same way ([`PaymentRefused::Unpaid`]). `None`, the
    /// default: this participant works unpaid, and refuses every paid award.
    fn price(&self, _proposal: &Self::Proposal) -> Option<u128> {
        None
    }
}

/// A proposal a participant holds, kept with its dialogue ([`Dialogue::data`]) in the same
/// record as the step that made it, so a restarted participant still honours an award and
/// still releases the hold when it ends.
///
/// [`Dialogue::data`]: crate::dialogue::Dialogue::data
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct HeldProposal<P> {
    pub(super) proposal: P,
    pub(super) hold_until_ms: u64,
}

/// The proposal held in `data` (a [`HeldProposal`] kept with a dialogue), decoded as `P`.
pub(super) fn held_proposal<P: DeserializeOwned>(data: Option<Data>) -> Option<P> {
    data?.decode::<HeldProposal<P>>().ok().map(|held| held.proposal)
}

/// Makes `agent` a contract-net participant played by `participant`. Messages that do not
/// fit a dialogue, and a participant's own messages ([`Answer`], [`Report`]) sent to it,
/// are refused and the sender told why ([`Refused`]).
pub fn serve<P: Participant>(agent: &mut Agent, participant: Arc<P>) -> Book {
    let book = Book::default();
    let holds = Holds::default();
    let performing = Performing::default();
    let work = crate::work::Work::of(agent);
    {
        // Dialogues from before a restart are read when the agent starts, not when the
        // first call comes; the proposals they hold are released when their holds end, and
        // the awards stopped short by a crash are ended.
        let (book, holds, participant) = (book.clone(), holds.clone(), participant.clone());
        agent.on_startup(move |ctx: Context| {
            let (book, holds, participant) = (book.clone(), holds.clone(), participant.clone());
            async move {
                holds.start(&ctx, &participant, &book);
                let dialogues = match book.get(&ctx, PARTICIPANT) {
                    Ok(dialogues) => dialogues,
                    Err(e) => return tracing::error!(error = %e, "cannot load the contract-net dialogues"),
                };
                let mut interrupted = Vec::new();
                for dialogue in dialogues.all() {
                    let Some(kept) = dialogue.data else { continue };
                    if let Ok(held) = kept.decode::<HeldProposal<serde::de::IgnoredAny>>() {
                        let (id, initiator) = (dialogue.id, dialogue.peer);
                        holds.hold(&ctx, &participant, &book, id, held.hold_until_ms, Hold { initiator, kept });
                    } else if dialogue.state == "awarded" || dialogue.state == "cancelled" {
                        // A cancelled award keeps what it had in hand until its work ends (see
                        // the cancel below): found here, the crash cut that work short.
                        if let Ok(in_hand) = kept.decode::<InHand<HeldProposal<P::Proposal>>>() {
                            interrupted.push((dialogue.id, dialogue.peer, in_hand));
                        }
                    } else if dialogue.state == "done" {
                        if let Ok(Unpaid { unpaid }) = kept.decode::<Unpaid>() {
                            collect_on_startup(&ctx, &book, dialogue.id, unpaid, kept);
                        }
                    }
                }
                if !interrupted.is_empty() {
                    end_interrupted(&ctx, dialogues, &participant, interrupted);
                }
            }
        });
    }
    {
        let holds = holds.clone();
        agent.on_shutdown(move |_ctx: Context| {
            let holds = holds.clone();
            async move { holds.stop_all() }
        });
    }
    let mut served = protocol_of::<P>();
    {
        let answering = Answering::new(book.clone(), participant.clone(), holds.clone(), work.clone());
        served = served.on_message(move |ctx: Context, from: Address, cfp: Cfp| {
            let answering = answering.clone();
            async move {
                let Answering { book, participant, holds, .. } = &answering;
                let (Ok(dialogues), Some(id)) = (book.get(&ctx, PARTICIPANT), ctx.session()) else { return };
                let step = Step::default().until(cfp.deadline_ms);
                // A revised call voids the earlier proposal in this dialogue.
                let earlier = match dialogues.incoming_with(Cfp::NAME, id, from, now_ms(), step) {
                    Ok(earlier) => earlier,
                    Err(refused) => return tell(&ctx, id, from, refused).await,
                };
                // Only a revised call finds a proposal held in its dialogue.
                if earlier.is_some() {
                    holds.stop(id);
                    if let Some(earlier) = held_proposal::<P::Proposal>(earlier) {
                        participant.release(from, earlier).await;
                    }
                }
                answering.answer(ctx, from, id, cfp).await;
            }
        });
    }
    {
        let (book, participant, holds, performing, work) =
            (book.clone(), participant.clone(), holds.clone(), performing.clone(), work);
        served = served.on_message(move |ctx: Context, from: Address, accept: Accept| {
            let (book, participant, holds, performing, work) =
                (book.clone(), participant.clone(), holds.clone(), performing.clone(), work.clone());
            async move {
                let (Ok(dialogues), Some(id)) = (book.get(&ctx, PARTICIPANT), ctx.session()) else { return };
                // The award keeps what it is for until its end is recorded, so a participant
                // restarted after a crash finds it ([`Participant`]).
                let before = dialogues.get(id).and_then(|dialogue| dialogue.data);
                let in_hand = before.as_ref().and_then(|held| in_hand(held, accept.payment.as_ref()));
                let step = in_hand.as_ref().map_or_else(Step::default, |kept| Step::default().keeping(kept.clone()));
                let held = match dialogues.incoming_with("Accept", id, from, now_ms(), step) {
                    Ok(held) => held,
                    Err(refused) => return tell(&ctx, id, from, refused).await,
                };
                let in_hand = match (held == before, in_hand) {
                    (true, in_hand) => in_hand,
                    // The hold ended (or a revised call came) between the read and the
                    // step: the award holds nothing, and keeps nothing in hand.
                    (false, Some(kept)) => {
                        if let Err(e) = dialogues.take_data(id, Some(&kept)) {
                            tracing::warn!(error = %e, "an award that holds nothing could not be noted so");
                        }
                        None
                    }
                    (false, None) => None,
                };
                holds.stop(id);
                let Ok(reply) = ctx.defer_reply() else { return };
                let paid_by = accept.payment.map(|payment| (payment, ctx.wallet()));
                // Performed on a task of its own: the work may take long (a lead time, a
                // computation), and the participant goes on answering other calls. Not
                // `ctx.spawn` alone: a graceful stop lets the work in hand end (a `perform`
                // is not cancel-safe); a crash ends it ([`Work`](crate::work::Work)).
                performing.start(id);
                let performed = performing.clone();
                let task_ctx = ctx.clone();
                work.spawn(&task_ctx, async move {
                    // Committed before the work starts: a crash during it is found on restart.
                    commit_soon(&ctx, "an award");
                    let report = match held_proposal::<P::Proposal>(held) {
                        Some(proposal) => match checked(participant.price(&proposal), id, &paid_by, accept.payer).await
                        {
                            // Not performed: what the proposal held goes back.
                            Err(refused) => {
                                tracing::info!(%from, error = %refused, "an award refused before performing: its payment");
                                participant.release(from, proposal).await;
                                Report::Failure { cause: Failure::PaymentRefused { refused } }
                            }
                            Ok(()) => match participant.perform(from, proposal).await {
                                Ok(result) => match serde_json::to_value(result) {
                                    Ok(result) => Report::Done { result },
                                    Err(e) => Report::Failure { cause: Failure::Unencodable { detail: e.to_string() } },
                                },
                                Err(Unperformed::Failed(detail)) => {
                                    Report::Failure { cause: Failure::Failed { detail } }
                                }
                                Err(Unperformed::Cancelled { cause, detail }) => Report::Cancelled { cause, detail },
                            },
                        },
                        None => Report::Failure { cause: Failure::HoldEnded },
                    };
                    let paid_by = paid_by.and_then(|(payment, wallet)| Some((payment, wallet.ok()?)));
                    let Some(dialogues) = book.dialogues() else { return };
                    let cancelled = !performed.finish(id);
                    // A paid award reported done keeps its payment until the pay is
                    // collected: a restart after the report's commit collects it then.
                    let unpaid = match (&report, &paid_by) {
                        (Report::Done { .. }, Some((payment, _))) => Data::encode(&Unpaid { unpaid: payment.clone() }).ok(),
                        _ => None,
                    };
                    let step = unpaid.clone().map_or_else(Step::default, |unpaid| Step::default().keeping(unpaid));
                    if cancelled
                        || allowed(dialogues.outgoing_with(report_step(&report), id, now_ms(), step), "report").is_err()
                    {
                        // Cancelled while it was performed, or before it was reported: the
                        // initiator no longer waits, and does not pay. The work ended: a
                        // restart must not take it for one stopped short (the cancel kept it
                        // in hand until now, as did one that storage could not record).
                        if let Some((payment, wallet)) = &paid_by {
                            give_back(wallet, id, payment).await;
                        }
                        if let Some(kept) = &in_hand {
                            record_work_ended(dialogues, id, kept).await;
                        }
                    } else {
                        // The report is recorded before it is sent or paid: a participant
                        // restarted after its commit finds the award ended and releases
                        // nothing it reported.
                        let done = matches!(report, Report::Done { .. });
                        if let (true, Some((payment, wallet))) = (done, &paid_by) {
                            // Done, and not cancelled meanwhile: the pay is collected before
                            // saying so, and only once the end is on disk, so that no crash
                            // finds work it was paid for still in hand.
                            commit_now(&ctx, "a report").await;
                            if collect(wallet, id, payment).await {
                                paid_for(dialogues, id, unpaid.as_ref());
                            }
                        } else {
                            // Requested, not awaited: nothing is paid on it, and the wait
                            // would hold up the report.
                            commit_soon(&ctx, "a report");
                        }
                        // A send that fails ends like silence: the initiator's wait times
                        // out, and its escrow is refunded at the deadline unless released.
                        let _ = reply.send(report).await;
                        // Not done: the pay goes back now rather than at its deadline; after
                        // the report, so a slow ledger does not make the report late.
                        if let (false, Some((payment, wallet))) = (done, &paid_by) {
                            give_back(wallet, id, payment).await;
                        }
                    }
                });
            }
        });
    }
    let release = |book: Book,
                   participant: Arc<P>,
                   holds: Holds,
                   performing: Performing,
                   ctx: Context,
                   from: Address,
                   step: &'static str| async move {
        let (Ok(dialogues), Some(id)) = (book.get(&ctx, PARTICIPANT), ctx.session()) else { return };
        // An award in progress, cancelled, keeps what it has in hand with the closed dialogue
        // until its work ends (the work's task takes it out then): a crash before that finds
        // it on restart and ends it, its proposal released and its escrow refunded. Dropped
        // with the cancel's step, a crash in between would leave the proposal held for good
        // (nothing else releases it) and the escrow locked until its deadline.
        let in_hand = match step {
            "Cancel" => dialogues.get(id).filter(|d| d.state == "awarded").and_then(|d| d.data),
            _ => None,
        };
        let kept = in_hand.map_or_else(Step::default, |in_hand| Step::default().keeping(in_hand));
        let (held, recorded) = match dialogues.incoming_with(step, id, from, now_ms(), kept) {
            Ok(held) => (held, true),
            // Allowed, but storage could not record it: the initiator's decision stands all
            // the same (its cancel must stop the work), so it is acted on; what is held is
            // still in the dialogue, and released once storage records that (below).
            Err(DialogueError::Storage { reason, .. }) => {
                tracing::warn!(step, %reason, "a contract-net decision acted on unrecorded: storage failed");
                (dialogues.get(id).and_then(|dialogue| dialogue.data), false)
            }
            Err(refused) => return tell(&ctx, id, from, refused).await,
        };
        holds.stop(id);
        // An award in progress, cancelled: its task reports nothing and gives the payment
        // back when the work ends (an award keeps no proposal in its dialogue: what it held
        // is the work's).
        if step == "Cancel" && performing.cancel(id) {
            return;
        }
        // A proposal decided unrecorded is released once storage records that it holds
        // nothing (the holds' timer tries every second), not now: a crash before that would
        // restart with the proposal still held in its dialogue, and release it a second time.
        let held_proposal_kept =
            held.as_ref().filter(|kept| kept.decode::<HeldProposal<serde::de::IgnoredAny>>().is_ok());
        if let (false, Some(kept)) = (recorded, held_proposal_kept) {
            let hold = Hold { initiator: from, kept: kept.clone() };
            return holds.hold(&ctx, &participant, &book, id, now_ms(), hold);
        }
        if let Some(proposal) = held_proposal::<P::Proposal>(held) {
            participant.release(from, proposal).await;
        }
    };
    {
        let (book, participant, holds, performing) =
            (book.clone(), participant.clone(), holds.clone(), performing.clone());
        served = served.on_message(move |ctx: Context, from: Address, _: Reject| {
            release(book.clone(), participant.clone(), holds.clone(), performing.clone(), ctx, from, "Reject")
        });
    }
    {
        let (book, participant, holds, performing) = (book.clone(), participant, holds, performing);
        served = served.on_message(move |ctx: Context, from: Address, _: Cancel| {
            release(book.clone(), participant.clone(), holds.clone(), performing.clone(), ctx, from, "Cancel")
        });
    }
    agent.include(served);
    refuse_participants_messages(agent, &book);
    sweep(agent, &book, PARTICIPANT);
    book
}

/// How often, and how many times at most, the end of a cancelled award's work is tried
/// again while storage cannot record it: an hour, as long as a storage outage is waited
/// out elsewhere before giving up.
const RECORD_RETRY: Duration = Duration::from_secs(1);
const RECORD_RETRIES: u32 = 3_600;

/// Records that the work of dialogue `id`'s cancelled award ended, taking `kept` (what it had
/// in hand) out of its record, and tries again while storage fails: left in the record, a
/// later restart would take the work for one cut short and release a proposal whose work
/// was done (a seat already used offered again).
async fn record_work_ended(dialogues: &Dialogues, id: u128, kept: &Data) {
    for attempt in 0..RECORD_RETRIES {
        match dialogues.take_data(id, Some(kept)) {
            Ok(_) => return,
            Err(e) if attempt == 0 => {
                tracing::warn!(error = %e, "a cancelled award's end could not be recorded; retrying")
            }
            Err(_) => {}
        }
        tokio::time::sleep(RECORD_RETRY).await;
    }
    tracing::error!(dialogue = %format!("{id:032x}"), "a cancelled award's end could not be recorded; a restart will release its proposal");
}

/// Whether the award of dialogue `id`, for a proposal whose price is `price`
/// ([`Participant::price`]), may be performed: unpaid if unpriced, paid ([`check_payment`])
/// into `paid_by`'s wallet by `payer` if priced.
async fn checked(
    price: Option<u128>,
    id: u128,
    paid_by: &Option<(Payment, Result<agent_core::Wallet, agent_core::WalletError>)>,
    payer: Option<Address>,
) -> Result<(), PaymentRefused> {
    let Some((payment, wallet)) = paid_by else {
        // A priced proposal is not worked for free.
        return price.map_or(Ok(()), |price| Err(PaymentRefused::Unpaid { price }));
    };
    let wallet = wallet.as_ref().map_err(|e| PaymentRefused::NoWallet(e.to_string()))?;
    let price = price.ok_or(PaymentRefused::NoPrice)?;
    check_payment(wallet, id, payment, payer, price).await
}

/// Refunds the escrow of an award this participant did not do (it failed, withdrew, or
/// refused the payment), if the escrow names this award and this participant is its
/// arbiter: the payer has its money back at once instead of at the escrow's deadline. An
/// escrow that is not this participant's to decide is left to its deadline.
pub(super) async fn give_back(wallet: &agent_core::Wallet, id: u128, payment: &Payment) {
    let escrow = match wallet.escrow(payment.escrow).await {
        Ok(Some(escrow)) => escrow,
        Ok(None) => return,
        Err(e) => return tracing::warn!(escrow = %payment.escrow, error = %e, "the ledger could not be read"),
    };
    if escrow.arbiter != wallet.address() || escrow.deal != Some(deal_of(id)) {
        return tracing::debug!(escrow = %payment.escrow, "an escrow not this participant's to refund is left to its deadline");
    }
    if let Err(e) = wallet.refund(payment.escrow).await {
        tracing::warn!(escrow = %payment.escrow, error = %e, "an award not done could not be refunded; it is at its deadline");
    }
}

/// What a participant keeps with an award it reported done, until its pay is collected.
#[derive(Serialize, Deserialize)]
struct Unpaid {
    unpaid: Payment,
}

/// The pay for dialogue `id`'s award is collected: what was kept for it (`unpaid`) is
/// taken out, so a restart does not collect it again (though that would pay nothing twice:
/// the ledger settles an escrow once).
fn paid_for(dialogues: &Dialogues, id: u128, unpaid: Option<&Data>) {
    if let Err(e) = dialogues.take_data(id, unpaid) {
        tracing::debug!(dialogue = %format!("{id:032x}"), error = %e, "a collected pay is still noted as unpaid");
    }
}

/// Collects, on a task of the agent, the pay of dialogue `id`'s award, reported done before
/// a crash that came before the pay was collected: otherwise the escrow would go back to
/// the initiator at its deadline, the work done.
fn collect_on_startup(ctx: &Context, book: &Book, id: u128, payment: Payment, kept: Data) {
    let wallet = match ctx.wallet() {
        Ok(wallet) => wallet,
        Err(e) => {
            return tracing::warn!(dialogue = %format!("{id:032x}"), error = %e, "a task's pay cannot be collected")
        }
    };
    tracing::info!(dialogue = %format!("{id:032x}"), "collecting the pay of a task reported done before a restart");
    let book = book.clone();
    ctx.spawn(async move {
        if let (true, Some(dialogues)) = (collect(&wallet, id, &payment).await, book.dialogues()) {
            paid_for(dialogues, id, Some(&kept));
        }
    });
}

/// Releases to this participant the escrow that paid for the task of dialogue `id`, now
/// done: if it is open on the ledger for this deal with this participant's wallet as its
/// beneficiary and arbiter. Reads and releases it until the escrow's deadline, while the
/// ledger cannot be reached ([`release_by`]); after it, the escrow belongs to the payer's
/// refund. False if the ledger could not be read by then: what was kept for the pay is
/// kept, for a later start to try again.
async fn collect(wallet: &agent_core::Wallet, id: u128, payment: &Payment) -> bool {
    // Read again while the ledger cannot be reached: after a crash, this participant is
    // the only one left to release it (the initiator never heard the report).
    let give_up_ms = refundable_after(payment.deliver_by_ms);
    let read = || wallet.escrow(payment.escrow);
    let escrow = match retry_until(give_up_ms, payment.escrow, "the ledger could not be read", read).await {
        Ok(Some(escrow)) => escrow,
        Ok(None) => {
            tracing::warn!(escrow = %payment.escrow, "the escrow paying for a task is not open");
            return true;
        }
        Err(e) => {
            tracing::warn!(escrow = %payment.escrow, error = %e, "the ledger could not be read before the escrow's deadline");
            return false;
        }
    };
    let mine = escrow.beneficiary == wallet.address() && escrow.arbiter == wallet.address();
    if !mine || escrow.deal != Some(deal_of(id)) {
        tracing::warn!(escrow = %payment.escrow, "the escrow paying for a task is not this participant's to release");
        return true;
    }
    if !release_by(wallet, payment.escrow, escrow.deadline_ms).await {
        tracing::warn!(escrow = %payment.escrow, "a task was done but its escrow could not be released");
    }
    true
}
