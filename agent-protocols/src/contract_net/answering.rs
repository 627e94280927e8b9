//! A participant's answer to a call for proposals: made in the call's handler when
//! [`Participant::evaluate`] is ready at once, and on a task beside the agent's handlers
//! when it is not, so one slow evaluation (a quote asked of a supplier, a search) does not
//! hold up the participant's other dialogues: their awards, rejections, cancels and calls.
//! Such evaluations are bounded: in number ([`MAX_EVALUATING`], beyond which a call is
//! refused as busy) and in time (each ends at its call's deadline).

use super::participant::HeldProposal;
use super::*;

/// Calls a participant evaluates at once, at most. A call beyond them is refused at once
/// ([`Declined::Busy`]) rather than waited for in its handler, where it would hold up the
/// participant's other dialogues; and an evaluation still running at its call's deadline
/// is dropped (its proposal could only be late), so calls that never end cannot keep
/// these places for good.
pub const MAX_EVALUATING: usize = 256;

/// What an evaluation gave: a proposal and how long it is held, or why there is none.
type Evaluated<Proposal> = Result<(Proposal, Option<u64>), (Declined, Option<String>)>;

/// What a participant answers its calls with; cheap to clone, one per served agent.
pub(super) struct Answering<P> {
    pub(super) book: Book,
    pub(super) participant: Arc<P>,
    pub(super) holds: Holds,
    pub(super) work: crate::work::Work,
    pub(super) evaluating: Arc<tokio::sync::Semaphore>,
}

impl<P> Answering<P> {
    pub(super) fn new(book: Book, participant: Arc<P>, holds: Holds, work: crate::work::Work) -> Answering<P> {
        let evaluating = Arc::new(tokio::sync::Semaphore::new(MAX_EVALUATING));
        Answering { book, participant, holds, work, evaluating }
    }
}

impl<P> Clone for Answering<P> {
    fn clone(&self) -> Answering<P> {
        Answering {
            book: self.book.clone(),
            participant: Arc::clone(&self.participant),
            holds: self.holds.clone(),
            work: self.work.clone(),
            evaluating: Arc::clone(&self.evaluating),
        }
    }
}

impl<P: Participant> Answering<P> {
    /// Answers `cfp`, the call of dialogue `id` from `from` that `ctx` is handling and has
    /// recorded: at once if its evaluation is ready, else on a task of the agent's
    /// [`Work`](crate::work::Work) (a graceful stop lets a user's `evaluate` end; a crash
    /// ends it, and the dialogue stays called until it expires).
    pub(super) async fn answer(self, ctx: Context, from: Address, id: u128, cfp: Cfp) {
        let Ok(reply) = ctx.defer_reply() else { return };
        let Ok(permit) = Arc::clone(&self.evaluating).try_acquire_owned() else {
            let busy = Err((Declined::Busy, Some(format!("{MAX_EVALUATING} calls are being evaluated"))));
            return self.propose(ctx, from, id, 0, busy, reply).await;
        };
        let default_hold = cfp
            .deadline_ms
            .saturating_add(DEFAULT_HOLD_AFTER_DEADLINE.as_millis() as u64)
            .min(now_ms().saturating_add(MAX_DEFAULT_HOLD.as_millis() as u64));
        let mut evaluation = match serde_json::from_value::<P::Task>(cfp.task) {
            // Owns its participant, so that a pending evaluation can move to a task.
            Ok(task) => {
                let participant = Arc::clone(&self.participant);
                Box::pin(async move { participant.evaluate(from, task).await })
            }
            Err(e) => {
                let unreadable = Err((Declined::UnreadableTask, Some(e.to_string())));
                return self.propose(ctx, from, id, default_hold, unreadable, reply).await;
            }
        };
        // Most evaluations are ready at once: those are answered here, with no task of
        // their own. A pending one goes on beside the handlers, polled again there at
        // once, so the waker it registers is the task's.
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(std::future::Future::poll(evaluation.as_mut(), cx))).await;
        let evaluated = |proposed: Option<_>| proposed.ok_or((Declined::NoProposal, None));
        match polled {
            std::task::Poll::Ready(proposed) => {
                self.propose(ctx, from, id, default_hold, evaluated(proposed), reply).await;
                drop(permit);
            }
            std::task::Poll::Pending => {
                let work = self.work.clone();
                let task_ctx = ctx.clone();
                // Past the call's deadline a proposal is late: the evaluation is dropped
                // then, its place freed, and the caller told there is no answer.
                let deadline =
                    tokio::time::Instant::now() + Duration::from_millis(cfp.deadline_ms.saturating_sub(now_ms()));
                work.spawn(&task_ctx, async move {
                    if let Ok(proposed) = tokio::time::timeout_at(deadline, evaluation).await {
                        self.propose(ctx, from, id, default_hold, evaluated(proposed), reply).await;
                    }
                    drop(permit);
                });
            }
        }
    }

    /// Answers the call of dialogue `id` from `from` with what its evaluation gave: a
    /// proposal, held until its own time or `default_hold`, or why there is none.
    async fn propose(
        &self,
        ctx: Context,
        from: Address,
        id: u128,
        default_hold: u64,
        evaluated: Evaluated<P::Proposal>,
        reply: agent_core::DeferredReply,
    ) {
        let Answering { book, participant, holds, .. } = self;
        let Some(dialogues) = book.dialogues() else { return };
        let (answer, held) = match evaluated {
            Ok((proposal, hold_until_ms)) => {
                let hold_until_ms = hold_until_ms.unwrap_or(default_hold);
                let encoded = serde_json::to_value(&proposal).and_then(|value| {
                    let kept = Data::encode(&HeldProposal { proposal: &value, hold_until_ms })?;
                    Ok((value, kept))
                });
                match encoded {
                    Ok((value, kept)) => {
                        let pay_to = ctx.wallet().ok().map(|wallet| wallet.address());
                        let answer = Answer::Propose { proposal: value, hold_until_ms: Some(hold_until_ms), pay_to };
                        (answer, Some((kept, hold_until_ms, proposal)))
                    }
                    Err(e) => (Answer::Refuse { cause: Declined::Unencodable, detail: Some(e.to_string()) }, None),
                }
            }
            Err((cause, detail)) => (Answer::Refuse { cause, detail }, None),
        };
        let step = match &held {
            Some((kept, _, _)) => Step::default().keeping(kept.clone()),
            None => Step::default(),
        };
        match dialogues.outgoing_with(answer_step(&answer), id, now_ms(), step) {
            Ok(_) => {
                if let Some((kept, hold_until_ms, _)) = held {
                    holds.hold(&ctx, participant, book, id, hold_until_ms, Hold { initiator: from, kept });
                }
                // A proposal the initiator no longer waits for (it came after the call's
                // wait, by the initiator's clock) is sent in the dialogue instead, so
                // the initiator answers it (as late) rather than never hearing it.
                if let Err(e) = reply.send(answer.clone()).await {
                    if matches!(answer, Answer::Propose { .. }) {
                        tracing::debug!(error = %e, "a proposal not taken as the reply is sent in its dialogue");
                        // Boxed: rare, and inline it would enlarge every call's handler.
                        if let Err(e) = Box::pin(ctx.send_in(id, from, answer)).await {
                            // Its hold still ends when due: nothing stays held for good.
                            tracing::debug!(error = %e, "the initiator of a proposal is unreachable");
                        }
                    }
                }
            }
            // Too late to propose (the deadline passed while evaluating): what the
            // proposal would have held goes back at once.
            Err(_) => {
                if let Some((_, _, proposal)) = held {
                    participant.release(from, proposal).await;
                }
            }
        }
    }
}
