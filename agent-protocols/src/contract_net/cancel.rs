//! The initiator withdrawing a call, or the awards of it in progress, and saying truly
//! what came of it: whom it told, and whom it could not tell because its storage failed.

use std::collections::HashSet;

use super::initiator::Kept;
use super::*;

/// Withdraws a call: every proposer not yet decided, every winner still performing its
/// award, and every participant that has not answered, is sent [`Cancel`] with the cause
/// [`CancelCause::CallWithdrawn`] and `detail`, if given, as its detail, and their dialogues
/// are closed. A proposer releases what it held. A winner served by [`serve`] finishes the
/// work in hand (a `perform` is not interrupted halfway), reports nothing and refunds the
/// award's escrow as soon as the work ends; the [`award`] (or [`award_and_pay`]) waiting
/// for its report then gives [`AwardFailure::Cancelled`] for it, unless its report crossed
/// the cancel (then what it reported stands). Returns [`Outcome::Cancelled`] naming them
/// all.
///
/// A participant is told only once its cancel is recorded, so the two sides never disagree
/// on whether the dialogue is over while the initiator runs (recorded is not committed: a
/// crash before the next commit loses the cancel, and the restarted initiator shows the
/// dialogue as it stood before). If the agent's storage fails to record some, this
/// returns [`ContractNetError::CancelNotRecorded`]: those participants were told nothing and
/// their dialogues are unchanged (a later `cancel` may retry them), and the error names
/// the others, which were told. If no dialogue of `called` is left to cancel (all decided
/// already: awarded, rejected, cancelled or expired), it returns
/// [`ContractNetError::NothingToCancel`], so a cancel never claims what did not happen.
pub async fn cancel<P, R>(
    ctx: &Context,
    book: &Book,
    called: &Called<P>,
    detail: Option<&str>,
) -> Result<Outcome<R>, ContractNetError> {
    let dialogues = book.get(ctx, INITIATOR)?;
    let silent = unanswered(dialogues, called.call, &called.silent);
    let mut cancelled = Vec::new();
    let mut unrecorded = Vec::new();
    let mut failure = None;
    for (id, to) in called.proposals.iter().map(|p| (p.dialogue, p.from)).chain(silent) {
        match dialogues.outgoing_named("Cancel", id, now_ms()) {
            Ok(_) => {
                // A participant that is gone loses nothing by not hearing it.
                let cancel = Cancel { cause: CancelCause::CallWithdrawn, detail: detail.map(str::to_owned) };
                let _ = ctx.send_in(id, to, cancel).await;
                cancelled.push(to);
            }
            // Not recorded: telling the participant would close its side of a dialogue
            // that stays open on this one.
            Err(error @ DialogueError::Storage { .. }) => {
                tracing::warn!(%to, %error, "a cancel could not be recorded; the participant is not told");
                unrecorded.push(to);
                failure.get_or_insert(error);
            }
            // Decided already (or forgotten): nothing left to cancel in it.
            Err(_) => {}
        }
    }
    if let Some(error) = failure {
        return Err(ContractNetError::CancelNotRecorded { cancelled, unrecorded, error: Box::new(error) });
    }
    match cancelled.is_empty() {
        true => Err(ContractNetError::NothingToCancel),
        false => Ok(Outcome::Cancelled { cancelled }),
    }
}

/// The dialogues of call `call` still waiting for an answer from one of `silent`.
fn unanswered(dialogues: &Dialogues, call: u128, silent: &[Address]) -> Vec<(u128, Address)> {
    if silent.is_empty() {
        return Vec::new();
    }
    let (silent, call) = (silent.iter().collect::<HashSet<_>>(), format!("{call:032x}"));
    let of_call = |data: &Option<Data>| {
        let kept = data.as_ref().and_then(|data| data.decode::<Kept<serde::de::IgnoredAny>>().ok());
        kept.is_some_and(|kept| kept.call == call)
    };
    let waiting = dialogues.all().into_iter().filter(|d| d.state == "called" && silent.contains(&d.peer));
    waiting.filter(|d| of_call(&d.data)).map(|d| (d.id, d.peer)).collect()
}
