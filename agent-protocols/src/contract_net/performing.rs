//! [`Performing`]: the awards a participant is working on, so that the initiator's cancel
//! of an award in progress stops the work, frees what the proposal held and returns the
//! payment at once, instead of letting the work run on for nobody.

use super::participant::held_proposal;
use super::*;

/// A participant agent's awards in progress, by dialogue. Touched once per award and once
/// per cancel, never on a call.
#[derive(Clone, Default)]
pub(super) struct Performing {
    awards: Arc<parking_lot::Mutex<HashMap<u128, Award>>>,
}

/// One award being performed: the task doing it, what its proposal held, and the payment
/// that goes back if it is cancelled.
struct Award {
    /// `None` for the moment between the award's entry and its task's start.
    task: Option<tokio::task::AbortHandle>,
    held: Option<Data>,
    paid_by: Option<(Payment, agent_core::Wallet)>,
}

impl Performing {
    /// Starts `perform` on a task of its own for the award of dialogue `id`. The task must
    /// call [`finish`](Self::finish) before it reports; if that says the award was
    /// cancelled, it reports nothing (the cancel did the rest). A plain tokio task, not the
    /// agent's ([`Context::spawn`]): a bureau that shuts down lets the work in hand finish,
    /// as it lets each agent finish the message in hand.
    pub(super) fn start(
        &self,
        id: u128,
        held: Option<Data>,
        paid_by: Option<(Payment, agent_core::Wallet)>,
        perform: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let guard = Finished { performing: self.clone(), id };
        let task = async move {
            // Dropped at the end, however the task ends (done, aborted, panicked): an award
            // whose task is gone is no longer in progress.
            let _guard = guard;
            perform.await;
        };
        // In before the task starts, so the task finds it; the task is spawned outside the
        // lock (a runtime shutting down drops it at once, and its guard takes the lock).
        self.awards.lock().insert(id, Award { task: None, held, paid_by });
        let task = tokio::spawn(task).abort_handle();
        // Not there if finished or cancelled already: a cancel before this point could not
        // abort the work, which then ends without a report (finish says it was cancelled).
        if let Some(award) = self.awards.lock().get_mut(&id) {
            award.task = Some(task);
        }
    }

    /// The task performing dialogue `id` is done with the work: false if the award was
    /// cancelled meanwhile.
    pub(super) fn finish(&self, id: u128) -> bool {
        self.awards.lock().remove(&id).is_some()
    }

    /// The initiator cancelled the award of dialogue `id` (its cancel was recorded): the
    /// work stops where it is (the perform future is dropped at its next await), what the
    /// proposal held is released, and the payment, if this participant may decide it, goes
    /// back to the payer at once. False if no award of `id` was in progress.
    pub(super) async fn cancel<P: Participant>(&self, participant: &P, initiator: Address, id: u128) -> bool {
        let Some(award) = self.awards.lock().remove(&id) else { return false };
        if let Some(task) = award.task {
            task.abort();
        }
        if let Some(proposal) = held_proposal::<P::Proposal>(award.held) {
            participant.release(initiator, proposal).await;
        }
        if let Some((payment, wallet)) = award.paid_by {
            super::participant::give_back(&wallet, id, &payment).await;
        }
        true
    }
}

/// Forgets an award when its task ends without [`Performing::finish`] (it panicked).
struct Finished {
    performing: Performing,
    id: u128,
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.performing.awards.lock().remove(&self.id);
    }
}
