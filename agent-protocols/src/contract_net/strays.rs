//! A participant's refusal of a participant's own messages ([`Answer`], [`Report`]) sent to
//! it, and how it shares those messages with the initiator side of an agent that is both.

use super::*;

/// Makes `agent`, a participant whose dialogues are in `participant`, refuse answers and
/// reports (a participant's messages, never an initiator's) with a [`Refused`]: from its
/// initiator they are the wrong role, from anyone else another's dialogue or none. On an
/// agent that is also an initiator, [`refuse_strays_serving`] joins the initiator's book to
/// `participant` (its `initiator` slot): what belongs to one of the initiator's
/// dialogues, or to none, is then the initiator's to answer (a late proposal is rejected as
/// late).
pub(super) fn refuse_participants_messages(agent: &mut Agent, participant: &Book) {
    if agent.handles::<Answer>() || agent.handles::<Report>() {
        // The agent answers them already (an initiator side added first).
        return;
    }
    let initiator = Arc::clone(&participant.initiator);
    let (book, slot) = (participant.clone(), initiator.clone());
    agent.on_message(move |ctx: Context, from: Address, answer: Answer| {
        let (book, slot) = (book.clone(), slot.clone());
        async move { refuse(&ctx, &book, &slot, from, answer_step(&answer)).await }
    });
    let (book, slot) = (participant.clone(), initiator);
    agent.on_message(move |ctx: Context, from: Address, report: Report| {
        let (book, slot) = (book.clone(), slot.clone());
        async move { refuse(&ctx, &book, &slot, from, report_step(&report)).await }
    });
}

/// Refuses `step` (an answer or a report) from `from`: the initiator's to answer if its
/// dialogue is the initiator side's, or nobody's; otherwise the participant's, whose
/// dialogue refuses it as from the wrong role (or its sender as no party).
async fn refuse(ctx: &Context, participant: &Book, initiator: &OnceLock<Book>, from: Address, step: &str) {
    let Some(id) = ctx.session() else { return };
    let Ok(dialogues) = participant.get(ctx, PARTICIPANT) else { return };
    if let Some(initiator) = initiator.get() {
        let initiators = initiator.dialogues().is_some_and(|d| d.get(id).is_some());
        if initiators || dialogues.get(id).is_none() {
            return refuse_stray(ctx, initiator, from, step).await;
        }
    }
    // Never accepted: the rules let only a participant send it, and here the peer is the
    // initiator; the check names what its dialogue expects instead.
    match dialogues.incoming_named(step, id, from, now_ms()) {
        Err(refused) => tell(ctx, id, from, refused).await,
        Ok(_) => tracing::error!(step, "a participant's dialogue accepted a participant's message from its peer"),
    }
}
