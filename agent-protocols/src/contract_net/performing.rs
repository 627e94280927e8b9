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
    task: tokio::task::AbortHandle,
    held: Option<Data>,
    paid_by: Option<(Payment, agent_core::Wallet)>,
}

impl Performing {
    /// Starts `perform` as the agent's task ([`Context::spawn`]) for the award of dialogue
    /// `id`. The task must call [`finish`](Self::finish) before it reports; if that says
    /// the award was cancelled, it reports nothing (the cancel did the rest).
    pub(super) fn start(
        &self,
        ctx: &Context,
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
        // Spawned under the lock: the task cannot look for its award before it is there.
        let mut awards = self.awards.lock();
        let task = ctx.spawn(task);
        awards.insert(id, Award { task, held, paid_by });
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
        award.task.abort();
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
