//! Awards a participant was performing when its host crashed: kept in hand with their
//! dialogues while they are performed, found on restart, recorded as failed, what they held
//! released and their escrow refunded (see [`Participant`]).

use super::participant::{give_back, HeldProposal};
use super::*;

/// An award being performed, kept with its dialogue ([`Dialogue::data`]) from the award
/// until the work's end is recorded. `in_hand` is the [`HeldProposal`] the award was for;
/// its field names differ from a hold's, so the one is never taken for the other.
///
/// [`Dialogue::data`]: crate::dialogue::Dialogue::data
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct InHand<H> {
    pub(super) in_hand: H,
    /// The award's payment, if it came with one: refunded if the work was stopped short.
    #[serde(default)]
    pub(super) payment: Option<Payment>,
}

/// An award found in hand on startup: its dialogue, its initiator, and what it kept.
pub(super) type Interrupted<P> = (u128, Address, InHand<HeldProposal<P>>);

/// What an award of the proposal held in `held` (a [`HeldProposal`]), paid with `payment`,
/// keeps with its dialogue; `None` if `held` is not a hold.
pub(super) fn in_hand(held: &Data, payment: Option<&Payment>) -> Option<Data> {
    let held = held.decode::<HeldProposal<serde_json::Value>>().ok()?;
    Data::encode(&InHand { in_hand: held, payment: payment.cloned() }).ok()
}

/// Has `ctx`'s agent's storage commit what it wrote, and waits for it: before money moves
/// on a step. A failed commit is logged and the step goes ahead, as recorded in memory.
pub(super) async fn commit_now(ctx: &Context, what: &str) {
    let flushed = match ctx.storage() {
        Ok(storage) => storage.flush().await,
        Err(error) => return tracing::warn!(what, %error, "a contract-net step could not be committed"),
    };
    if let Err(error) = flushed {
        tracing::warn!(what, %error, "a contract-net step could not be committed; it goes ahead");
    }
}

/// Has `ctx`'s agent's storage commit what it wrote, before `what` is acted on, without
/// waiting for the commit: a store that commits on request (a simulated host's) commits
/// it here and now; the bureau's committer thread is woken to commit it at once. Waiting
/// would hold up every award and report by a commit on another thread (and a test's paused
/// clock would jump meanwhile, timing out the initiator's wait), so a real crash within
/// that commit may still lose the step: a restart then finds the dialogue as it was.
pub(super) fn commit_soon(ctx: &Context, what: &str) {
    let storage = match ctx.storage() {
        Ok(storage) => storage,
        Err(error) => return tracing::warn!(what, %error, "a contract-net step could not be committed"),
    };
    // Polled once: the first poll asks for the commit (and makes it, on a store that
    // commits on request); dropping the wait after it cancels nothing else.
    let flush = std::pin::pin!(storage.flush());
    let mut asked = std::task::Context::from_waker(std::task::Waker::noop());
    if let std::task::Poll::Ready(Err(error)) = std::future::Future::poll(flush, &mut asked) {
        tracing::warn!(what, %error, "a contract-net step could not be committed; it goes ahead");
    }
}

/// Ends the awards `interrupted` (dialogue, initiator, what it kept in hand), found in
/// hand when the participant started: their work was stopped short by a crash. Each is
/// recorded as failed (one cancelled while performed stays cancelled, what it kept in hand
/// taken out), so a late cancel, or a report of the old work, is refused; with
/// its commit asked for, the award's escrow is refunded (this participant is its arbiter) and
/// `participant` releases what the proposal held.
///
/// Released, though the interrupted `perform` may have done part or all of its work: a
/// `perform` that had ended would have recorded its end (and had it committed) before
/// reporting or collecting its pay, so no one was told of, or paid for, this work, and
/// the initiator takes it as not done (its escrow comes back). Keeping the hold instead
/// would keep it for good: nothing else ends an award no one performs.
pub(super) fn end_interrupted<P: Participant>(
    ctx: &Context,
    dialogues: &Dialogues,
    participant: &Arc<P>,
    interrupted: Vec<Interrupted<P::Proposal>>,
) {
    let mut ended = Vec::with_capacity(interrupted.len());
    for (id, initiator, in_hand) in interrupted {
        let end = match dialogues.get(id) {
            // Cancelled while performed: the dialogue is closed already, and only what it
            // kept in hand is taken out, so a second crash releases nothing again.
            Some(dialogue) if dialogue.state == "cancelled" => dialogues.take_data(id, None).map(|_| None),
            _ => dialogues.outgoing_named("Failure", id, now_ms()),
        };
        match allowed(end, "Failure") {
            Ok(_) => ended.push((id, initiator, in_hand)),
            // An awarded dialogue may always fail: only a dialogue that moved on meanwhile
            // is refused, and it holds nothing in hand any more.
            Err(e) => tracing::debug!(error = %e, "an award stopped short had ended already"),
        }
    }
    // Committed before anything is released: a second crash finds these ended, and
    // nothing is released twice.
    commit_soon(ctx, "the end of awards stopped short");
    let wallet = ctx.wallet().ok();
    for (id, initiator, InHand { in_hand, payment }) in ended {
        tracing::info!(dialogue = %format!("{id:032x}"), "an award stopped short by a crash is released, unreported");
        let (participant, wallet) = (Arc::clone(participant), wallet.clone());
        // On a task of its own, as a hold's release is: a slow release holds up neither
        // the agent's start nor the others.
        ctx.spawn(async move {
            if let (Some(payment), Some(wallet)) = (payment, wallet) {
                give_back(&wallet, id, &payment).await;
            }
            participant.release(initiator, in_hand.proposal).await;
        });
    }
}
