//! The initiator's side: calling for proposals, awarding them, and recalling calls after a
//! restart (withdrawing a call is `cancel.rs`).

use std::collections::HashSet;

use super::*;

/// A proposal received in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal<P> {
    /// Who proposed.
    pub from: Address,
    /// The dialogue with them.
    pub dialogue: u128,
    /// What they propose.
    pub proposal: P,
    /// Until when they hold it.
    pub hold_until_ms: Option<u64>,
    /// Their wallet, for [`award_and_pay`].
    pub pay_to: Option<Address>,
}

/// What a call for proposals gathered by its deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct Called<P> {
    /// The call's id, kept with each of its dialogues: what [`recall`] gathers them by.
    pub call: u128,
    /// Proposals in time, in the order they came.
    pub proposals: Vec<Proposal<P>>,
    /// Who gave no proposal to weigh, and why (a refusal, or an unreadable proposal).
    pub refused: Vec<(Address, NoProposal)>,
    /// Who did not answer in time (a later proposal is rejected as late).
    pub silent: Vec<Address>,
    /// Which round of the call this is: 0 for [`call`], one more for each [`call_again`].
    /// A `Called` whose proposers were called again is superseded: [`award`] and
    /// [`award_and_pay`] neither accept nor reject its proposals that were called again
    /// (their winners end with [`AwardFailure::NotAwardable`], state `superseded`).
    pub round: u32,
}

/// How a contract-net round ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<R> {
    /// Some proposals were accepted: each winner's report (a result, or why it failed or
    /// gave no report in time).
    Awarded(Vec<(Address, Result<R, AwardFailure>)>),
    /// Nobody proposed in time.
    NoProposals,
    /// Every winner failed.
    AllFailed(Vec<(Address, AwardFailure)>),
    /// The initiator chose no proposal: every proposer was rejected.
    NoneChosen,
    /// The initiator withdrew the call ([`cancel`]): the participants whose dialogues it
    /// closed (proposers and those not yet answered), each sent a [`Cancel`]. Never empty:
    /// a call with nothing left to cancel is [`ContractNetError::NothingToCancel`].
    Cancelled {
        /// Whose dialogues were cancelled.
        cancelled: Vec<Address>,
    },
}

/// Calls `participants` for proposals on `task`, each in a dialogue of its own, and
/// gathers the answers until all have answered or `deadline` has passed. A proposal that
/// arrives later, while the call still waits for late replies (as long again as the
/// deadline, at least a second), is rejected with [`RejectReason::Late`], and so is one
/// later still, by the handlers [`initiator`] gave the agent: `book` must be the one
/// [`initiator`] made for `ctx`'s agent, or this fails with
/// [`ContractNetError::NotAnInitiator`]. A participant listed more than once is called
/// once. Use [`award`] next.
pub async fn call<T: Serialize, P: DeserializeOwned + Send + 'static>(
    ctx: &Context,
    book: &Book,
    participants: &[Address],
    task: &T,
    deadline: Duration,
) -> Result<Called<P>, ContractNetError> {
    book.check_answered(ctx)?;
    let dialogues = book.get(ctx, INITIATOR)?;
    let (task, until, deadline_ms) = prepare(task, deadline)?;
    let call = rand_id();
    let kept = kept(call, 0, None);
    let mut targets = Vec::with_capacity(participants.len());
    let mut called = std::collections::HashSet::with_capacity(participants.len());
    for &participant in participants {
        // Two dialogues with one participant would give two proposals, both awardable.
        if !called.insert(participant) {
            continue;
        }
        let id: u128 = rand_id();
        let step = Step::default().until(deadline_ms).keeping(kept.clone());
        dialogues.open_with(Cfp::NAME, id, participant, PARTICIPANT, now_ms(), step)?;
        targets.push((participant, id));
    }
    Ok(gather(ctx, book, (call, 0), targets, task, deadline, until, deadline_ms).await)
}

/// The iterated variant: calls the proposers of `called` again, in the same dialogues, with
/// a revised `task` (a lower budget, a changed quantity), each answering with a new
/// proposal or a refusal by the new `deadline`. Their earlier proposals are void: each
/// participant releases what it held for them. Proposers that are not called again should
/// be rejected (a later [`award`] or [`cancel`] does it).
pub async fn call_again<T: Serialize, P: DeserializeOwned + Send + 'static, Q>(
    ctx: &Context,
    book: &Book,
    called: &Called<Q>,
    task: &T,
    deadline: Duration,
) -> Result<Called<P>, ContractNetError> {
    book.check_answered(ctx)?;
    let dialogues = book.get(ctx, INITIATOR)?;
    let (task, until, deadline_ms) = prepare(task, deadline)?;
    let round = called.round.saturating_add(1);
    let kept = kept(called.call, round, None);
    let mut targets = Vec::with_capacity(called.proposals.len());
    for proposal in &called.proposals {
        let step = Step::default().until(deadline_ms).keeping(kept.clone());
        dialogues.outgoing_with(Cfp::NAME, proposal.dialogue, now_ms(), step)?;
        targets.push((proposal.from, proposal.dialogue));
    }
    Ok(gather(ctx, book, (called.call, round), targets, task, deadline, until, deadline_ms).await)
}

/// The task as JSON, and the deadline on both clocks: the participants are told
/// `deadline_ms`, and answers are gathered until the same instant.
fn prepare<T: Serialize>(
    task: &T,
    deadline: Duration,
) -> Result<(serde_json::Value, tokio::time::Instant, u64), ContractNetError> {
    let task = serde_json::to_value(task).map_err(|e| ContractNetError::Encode(e.to_string()))?;
    Ok((task, tokio::time::Instant::now() + deadline, now_ms().saturating_add(deadline.as_millis() as u64)))
}

/// Sends the call to each (participant, dialogue) and gathers the answers until `until`.
///
/// Each answer is checked, recorded and decoded on its own task, as it arrives, so answers
/// are handled side by side; the caller is woken once, when the last is in (or at the
/// deadline), not once per answer.
#[allow(clippy::too_many_arguments)]
async fn gather<P: DeserializeOwned + Send + 'static>(
    ctx: &Context,
    book: &Book,
    (call, round): (u128, u32),
    targets: Vec<(Address, u128)>,
    task: serde_json::Value,
    deadline: Duration,
    until: tokio::time::Instant,
    deadline_ms: u64,
) -> Called<P> {
    let late_window = deadline.max(Duration::from_secs(1));
    let participants: Vec<Address> = targets.iter().map(|(p, _)| *p).collect();
    let gathering = Arc::new(Gathering::<P> {
        state: parking_lot::Mutex::new(Gathered {
            answers: Vec::new(),
            outstanding: targets.len(),
            busy: 0,
            closed: false,
        }),
        settled: tokio::sync::Notify::new(),
    });
    for (participant, id) in targets {
        let agents = ctx;
        let ctx = ctx.clone();
        let cfp = Cfp { task: task.clone(), deadline_ms };
        let book = book.clone();
        let mut asked = Asked { gathering: Arc::clone(&gathering), claimed: false, settled: false };
        // Each call waits past the deadline, so a late proposal is seen and answered. The
        // rare rejections below are boxed: inline, they would enlarge every call's task.
        // A task of the agent's: a crashed initiator records and rejects nothing after the
        // crash, and a stopped one's call has nobody to gather for.
        agents.spawn(async move {
            let answer = ctx.request_in::<Cfp, Answer>(id, participant, cfp, Some(deadline + late_window)).await;
            // No answer (the participant ended without one, or is unreachable) is silence:
            // `asked`, dropped unsettled, settles with nothing.
            let (Some(dialogues), Ok(answer)) = (book.dialogues(), answer) else { return };
            let step = Step::default().keeping(kept(call, round, Some(&answer)));
            let step = dialogues.incoming_with(answer_step(&answer), id, participant, now_ms(), step).map(drop);
            if !asked.claim() {
                // The call stopped waiting: a proposal is late (one that arrived just before
                // the deadline but was not gathered in time is late too), and told so.
                if matches!(answer, Answer::Propose { .. }) {
                    Box::pin(reject(&ctx, &book, dialogues, id, participant, RejectReason::Late)).await;
                }
                return;
            }
            let answered = match step {
                Ok(()) => Some(match answer {
                    Answer::Propose { proposal, hold_until_ms, pay_to } => match serde_json::from_value(proposal) {
                        Ok(proposal) => Answered::Proposed(Proposal {
                            from: participant,
                            dialogue: id,
                            proposal,
                            hold_until_ms,
                            pay_to,
                        }),
                        Err(e) => {
                            // Not a proposal this initiator can weigh: rejected, so its hold ends.
                            Box::pin(reject(&ctx, &book, dialogues, id, participant, RejectReason::NotChosen)).await;
                            Answered::Refused(participant, NoProposal::Unreadable(e.to_string()))
                        }
                    },
                    Answer::Refuse { cause, detail } => {
                        Answered::Refused(participant, NoProposal::Refused { cause, detail })
                    }
                }),
                // Past the deadline by the dialogue's clock: late, and told so.
                Err(DialogueError::Late { .. }) if matches!(answer, Answer::Propose { .. }) => {
                    Box::pin(reject(&ctx, &book, dialogues, id, participant, RejectReason::Late)).await;
                    None
                }
                Err(refused) => {
                    tell(&ctx, id, participant, refused).await;
                    None
                }
            };
            asked.settle(answered);
        });
    }
    // Until every answer is in or the deadline passes; then the answers being handled
    // now are waited for, and later ones are late.
    let all_in = async {
        while gathering.state.lock().outstanding > 0 {
            gathering.settled.notified().await;
        }
    };
    let _in_time = tokio::time::timeout_at(until, all_in).await;
    gathering.state.lock().closed = true;
    while gathering.state.lock().busy > 0 {
        gathering.settled.notified().await;
    }
    let answers = std::mem::take(&mut gathering.state.lock().answers);
    let mut called = Called { call, proposals: Vec::new(), refused: Vec::new(), silent: Vec::new(), round };
    let mut answered = HashSet::with_capacity(answers.len());
    for answer in answers {
        match answer {
            Answered::Proposed(proposal) => {
                answered.insert(proposal.from);
                called.proposals.push(proposal);
            }
            Answered::Refused(from, reason) => {
                answered.insert(from);
                called.refused.push((from, reason));
            }
        }
    }
    called.silent = participants.iter().filter(|p| !answered.contains(p)).copied().collect();
    called
}

/// The answers of a call being gathered, shared by the tasks that wait for them and the
/// call, which is woken ([`Gathering::settled`]) only when the last answer is in, or when
/// the last answer being handled at the deadline is.
struct Gathering<P> {
    state: parking_lot::Mutex<Gathered<P>>,
    settled: tokio::sync::Notify,
}

struct Gathered<P> {
    /// The answers in time, in the order they came.
    answers: Vec<Answered<P>>,
    /// Participants whose answer (or its absence) is not yet settled.
    outstanding: usize,
    /// Answers in time still being handled (a rejection or a refusal being sent).
    busy: usize,
    /// The call stopped waiting: answers settled from now on are late.
    closed: bool,
}

/// An answer in time that counts: a proposal, or a refusal (an unreadable proposal is one).
enum Answered<P> {
    Proposed(Proposal<P>),
    Refused(Address, NoProposal),
}

impl<P> Gathering<P> {
    /// Settles one participant's answer: gathered if it counts and came in time (`claimed`
    /// before the call stopped waiting, or settled while it still waits). Wakes the call
    /// once every answer is in, or once the last answer being handled at the deadline is.
    fn settle(&self, claimed: bool, answered: Option<Answered<P>>) {
        let mut state = self.state.lock();
        if claimed {
            state.busy -= 1;
        } else if state.closed {
            return;
        }
        state.answers.extend(answered);
        state.outstanding -= 1;
        let wake = state.outstanding == 0 || (state.closed && state.busy == 0);
        drop(state);
        if wake {
            // A permit is kept if the call is not waiting yet, so no wake is lost.
            self.settled.notify_one();
        }
    }
}

/// One participant's place in a [`Gathering`], settled once its answer (or its absence) is
/// known. Dropped unsettled (its task ended without an answer, or panicked), it settles
/// with nothing, so the call never waits for it past the deadline, nor for ever after it.
struct Asked<P> {
    gathering: Arc<Gathering<P>>,
    claimed: bool,
    settled: bool,
}

impl<P> Asked<P> {
    /// Whether the call still waits: if so, the answer counts (and the call waits for it
    /// to be handled) whenever it is [`settle`](Self::settle)d.
    fn claim(&mut self) -> bool {
        let mut state = self.gathering.state.lock();
        self.claimed = !state.closed;
        state.busy += usize::from(self.claimed);
        self.claimed
    }

    fn settle(mut self, answered: Option<Answered<P>>) {
        self.settled = true;
        self.gathering.settle(self.claimed, answered);
    }
}

impl<P> Drop for Asked<P> {
    fn drop(&mut self) {
        if !self.settled {
            self.gathering.settle(self.claimed, None);
        }
    }
}

/// What an initiator keeps with each dialogue of a call ([`Dialogue::data`]): the call, and
/// the participant's answer once it came. A restarted initiator finds its calls by it.
#[derive(Serialize, Deserialize)]
pub(super) struct Kept<A> {
    pub(super) call: String,
    /// The round of the call the dialogue's last call for proposals was ([`Called::round`]).
    #[serde(default, skip_serializing_if = "is_first")]
    pub(super) round: u32,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub(super) answer: Option<A>,
}

/// Why the proposal of dialogue `id` cannot be awarded now, as the state to report in
/// [`AwardFailure::NotAwardable`]: rejected (though storage may not have recorded it),
/// called again since round `round` ("superseded"), or past its proposal (awarded
/// already, cancelled, expired). `None` if it can.
pub(super) fn not_awardable(book: &Book, dialogues: &Dialogues, id: u128, round: u32) -> Option<String> {
    if book.rejected(id) {
        return Some("rejected".into());
    }
    if superseded(dialogues, id, round) {
        return Some("superseded".into());
    }
    match dialogues.get(id) {
        Some(dialogue) if dialogue.state == "proposed" => None,
        Some(dialogue) => Some(dialogue.state.to_string()),
        None => Some("unknown".into()),
    }
}

/// Whether dialogue `id` was called again after the round `round` of its call gathered its
/// proposal: that proposal is void, and a decision on it from that round would be taken on
/// a proposal the participant no longer makes.
pub(super) fn superseded(dialogues: &Dialogues, id: u128, round: u32) -> bool {
    let Some(data) = dialogues.data(id) else { return false };
    // A first round's record names no round (`Kept::round` is skipped at 0), and no round
    // is before it: most dialogues are told apart without reading their answer.
    if !data.as_json().contains("\"round\"") {
        return false;
    }
    data.decode::<Kept<serde::de::IgnoredAny>>().is_ok_and(|kept| kept.round > round)
}

fn is_first(round: &u32) -> bool {
    *round == 0
}

fn kept(call: u128, round: u32, answer: Option<&Answer>) -> Data {
    let kept = Kept { call: format!("{call:032x}"), round, answer };
    // Nothing in a call id or an answer (JSON already) can fail to encode.
    Data::encode(&kept).unwrap_or_else(|_| Data::from(serde_json::Value::Null))
}

/// The calls this initiator made that still wait for a decision, read from its storage:
/// after a restart (the same storage, a new process), each can be awarded, paid, called
/// again or cancelled as if [`call`] had just returned it. A call waits while a proposal in
/// it is neither accepted, rejected nor cancelled, or a participant has not answered; its
/// proposals are those received before the restart, in the order they came, and its
/// silent participants those that had not answered. Calls come in the order they were made.
pub fn recall<P: DeserializeOwned>(ctx: &Context, book: &Book) -> Result<Vec<Called<P>>, ContractNetError> {
    let dialogues = book.get(ctx, INITIATOR)?;
    let mut calls: BTreeMap<u128, Recalled<P>> = BTreeMap::new();
    for dialogue in dialogues.all() {
        let Some(kept) = dialogue.data.and_then(|data| data.decode::<Kept<Answer>>().ok()) else {
            continue;
        };
        let Ok(call) = u128::from_str_radix(&kept.call, 16) else { continue };
        let Recalled { opened_ms, proposals, called } = calls.entry(call).or_insert_with(|| Recalled {
            opened_ms: dialogue.opened_ms,
            proposals: Vec::new(),
            called: Called { call, proposals: Vec::new(), refused: Vec::new(), silent: Vec::new(), round: 0 },
        });
        *opened_ms = (*opened_ms).min(dialogue.opened_ms);
        called.round = called.round.max(kept.round);
        let from = dialogue.peer;
        match (dialogue.state.as_str(), kept.answer) {
            ("proposed", Some(Answer::Propose { proposal, hold_until_ms, pay_to })) => {
                match serde_json::from_value(proposal) {
                    Ok(proposal) => {
                        let came = dialogue.said.last().map_or(0, |said| said.at_ms);
                        proposals
                            .push((came, Proposal { from, dialogue: dialogue.id, proposal, hold_until_ms, pay_to }));
                    }
                    Err(e) => called.refused.push((from, NoProposal::Unreadable(e.to_string()))),
                }
            }
            ("refused", Some(Answer::Refuse { cause, detail })) => {
                called.refused.push((from, NoProposal::Refused { cause, detail }))
            }
            ("called", _) => called.silent.push(from),
            _ => {}
        }
    }
    let mut waiting: Vec<(u64, Called<P>)> = calls
        .into_values()
        .map(|Recalled { opened_ms, mut proposals, mut called }| {
            proposals.sort_by_key(|(came, _)| *came);
            called.proposals = proposals.into_iter().map(|(_, proposal)| proposal).collect();
            (opened_ms, called)
        })
        .filter(|(_, called)| !called.proposals.is_empty() || !called.silent.is_empty())
        .collect();
    waiting.sort_by_key(|(opened, _)| *opened);
    Ok(waiting.into_iter().map(|(_, called)| called).collect())
}

/// A call being read back by [`recall`]: when its first dialogue opened, and its proposals
/// with when each came.
struct Recalled<P> {
    opened_ms: u64,
    proposals: Vec<(u64, Proposal<P>)>,
    called: Called<P>,
}

/// What a winner's report (or its absence) means: its result, or why there is none. With
/// no report in time the award is withdrawn, so the winner stops too.
pub(super) async fn outcome_of<R: DeserializeOwned>(
    ctx: &Context,
    dialogues: &Dialogues,
    id: u128,
    winner: Address,
    report: Result<Report, agent_core::RequestError>,
) -> Result<R, AwardFailure> {
    match report {
        Ok(report) => match allowed(dialogues.incoming_named(report_step(&report), id, winner, now_ms()), "report")
            // A report that crossed this initiator's cancel on the way: the winner acted
            // before it heard of the cancel (and was paid, if it reports done), so what it
            // reports holds.
            .or_else(|refused| if cancelled_here(dialogues, id) { Ok(None) } else { Err(refused) })
        {
            Ok(_) => match report {
                Report::Done { result } => {
                    serde_json::from_value(result).map_err(|e| AwardFailure::UnreadableResult(e.to_string()))
                }
                Report::Failure { cause } => Err(cause.into()),
                Report::Cancelled { cause, detail } => Err(AwardFailure::Withdrawn { cause, detail }),
            },
            Err(refused) => {
                tell(ctx, id, winner, refused.clone()).await;
                Err(AwardFailure::ReportRefused(refused))
            }
        },
        Err(e) => {
            if allowed(dialogues.outgoing_named("Cancel", id, now_ms()), "Cancel").is_ok() {
                // The winner may be gone; the award is withdrawn either way.
                let cancel = Cancel { cause: CancelCause::NoReport, detail: Some(e.to_string()) };
                let _ = ctx.send_in(id, winner, cancel).await;
            } else if cancelled_here(dialogues, id) {
                // The winner stopped on this initiator's cancel, with no report.
                return Err(AwardFailure::Cancelled);
            }
            Err(AwardFailure::NoReport(e.to_string()))
        }
    }
}

/// Whether dialogue `id` ended with this initiator's cancel ([`cancel`] of an award in
/// progress).
fn cancelled_here(dialogues: &Dialogues, id: u128) -> bool {
    dialogues.get(id).is_some_and(|d| {
        d.state == "cancelled" && d.said.last().is_some_and(|said| said.message == "Cancel" && said.sender == INITIATOR)
    })
}

/// Rejects the proposal of dialogue `id`, if the dialogue allows it now. A rejection storage
/// cannot record is sent all the same ([`allowed`]), and noted in `book`, so this initiator
/// never awards the proposal after it ([`Book::rejected`]); one noted so is not sent again,
/// only recorded if storage takes it now.
pub(super) async fn reject(
    ctx: &Context,
    book: &Book,
    dialogues: &Dialogues,
    id: u128,
    to: Address,
    reason: RejectReason,
) {
    if book.rejected(id) {
        return book.record_rejections(dialogues);
    }
    match dialogues.outgoing_named("Reject", id, now_ms()) {
        Ok(_) => {}
        Err(DialogueError::Storage { reason: error, .. }) => {
            tracing::warn!(dialogue = %format!("{id:032x}"), %error, "a rejection goes ahead unrecorded: storage failed; it is never awarded");
            book.rejected_unrecorded(id);
        }
        Err(_) => return,
    }
    // The participant may be gone; a rejected proposal has no claim either way.
    let _ = ctx.send_in(id, to, Reject { reason }).await;
}

/// Accepts the proposals of `winners` (the rest of `called` are rejected as not chosen),
/// waits up to `perform_timeout` for each winner's report, and says how the round ended.
pub async fn award<P, R: DeserializeOwned>(
    ctx: &Context,
    book: &Book,
    called: &Called<P>,
    winners: &[Address],
    perform_timeout: Duration,
) -> Result<Outcome<R>, ContractNetError> {
    let dialogues = book.get(ctx, INITIATOR)?;
    if called.proposals.is_empty() {
        return Ok(Outcome::NoProposals);
    }
    let mut reports = tokio::task::JoinSet::new();
    let mut losers = Vec::with_capacity(called.proposals.len());
    let mut results = Vec::new();
    // Winners first: they perform while the others are told.
    for proposal in &called.proposals {
        let (id, to, chosen) = (proposal.dialogue, proposal.from, winners.contains(&proposal.from));
        if superseded(dialogues, id, called.round) {
            // Called again since: the newer round decides it, not this one.
            if chosen {
                results.push((to, Err(AwardFailure::NotAwardable { state: "superseded".into() })));
            }
            continue;
        }
        // A winner that cannot be awarded is told no more than a loser (a rejection this
        // initiator sent unrecorded is recorded now), and the caller is told why: a
        // proposal this initiator rejected is never awarded, though its dialogue may still
        // show it open.
        if let Some(state) = chosen.then(|| not_awardable(book, dialogues, id, called.round)).flatten() {
            results.push((to, Err(AwardFailure::NotAwardable { state })));
            losers.push((id, to));
            continue;
        }
        let accepted = chosen.then(|| dialogues.outgoing_named("Accept", id, now_ms()));
        match accepted {
            Some(Ok(_)) => {
                // Its commit asked for at once, not waited for: no money moves on an unpaid
                // award (a paid one waits). A crash before the commit lands loses it, and a
                // restarted initiator could award the task again.
                commit_soon(ctx, "an award");
                let ctx = ctx.clone();
                reports.spawn(async move {
                    (to, id, ctx.request_in::<Accept, Report>(id, to, Accept::default(), Some(perform_timeout)).await)
                });
            }
            // An award the initiator cannot record is not made (a restarted initiator
            // would not know of it): the winner is told no, and the caller why.
            Some(Err(DialogueError::Storage { reason, .. })) => {
                results.push((to, Err(AwardFailure::NotRecorded(reason))));
                losers.push((id, to));
            }
            _ => losers.push((id, to)),
        }
    }
    for (id, to) in losers {
        reject(ctx, book, dialogues, id, to, RejectReason::NotChosen).await;
    }
    if reports.is_empty() && results.is_empty() {
        return Ok(Outcome::NoneChosen);
    }
    while let Some(joined) = reports.join_next().await {
        let Ok((from, id, report)) = joined else { continue };
        results.push((from, outcome_of(ctx, dialogues, id, from, report).await));
    }
    if results.iter().all(|(_, r)| r.is_err()) {
        return Ok(Outcome::AllFailed(results.into_iter().filter_map(|(a, r)| Some((a, r.err()?))).collect()));
    }
    Ok(Outcome::Awarded(results))
}

/// Refuses `step`, which came outside the request it answers, naming what its dialogue
/// expects instead.
pub(super) async fn refuse_stray(ctx: &Context, book: &Book, from: Address, step: &str) {
    let (Ok(dialogues), Some(id)) = (book.get(ctx, INITIATOR), ctx.session()) else { return };
    let refused = match dialogues.get(id) {
        None => DialogueError::Unknown { dialogue: id, message: step.into() },
        Some(d) if d.peer != from => DialogueError::NotAParty {
            dialogue: id,
            standing: Box::new(d.standing(dialogues.rules())),
            from,
            message: step.into(),
        },
        // A proposal after the call's deadline, later than the call waited for its reply
        // (or after its dialogue expired): FIPA wants it answered, as late.
        Some(d) if step == "Propose" && is_past_its_call(&d, now_ms()) => {
            if d.state == EXPIRED {
                tracing::debug!(%from, "a proposal after its dialogue expired is rejected as late");
                // The peer may be gone; a rejected proposal has no claim either way.
                let _ = ctx.send_in(id, from, Reject { reason: RejectReason::Late }).await;
            } else {
                reject(ctx, book, dialogues, id, from, RejectReason::Late).await;
            }
            return;
        }
        Some(d) if d.is_closed(dialogues.rules()) => {
            DialogueError::Closed { dialogue: id, state: d.state.to_string(), message: step.into() }
        }
        Some(d) => DialogueError::OutOfOrder {
            dialogue: id,
            message: step.into(),
            sender: PARTICIPANT.into(),
            // What this peer may send: a participant's steps, each only as a reply.
            expected: dialogues
                .rules()
                .steps_from(&d.state)
                .filter(|t| t.sender == PARTICIPANT)
                .map(|t| format!("{} from {}, as the reply to its request", t.message, t.sender))
                .collect(),
            state: d.state.to_string(),
        },
    };
    tell(ctx, id, from, refused).await
}

/// Whether `dialogue` is a call whose deadline has passed with no answer from its
/// participant: still `called` after the deadline, or expired since.
fn is_past_its_call(dialogue: &Dialogue, now_ms: u64) -> bool {
    dialogue.state == EXPIRED || (dialogue.state == "called" && dialogue.deadline_ms.is_some_and(|d| now_ms > d))
}

/// Makes `agent` a contract-net initiator and returns the book its calls are made with:
/// the agent answers every late proposal with a rejection as [`RejectReason::Late`] (FIPA
/// requires it), and every stray message with a [`Refused`] ([`refuse_strays`]). Call it
/// before the agent is added to its bureau; [`call`] with any other book fails. An agent
/// that is also a participant uses [`refuse_strays_serving`] after [`serve`] instead.
pub fn initiator(agent: &mut Agent) -> Book {
    let book = Book::default();
    refuse_strays(agent, &book);
    book
}

/// [`refuse_strays`] for an agent that both calls for proposals (with `initiator`) and is a
/// participant ([`serve`] gave it `participant`; call this after it). Answers and reports
/// then go to the participant side's handlers, which refuse a participant's messages sent
/// to it as from the wrong role, and pass those of the initiator's dialogues, and of no
/// dialogue, on to this side: a late proposal is still rejected as late.
pub fn refuse_strays_serving(agent: &mut Agent, initiator: &Book, participant: &Book) {
    match participant.initiator.set(initiator.clone()) {
        // The participant side's handlers pass this book's strays on to it.
        Ok(()) if agent.handles::<Answer>() => answered_by(agent, initiator),
        Ok(()) => tracing::warn!(agent = %agent.address(), "refuse_strays_serving before serve: call serve first"),
        Err(_) => {
            tracing::warn!(agent = %agent.address(), "this participant's book is joined to an initiator's already; the first stays")
        }
    }
    refuse_strays(agent, initiator);
}

/// Notes that `agent`'s handlers answer `book`'s late proposals: it may call with the book.
fn answered_by(agent: &Agent, book: &Book) {
    if let Err(first) = book.answered_by.set(agent.address()) {
        if first != agent.address() {
            tracing::warn!(agent = %agent.address(), %first, "this initiator's book is answered by another agent already; the first stays");
        }
    }
}

/// Makes `agent` answer stray contract-net messages (answers and reports outside a
/// request, and the initiator's own messages, [`Cfp`], [`Accept`] and [`Reject`], sent by a
/// participant) with a [`Refused`] naming the dialogue, its state and what the peer may
/// send; they never change an outcome. On an agent that is also a participant, call
/// [`refuse_strays_serving`] instead, after [`serve`]. A proposal that comes after its call stopped
/// waiting (past the deadline and the wait for late replies, or once its dialogue expired)
/// is rejected as [`RejectReason::Late`] instead, as FIPA requires. It also sweeps the initiator's dialogues (as
/// [`serve`] does the participant's): open ones a minute past their deadline expire, and
/// old ones are forgotten.
pub fn refuse_strays(agent: &mut Agent, book: &Book) {
    sweep(agent, book, INITIATOR);
    // An agent that is also a participant refuses answers and reports there already
    // ([`serve`]); joined ([`refuse_strays_serving`]), it passes this side's on. Only
    // then, or with the handlers added here, are this book's late proposals answered.
    if agent.handles::<Answer>() || agent.handles::<Report>() {
        tracing::debug!(agent = %agent.address(), "answers and reports are handled already; the initiator side adds no handlers for them");
    } else {
        answered_by(agent, book);
        let strays = book.clone();
        agent.on_message(move |ctx: Context, from: Address, answer: Answer| {
            let book = strays.clone();
            async move { refuse_stray(&ctx, &book, from, answer_step(&answer)).await }
        });
        let strays = book.clone();
        agent.on_message(move |ctx: Context, from: Address, report: Report| {
            let book = strays.clone();
            async move { refuse_stray(&ctx, &book, from, report_step(&report)).await }
        });
    }
    // Messages only an initiator sends, sent to this one: refused as from the wrong role.
    // An agent that is also a participant ([`serve`], called first) handles them there.
    if !agent.handles::<Cfp>() {
        let strays = book.clone();
        agent.on_message(move |ctx: Context, from: Address, _: Cfp| {
            let book = strays.clone();
            async move { refuse_stray(&ctx, &book, from, Cfp::NAME).await }
        });
    }
    if !agent.handles::<Accept>() {
        let strays = book.clone();
        agent.on_message(move |ctx: Context, from: Address, _: Accept| {
            let book = strays.clone();
            async move { refuse_stray(&ctx, &book, from, "Accept").await }
        });
    }
    if !agent.handles::<Reject>() {
        let strays = book.clone();
        agent.on_message(move |ctx: Context, from: Address, _: Reject| {
            let book = strays.clone();
            async move { refuse_stray(&ctx, &book, from, "Reject").await }
        });
    }
    agent.on_message(|_ctx: Context, from: Address, refused: Refused| async move {
        tracing::info!(%from, cause = ?refused.cause, detail = %refused.detail, "a contract-net message of ours was refused");
    });
}
