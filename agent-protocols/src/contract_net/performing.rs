//! [`Performing`]: the awards a participant is working on, so that the initiator's cancel
//! of an award in progress is honoured when the work ends: no report, and the payment
//! back to the payer at once, instead of at the escrow's deadline.
//!
//! The work itself is not interrupted: a `perform` future dropped halfway (between paying
//! a sub-supplier and noting it, say) could leave the participant's own books half-written.

use super::*;

/// A participant agent's awards in progress, by dialogue. Touched once per award and once
/// per cancel, never on a call.
#[derive(Clone, Default)]
pub(super) struct Performing {
    awards: Arc<parking_lot::Mutex<std::collections::HashSet<u128>>>,
}

impl Performing {
    /// The award of dialogue `id` is being performed.
    pub(super) fn start(&self, id: u128) {
        self.awards.lock().insert(id);
    }

    /// The work for dialogue `id` has ended: false if the award was cancelled meanwhile
    /// (then nothing is reported, and the payment goes back).
    pub(super) fn finish(&self, id: u128) -> bool {
        self.awards.lock().remove(&id)
    }

    /// The initiator cancelled the award of dialogue `id` (its cancel was acted on): false
    /// if no award of `id` was in progress.
    pub(super) fn cancel(&self, id: u128) -> bool {
        self.awards.lock().remove(&id)
    }
}
